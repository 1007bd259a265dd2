"""The Enhanced Late Fusion search: Ray Tune trials, proposed by Optuna, on cached logits.

Each trial fits one ``EnhancedLateFusion`` (``fit_fusion``) with the hyperparameters
Optuna proposes from Table 3's ranges and reports every epoch; its last report carries
the trial's best epoch as a checkpoint. Results (CSV, JSON, TensorBoard events) land in
``<search.storage_path>/<search.name>``; the Optuna study is also kept there
(``optuna.journal``) for ``optuna-dashboard``.

Speed: the logits go to the object store once (``tune.with_parameters``) and trial
actors are reused (``reuse_actors``), so a trial costs its fit, not a process start and
a torch import. Resume: starting the same search again restores it (``Tuner.restore``);
finished trials are kept, unfinished ones start over. The Optuna study is kept in a
journal file (``fusion.study``), which optuna-dashboard follows live.

``search.storage_path`` may be a storage URI: Tune keeps the experiment and the trials'
checkpoints there, and the journal, an append-only local file, is kept in this node's
mirror of the experiment folder and sent to the store after every finished trial (and
fetched from it when a search resumes, on this node or another).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from deepfusion import storage
from deepfusion.config.fusion import FusionConfig, FusionTraining
from deepfusion.config.tracking import TrackingConfig
from deepfusion.fusion.fit_data import FitSplits
from deepfusion.fusion.logit_cache import LogitCache, SplitLogits
from deepfusion.fusion.study import OPTUNA_JOURNAL, load_study, open_storage, study_location

log = logging.getLogger(__name__)

SEARCHED = ("lr", "batch_size", "video_weight", "focal_alpha", "focal_gamma")
# Tune's objective: the trial's best validation score so far (its early-stopping epoch).
OBJECTIVE = {"val_weighted_f1": "best_val_weighted_f1", "val_accuracy": "best_val_accuracy"}


def param_space(cfg: FusionConfig) -> dict:
    from ray import tune

    space = cfg.search.space
    return {
        "lr": tune.loguniform(*space.lr),
        "batch_size": tune.choice(list(space.batch_size)),
        "video_weight": tune.uniform(*space.video_weight),
        "focal_alpha": tune.uniform(*space.focal_alpha),
        "focal_gamma": tune.uniform(*space.focal_gamma),
    }


def trial_hyperparameters(base: FusionTraining, config: dict) -> FusionTraining:
    return base.model_copy(update={name: config[name] for name in SEARCHED})


def fusion_trial(config: dict, *, logits: dict[str, SplitLogits], label_names: list[str], base: dict,
                 backbones: dict, seed: int) -> None:
    """One Tune trial (runs in a Tune actor)."""
    import torch
    from ray import tune

    from deepfusion.artifacts.checkpoint import CheckpointCard, read_card, save_fusion
    from deepfusion.ray_runtime import quiet_ray_train_reports

    quiet_ray_train_reports()
    from deepfusion.fusion.fit import fit_fusion

    restored = tune.get_checkpoint()
    if restored is not None:
        # The only checkpoint a trial writes comes with its final report: the fit is done.
        # A driver killed right after it saved this trial re-reports instead of refitting.
        with restored.as_directory() as folder:
            card = read_card(Path(folder))
        tune.report(card.metrics["final_report"], checkpoint=restored)
        return
    # Tensors of a few hundred rows: more threads only add synchronisation.
    torch.set_num_threads(1)
    hp = trial_hyperparameters(FusionTraining(**base), config)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # visible only to trials given a GPU
    fit = fit_fusion("enhanced_late_fusion", logits["fit"], logits["select"], hp, label_names,
                     seed=seed, device=device)
    best = {"best_epoch": fit.best_epoch, "best_val_weighted_f1": fit.best["val_weighted_f1"],
            "best_val_accuracy": fit.best["val_accuracy"], "w1_video": fit.fusion_weights[0],
            "w2_audio_text": fit.fusion_weights[1]}
    running = {"best_val_weighted_f1": -1.0, "best_val_accuracy": -1.0}
    for row in fit.history[:-1]:
        running = {"best_val_weighted_f1": max(running["best_val_weighted_f1"], row["val_weighted_f1"]),
                   "best_val_accuracy": max(running["best_val_accuracy"], row["val_accuracy"])}
        tune.report({**row, **running})
    final_report = {**fit.history[-1], **best}
    with tempfile.TemporaryDirectory() as folder:
        save_fusion(Path(folder), fit.model, CheckpointCard(
            kind="enhanced_late_fusion", label_names=label_names, hyperparameters=hp.model_dump(),
            backbones=backbones, metrics={"val": fit.best, "final_report": final_report},
            fusion_weights=fit.fusion_weights))
        tune.report(final_report, checkpoint=tune.Checkpoint.from_directory(folder))


def search_key(cfg: FusionConfig, cache: LogitCache) -> dict:
    """What a resumed search must share with the original."""
    return {"logit_cache": cache.key, "training": cfg.training.model_dump(mode="json"),
            "fit_data": cfg.fit_data.model_dump(mode="json"),
            **cfg.search.model_dump(mode="json", include={"metric", "space", "seed", "num_samples"})}


@dataclass(frozen=True)
class SearchOutcome:
    experiment_dir: storage.Location  # a folder or a storage URI
    optuna_storage: str  # the study's journal file on this node (``fusion.study.study_location``)
    num_trials: int
    num_errored: int
    best_config: dict
    best_metrics: dict
    best_checkpoint: storage.Location  # the best trial's checkpoint folder in Tune's storage


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch for a study that may be ahead of Tune after a killed driver.

    Tune snapshots its state after a trial's checkpoint; the trial can then finish in
    the (SQLite) study before the next snapshot. On resume Tune re-runs that trial
    (it re-reports from its checkpoint), and plain OptunaSearch would fail telling a
    finished Optuna trial again. After a restore, results for trials the study has
    already finished are recognised and skipped.
    """

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self._restored = True

    def _finished_in_study(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials.get(trial_id)
        if not getattr(self, "_restored", False) or ot_trial is None:
            return False
        state = self._ot_study._storage.get_trial(ot_trial._trial_id).state
        if state.is_finished():
            self._completed_trials.add(trial_id)
            return True
        return False

    def on_trial_result(self, trial_id: str, result: dict):
        if not self._finished_in_study(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not self._finished_in_study(trial_id):
            super().on_trial_complete(trial_id, result, error)


def search_dir(cfg: FusionConfig) -> storage.Location:
    """Where Tune keeps the search's results (and the Optuna study, and the report)."""
    where = storage.join(cfg.search.storage_path, cfg.search.name)
    return where if storage.is_uri(where) else Path(where).resolve()


def optuna_storage_url(cfg: FusionConfig) -> str:
    """The search's Optuna study, as optuna-dashboard takes it (an absolute path; for a
    search on a storage URI, the journal's copy on this node)."""
    where = search_dir(cfg)
    return study_location(storage.mirror_path(where) if storage.is_uri(where) else where)


class JournalSync(Callback):
    """Sends the local Optuna journal to the search's storage URI after every finished
    trial and at the end: a driver lost mid-search loses no finished trial's record."""

    def __init__(self, journal: str, uri: str):
        self.journal, self.uri = journal, uri

    def push(self) -> None:
        if Path(self.journal).is_file():
            storage.write_bytes(self.uri, Path(self.journal).read_bytes())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.push()

    def on_experiment_end(self, trials, **info):
        self.push()


def run_search(cfg: FusionConfig, cache: LogitCache, splits: FitSplits, *, fresh: bool = False,
               tracking: TrackingConfig | None = None, tags: dict | None = None,
               callbacks: list | None = None) -> SearchOutcome:
    """Run (or resume) the sweep on ``splits`` (each trial fits on ``splits.fit`` and is scored
    on ``splits.select``); Ray must be up. With MLflow on (``tracking``), every trial is an
    MLflow run (Ray's ``MLflowLoggerCallback``) tagged with ``tags``. ``callbacks``: more
    ``ray.tune.Callback``s for the driver's loop (a user's own logger or monitor) of a new
    search; a resumed search runs with those it was started with (Tune restores its RunConfig)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from deepfusion.artifacts.freshness import claim_run_dir

    search = cfg.search
    experiment_dir = search_dir(cfg)
    resuming = claim_run_dir(experiment_dir, search_key(cfg, cache), what="search", fresh=fresh)
    storage_url = optuna_storage_url(cfg)
    metric = OBJECTIVE[search.metric]
    journal_uri = storage.join(experiment_dir, OPTUNA_JOURNAL) if storage.is_uri(experiment_dir) else None
    if journal_uri is not None:  # the store's journal is the study; this node's copy follows it
        Path(storage_url).unlink(missing_ok=True)
        if resuming and storage.exists(journal_uri):
            storage.materialize(journal_uri)

    trainable = tune.with_resources(
        tune.with_parameters(fusion_trial, logits={"fit": splits.fit, "select": splits.select},
                             label_names=cache.label_names, base=cfg.training.model_dump(),
                             backbones=_backbones(cache), seed=search.seed),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    # Each trial checkpoints once, at its end, and keeps one checkpoint: Tune then snapshots
    # the experiment state after every finished trial, so a killed driver loses none. That
    # is intended here; Tune would warn about it on every trial.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    callbacks = list(callbacks or []) + ([JournalSync(storage_url, journal_uri)] if journal_uri else [])
    if tracking is not None and tracking.tracking_uri is not None:
        from deepfusion.tracking.mlflow_runs import tune_callback

        callbacks += [tune_callback(tracking, {"deepfusion.stage": "fusion", "deepfusion.search": str(experiment_dir),
                                              **(tags or {})})]
    if resuming and tune.Tuner.can_restore(str(experiment_dir)):
        log.info("resuming the search in %s", experiment_dir)
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable,
                                   resume_unfinished=True, resume_errored=True)
    else:
        searcher = ResumableOptunaSearch(
            metric=metric, mode="max", seed=search.seed, study_name=search.name,
            storage=open_storage(storage_url),
            points_to_evaluate=_paper_point(cfg),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent_trials),
                num_samples=search.num_samples, metric=metric, mode="max", reuse_actors=search.reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=search.name, storage_path=str(storage.parent(experiment_dir)),
                verbose=search.verbose,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks or None,
                failure_config=tune.FailureConfig(max_failures=search.max_failures),
            ),
        )
    grid = tuner.fit()
    _fail_orphaned_optuna_trials(storage_url, search.name)
    if journal_uri is not None:
        JournalSync(storage_url, journal_uri).push()
    best = grid.get_best_result(metric=metric, mode="max", scope="last")
    return SearchOutcome(
        experiment_dir=experiment_dir, optuna_storage=storage_url, num_trials=len(grid),
        num_errored=grid.num_errors, best_config={k: best.config[k] for k in SEARCHED},
        best_metrics={k: v for k, v in best.metrics.items() if isinstance(v, (int, float))},
        best_checkpoint=storage.location_in(best.checkpoint.filesystem, best.checkpoint.path),
    )


def _fail_orphaned_optuna_trials(storage_url: str, study_name: str) -> None:
    """Optuna trials still RUNNING once Tune is done were proposed to a driver that was
    killed before it saved them; Tune ran their replacements. Mark them failed so the
    study holds one finished trial per Tune trial."""
    import optuna

    study = load_study(study_name, storage_url)
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in orphans:
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    if orphans:
        log.info("marked %d Optuna trials of an interrupted driver as failed", len(orphans))


def _paper_point(cfg: FusionConfig) -> list[dict] | None:
    """Table 3's reported values (the ``training`` defaults) as the first trial, when they
    lie inside the space: the sweep then never does worse than the paper's configuration."""
    space, point = cfg.search.space, {name: getattr(cfg.training, name) for name in SEARCHED}
    inside = (point["batch_size"] in space.batch_size
              and all(getattr(space, n)[0] <= point[n] <= getattr(space, n)[1]
                      for n in ("lr", "video_weight", "focal_alpha", "focal_gamma")))
    return [point] if inside else None


def _backbones(cache: LogitCache) -> dict:
    return {name: cache.inputs[name] for name in ("video_checkpoint", "audio_text_checkpoint")}

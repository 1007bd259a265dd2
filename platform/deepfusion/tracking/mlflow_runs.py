"""MLflow records of backbone runs and fusion trials (opt-in: ``tracking.mlflow``).

A backbone run is one MLflow run for the life of its run folder: the driver creates it
(or, when the run resumes, reopens the one named in ``<run_dir>/mlflow_run.json``), the
rank-0 worker logs each epoch's metrics to it, and the driver closes it with the best
checkpoint's path, the test metrics and the plots. A local store (SQLite, a folder) is
only on the driver's node: a rank-0 worker on another node leaves the epochs to the
driver, which logs every epoch missing from the run when it closes it. Ray's
``setup_mlflow`` starts a new MLflow run each time a worker starts, which would split a
resumed or restarted run over several records; here the run id travels with the run
folder instead.

Fusion trials use Ray's own ``MLflowLoggerCallback`` (one MLflow run per Tune trial:
its hyperparameters, every reported epoch, its checkpoint path).

Every run carries the tags ``deepfusion.stage`` (``train`` or ``fusion``) and, under a
pipeline, ``deepfusion.pipeline`` (the pipeline file); all go to ``tracking.experiment``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deepfusion import storage
from deepfusion.config.tracking import TrackingConfig

log = logging.getLogger(__name__)
RUN_RECORD = "mlflow_run.json"


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def experiment_id(cfg: TrackingConfig) -> str:
    """The configured experiment, created on first use."""
    mlflow = client(cfg.tracking_uri)
    found = mlflow.get_experiment_by_name(cfg.experiment)
    if found is not None:
        return found.experiment_id
    if cfg.mlflow_uri is None:
        Path(cfg.local_store).mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(cfg.experiment, artifact_location=cfg.artifact_location)


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, values as text (MLflow caps a value at 6000)."""
    params = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params |= flat_params(value, f"{name}.")
        else:
            params[name] = str(value)[:6000]
    return params


def open_backbone_run(cfg: TrackingConfig, run_dir: Path, *, run_name: str, params: dict,
                      tags: dict) -> str | None:
    """The MLflow run id of this run folder (created, or reopened on resume); None when off."""
    if cfg.tracking_uri is None:
        return None
    from mlflow.entities import Param, RunTag

    mlflow = client(cfg.tracking_uri)
    record = Path(run_dir) / RUN_RECORD
    run_id = None
    try:
        saved = json.loads(record.read_text())
        if saved.get("tracking_uri") == cfg.tracking_uri and saved.get("experiment") == cfg.experiment:
            run_id = saved["run_id"]
            mlflow.update_run(run_id, status="RUNNING")
    except (OSError, ValueError, KeyError):
        run_id = None
    except Exception as err:  # noqa: BLE001 - a deleted MLflow run: start a new record
        log.warning("MLflow run %s of %s cannot be reopened (%s): starting a new one", run_id, run_dir, err)
        run_id = None
    if run_id is None:
        run_id = mlflow.create_run(experiment_id(cfg), run_name=run_name, tags=tags).info.run_id
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"tracking_uri": cfg.tracking_uri, "experiment": cfg.experiment,
                                      "run_id": run_id}, indent=2) + "\n")
        items = sorted(flat_params(params).items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            mlflow.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + 100]])
    else:
        mlflow.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    log.info("MLflow: run %s in experiment %r at %s", run_id, cfg.experiment, cfg.tracking_uri)
    return run_id


def store_on_this_node(tracking_uri: str) -> bool:
    """Whether this process reaches the store: a server always; a local store (``sqlite:///``,
    ``file:``, a folder) only where its file is, which the driver created before training."""
    scheme, _, rest = tracking_uri.partition(":")
    if scheme == "sqlite":  # sqlite:///relative/path, sqlite:////absolute/path
        return Path(rest.removeprefix("///")).is_file()
    if scheme == "file":
        return Path(rest.removeprefix("//")).is_dir()
    if tracking_uri.startswith(("/", ".")):  # a folder
        return Path(tracking_uri).is_dir()
    return True


def log_epoch(tracking_uri: str, run_id: str, metrics: dict) -> None:
    """One epoch's numeric metrics, stepped by epoch (called by the rank-0 worker)."""
    import time

    from mlflow.entities import Metric

    now, step = int(time.time() * 1000), int(metrics["epoch"])
    client(tracking_uri).log_batch(run_id, metrics=[
        Metric(key, float(value), now, step) for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"])


def close_backbone_run(tracking_uri: str, run_id: str, *, best_checkpoint: Path, best_metrics: dict,
                       test_metrics: dict | None, artifacts: list[Path | None], history: list[dict]) -> None:
    """A finished run: every epoch of ``history`` the workers did not log (their node had no
    way to the store), its best and test metrics, the best checkpoint's path, the plots."""
    from mlflow.entities import Metric, RunTag

    mlflow = client(tracking_uri)
    logged = {m.step for m in mlflow.get_metric_history(run_id, "train_loss")}
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch(tracking_uri, run_id, metrics)
    summary = {f"best_{k}": v for k, v in best_metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if test_metrics is not None:
        summary |= {f"test_{k}": test_metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")}
    mlflow.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in summary.items()],
                     tags=[RunTag("checkpoint_path", str(best_checkpoint))])
    for path in artifacts:
        if path is not None and Path(path).is_file():
            mlflow.log_artifact(run_id, str(path))
    mlflow.set_terminated(run_id, status="FINISHED")


def fail_run(tracking_uri: str, run_id: str) -> None:
    """A run that raised: FAILED in MLflow (a resume reopens it). Never masks the error."""
    try:
        client(tracking_uri).set_terminated(run_id, status="FAILED")
    except Exception as err:  # noqa: BLE001 - the training error is the one to report
        log.warning("MLflow: run %s not marked failed: %s", run_id, err)


def tune_callback(cfg: TrackingConfig, tags: dict):
    """Ray's MLflow logger for the fusion trials, also recording each trial's checkpoint path."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialRecords(MLflowLoggerCallback):
        def log_trial_save(self, trial):
            run_id = self._trial_runs.get(trial)
            if run_id is not None and trial.checkpoint is not None:
                where = storage.location_in(trial.checkpoint.filesystem, trial.checkpoint.path)
                client(cfg.tracking_uri).set_tag(run_id, "checkpoint_path", str(where))

    experiment_id(cfg)  # create it with the local store's artifact folder
    return TrialRecords(tracking_uri=cfg.tracking_uri, experiment_name=cfg.experiment, tags=tags,
                        save_artifact=False)

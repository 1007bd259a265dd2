"""The fusion stage on a real local Ray: logit cache, the Tune + Optuna sweep, its outputs
(SQLite study, TensorBoard events, export, report) and resuming after a killed driver."""

from __future__ import annotations

import glob
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import torch
import yaml
from helpers import job_env, run_cli, run_in_own_session, save_backbone

from deepfusion.artifacts.batches import model_batch_inputs
from deepfusion.artifacts.checkpoint import load_model
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.config import ConfigError, FusionConfig, validate_config
from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig
from deepfusion.fusion.logit_cache import open_or_build
from deepfusion.fusion.study import load_study, open_storage, study_location

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def backbones(demo_shards, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fusion")
    data = ShardDataset.open(demo_shards["meld"])
    return {
        "root": root, "data": data.path,
        "video": save_backbone(root / "mimamo", data, MimamoConfig(kind="mimamo", preset="cpu-small"), 0),
        "audio_text": save_backbone(root / "lstm", data,
                                    MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 1),
    }


def fusion_config(backbones: dict, tmp_path: Path, **search) -> FusionConfig:
    return validate_config(FusionConfig, {
        "data": str(backbones["data"]), "video_checkpoint": str(backbones["video"]),
        "audio_text_checkpoint": str(backbones["audio_text"]), "cache_dir": str(tmp_path / "cache"),
        "inference": {"num_cpus": 0.5, "concurrency": 2, "batch_size": 16},
        "training": {"max_epochs": 20},
        "search": {"num_samples": 8, "storage_path": str(tmp_path / "tune"), "name": "sweep", **search},
        "export_dir": str(tmp_path / "export"),
    })


def test_cached_logits_equal_live_forward_passes_and_follow_checkpoint_content(backbones, tmp_path):
    cfg = fusion_config(backbones, tmp_path)
    cache, built = open_or_build(cfg)
    assert built and cache.card["splits"] == ["train", "val", "test"]

    video, video_card = load_model(backbones["video"])
    audio_text, audio_text_card = load_model(backbones["audio_text"])
    for split in ("train", "val", "test"):
        table = pq.read_table(backbones["data"] / f"split={split}").sort_by("sample_id")
        batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
        with torch.inference_mode():
            live_video = video(model_batch_inputs(video_card.model_config, batch)).numpy()
            live_audio_text = audio_text(model_batch_inputs(audio_text_card.model_config, batch)).numpy()
        cached = cache.load(split)
        assert cached.sample_ids == table.column("sample_id").to_pylist()
        assert cached.video.shape == (table.num_rows, 7)
        np.testing.assert_allclose(cached.video, live_video, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cached.audio_text, live_audio_text, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(cached.labels, table.column("label").to_numpy())
        np.testing.assert_array_equal(cached.masks["has_video"], table.column("has_video").to_numpy())
    assert (~cache.load("train").masks["has_video"]).any(), "text-only rows are cached with their mask"

    again, built_again = open_or_build(cfg)
    assert not built_again and again.folder == cache.folder

    # a retrained backbone (same path, new weights) invalidates the cache
    changed = tmp_path / "mimamo_changed"
    save_backbone(changed, ShardDataset.open(backbones["data"]), video_card.model_config, seed=7)
    new, built_new = open_or_build(cfg.model_copy(update={"video_checkpoint": changed}))
    assert built_new and new.key != cache.key


def test_wrong_or_missing_backbones_are_refused_by_name(backbones, tmp_path):
    cfg = fusion_config(backbones, tmp_path)
    with pytest.raises(ConfigError, match="fusion.video_checkpoint: .* holds a multimodal_lstm model"):
        open_or_build(cfg.model_copy(update={"video_checkpoint": backbones["audio_text"]}))
    with pytest.raises(ConfigError, match="fusion.audio_text_checkpoint: .*nowhere is not a deepfusion checkpoint"):
        open_or_build(cfg.model_copy(update={"audio_text_checkpoint": tmp_path / "nowhere"}))


@pytest.fixture(scope="module")
def sweep(backbones, tmp_path_factory):
    from deepfusion.fusion.tune import tune_fusion

    tmp_path = tmp_path_factory.mktemp("sweep")
    return tune_fusion(fusion_config(backbones, tmp_path)), tmp_path


def test_eight_trial_sweep_exports_the_best_trial(sweep):
    import optuna

    outcome, _ = sweep
    search = outcome.search
    assert search.num_trials == 8 and search.num_errored == 0
    assert set(search.best_config) == {"lr", "batch_size", "video_weight", "focal_alpha", "focal_gamma"}
    assert search.best_config["batch_size"] in (4, 6, 8) and 1e-5 <= search.best_config["lr"] <= 1e-3
    # the Optuna study is in its journal file, one finished trial per Tune trial, with the same best value
    assert Path(search.optuna_storage).name == "optuna.journal" and Path(search.optuna_storage).is_file()
    study = load_study("sweep", search.optuna_storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 8 and len(study.trials) == 8
    assert study.best_value == pytest.approx(search.best_metrics["best_val_weighted_f1"])
    # the paper's own configuration (Table 3) is the first trial
    assert study.trials[0].params == {"lr": 1e-4, "batch_size": 4, "video_weight": 0.58,
                                      "focal_alpha": 1.0, "focal_gamma": 2.0}
    # the exported checkpoint is the best trial's, completed with test metrics
    from deepfusion.artifacts.checkpoint import load_fusion

    model, card = load_fusion(outcome.export_dir)
    assert card.kind == "enhanced_late_fusion" and sum(p.numel() for p in model.parameters()) == 9
    # the class order of the data the backbones were fitted on, through the cache to the export
    assert card.label_names == outcome.cache.label_names == ShardDataset.open(
        outcome.cache.inputs["data"]["path"]).label_names
    assert card.hyperparameters["lr"] == pytest.approx(search.best_config["lr"])
    assert set(card.metrics) >= {"val", "test", "search"}
    assert card.backbones["video_checkpoint"]["sha256"] == outcome.cache.inputs["video_checkpoint"]["sha256"]
    enhanced = outcome.rows[-1]
    assert enhanced.val["weighted_f1"] == pytest.approx(search.best_metrics["best_val_weighted_f1"])


def test_report_compares_the_four_models(sweep):
    outcome, _ = sweep
    assert [r.model for r in outcome.rows] == ["MIMAMO Net", "Multimodal LSTM", "Late Fusion", "Enhanced Late Fusion"]
    folder = outcome.report.parent
    text = outcome.report.read_text()
    for name in ("MIMAMO Net", "Multimodal LSTM", "Late Fusion", "Enhanced Late Fusion", "optuna-dashboard"):
        assert name in text
    for png in ("model_comparison.png", "optuna_history.png", "optuna_importances.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in text
    rows = json.loads((folder / "comparison.json").read_text())
    assert all(0 <= r["test_weighted_f1"] <= 1 for r in rows)
    assert abs(sum(rows[-1]["fusion_weights"]) - 1) < 1e-6


def test_tensorboard_reads_the_trials(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome, _ = sweep
    events = glob.glob(str(outcome.search.experiment_dir / "*" / "events.out.tfevents.*"))
    assert len(events) == 8
    accumulator = EventAccumulator(str(Path(events[0]).parent)).Reload()
    tags = accumulator.Tags()["scalars"]
    assert "ray/tune/val_weighted_f1" in tags and "ray/tune/best_val_weighted_f1" in tags
    assert len(accumulator.Scalars("ray/tune/val_weighted_f1")) >= 2  # one point per epoch


def test_a_search_begun_in_sqlite_keeps_its_study_there(tmp_path):
    """New searches keep the study in a journal file; a search folder an older version
    started with SQLite (and no journal) resumes in its own optuna.db."""
    import optuna

    assert study_location(tmp_path) == str(tmp_path / "optuna.journal")
    legacy = f"sqlite:///{tmp_path / 'optuna.db'}"
    old = optuna.create_study(study_name="sweep", storage=legacy, direction="maximize")
    old.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    assert study_location(tmp_path) == legacy
    assert [t.value for t in load_study("sweep", study_location(tmp_path)).trials] == [0.5]
    # once a journal exists, it is the study's home
    journal = optuna.create_study(study_name="sweep", storage=open_storage(str(tmp_path / "optuna.journal")))
    journal.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.25))
    assert study_location(tmp_path) == str(tmp_path / "optuna.journal")
    assert [t.value for t in load_study("sweep", study_location(tmp_path)).trials] == [0.25]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_the_study(sweep):
    outcome, _ = sweep
    port = free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), outcome.search.optuna_storage,
         "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, studies = time.monotonic() + 60, None
        while time.monotonic() < deadline and studies is None:
            try:
                studies = requests.get(f"http://127.0.0.1:{port}/api/studies", timeout=2).json()["study_summaries"]
            except requests.ConnectionError:
                assert dashboard.poll() is None, dashboard.stderr.read()
                time.sleep(0.3)
        assert [(s["study_name"], s["directions"]) for s in studies] == [("sweep", ["maximize"])]
        detail = requests.get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=10).json()
        assert len(detail["trials"]) == 8 and {t["state"] for t in detail["trials"]} == {"Complete"}
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)


def terminated_trials(experiment_dir: Path) -> dict[str, str]:
    """trial id -> its folder, for the trials the last experiment snapshot calls TERMINATED."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    data = json.loads(states[-1].read_text())
    out = {}
    for trial_json, _ in data["trial_data"]:
        trial = json.loads(trial_json)
        if trial["status"] == "TERMINATED":
            out[trial["trial_id"]] = trial["relative_logdir"]
    return out


# A user's driver script whose search kills itself (and the Ray node it started: its
# process group) at the start of the Tune step after the experiment state on disk first
# records ``after`` finished trials: what a resume reads is then known, whatever the timing
# of Tune's snapshots. Tune restores a search's callbacks when it resumes it; the marker file
# keeps this to one kill.
KILLED_SEARCH = """
import glob, json, os, signal, sys
from pathlib import Path
from ray import tune
from deepfusion.config import load_config
from deepfusion.fusion.tune import tune_fusion
from deepfusion.ray_runtime import connect

config, marker, after, experiment_dir = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def finished_on_disk():
    states = sorted(glob.glob(os.path.join(experiment_dir, "experiment_state-*.json")))
    try:
        trials = json.loads(Path(states[-1]).read_text())["trial_data"] if states else []
    except (OSError, ValueError):  # being replaced: the next step reads it again
        return 0
    return sum(json.loads(trial)["status"] == "TERMINATED" for trial, _ in trials)

class KillTheDriver(tune.Callback):
    def on_step_begin(self, iteration, trials, **info):
        if not marker.exists() and (finished := finished_on_disk()) >= after:
            marker.write_text(str(finished))
            os.killpg(0, signal.SIGKILL)

experiment = load_config(config)
connect(experiment.ray)
tune_fusion(experiment.fusion, callbacks=[KillTheDriver()])
"""


@pytest.mark.usefixtures("private_node")
def test_killed_driver_resumes_without_rerunning_finished_trials(backbones, tmp_path, capsys, caplog, pytestconfig):
    import optuna

    trials = 8
    cfg = fusion_config(backbones, tmp_path, num_samples=trials, max_concurrent_trials=2)
    config = tmp_path / "fusion.yaml"
    config.write_text(yaml.safe_dump({"ray": {"num_cpus": 2}, "fusion": cfg.model_dump(mode="json")}))
    tune = ["tune", "--config", str(config)]
    experiment_dir = tmp_path / "tune" / "sweep"

    code, _, err = run_cli(tune + ["--resume"], capsys)
    assert code == 2 and "--resume: no search to resume in" in err, err

    marker = tmp_path / "killed"
    killed = run_in_own_session([sys.executable, "-c", KILLED_SEARCH, str(config), str(marker), "3",
                                 str(experiment_dir)], env=job_env(), timeout=600)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    finished = terminated_trials(experiment_dir)
    assert int(marker.read_text()) == len(finished) and 3 <= len(finished) < trials, (marker.read_text(), finished)
    before = {t: (experiment_dir / d / "result.json").stat() for t, d in finished.items()}

    # the search resumes (here in this process, on the session's Ray) and finishes
    with caplog.at_level("INFO"):
        code, out, err = run_cli(tune + ["--resume"], capsys)
    assert code == 0, (out + err)[-4000:]
    assert "resuming the search" in caplog.text
    assert f"search: {trials} trials (0 errored)" in out
    after = terminated_trials(experiment_dir)
    rerun = [t for t, stat in before.items()
             if ((now := (experiment_dir / finished[t] / "result.json").stat()).st_mtime_ns, now.st_size)
             != (stat.st_mtime_ns, stat.st_size)]
    if pytestconfig.getoption("capture") == "no":  # `pytest -s`: the figure docs/benchmarks.md "faults" records
        with capsys.disabled():
            print("FAULT " + json.dumps({"fault": "tune_driver_killed", "trials": trials,
                                         "finished_at_kill": len(finished), "finished_trials_rerun": len(rerun),
                                         "finished_after_resume": len(after)}))
    assert len(after) == trials and set(finished) <= set(after)
    assert not rerun, f"trials {rerun} ran again"
    study = load_study("sweep", str(experiment_dir / "optuna.journal"))
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == trials
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))

    # a changed search is refused rather than mixed into this one
    code, _, err = run_cli(tune + ["--set", "fusion.search.space.lr=[1e-4,1e-2]"], capsys)
    assert code == 2 and "different space" in err, err[-2000:]


# A driver that dies (SIGKILL, with its Ray node) the moment Ray Data has written every
# split's logits and before the cache's card is written: the cache is complete on disk but
# for its card, the state a reader must never take for a cache.
KILLED_CACHE_BUILD = """
import os, signal, sys
import deepfusion.fusion.logit_cache as logit_cache
from deepfusion.config import load_config
from deepfusion.ray_runtime import connect

def die(folder):
    os.killpg(0, signal.SIGKILL)

logit_cache._count_rows = die  # called once every split is written, before the card
experiment = load_config(sys.argv[1])
connect(experiment.ray)
logit_cache.open_or_build(experiment.fusion)
"""


@pytest.mark.usefixtures("private_node")
def test_a_logit_cache_build_killed_before_its_card_is_never_read_and_the_rerun_completes(backbones, tmp_path):
    """SIGKILL of the fusion driver after Ray Data wrote the logit cache's files and before
    its card: the staging folder has no card, so nothing reads it; the next build completes
    and removes it."""
    cfg = fusion_config(backbones, tmp_path, num_samples=2, max_concurrent_trials=2)
    config = tmp_path / "fusion.yaml"
    config.write_text(yaml.safe_dump({"ray": {"num_cpus": 2}, "fusion": cfg.model_dump(mode="json")}))
    cache_dir = Path(cfg.cache_dir)
    killed = run_in_own_session([sys.executable, "-c", KILLED_CACHE_BUILD, str(config)], env=job_env(), timeout=300)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert list(cache_dir.glob("*.staging/split=*/*.parquet")), "the killed build wrote no logits"
    assert not list(cache_dir.glob("*/cache.json")), "a half-written cache looks complete"

    cache, built = open_or_build(cfg)  # the rerun's first step, on this session's Ray
    assert built and cache.load("test").video.shape[1] == 7
    assert [p.name for p in cache_dir.iterdir()] == [cache.folder.name], "the killed build's staging folder is gone"


def test_out_of_fold_logits_come_from_backbones_that_never_saw_their_rows(backbones, tmp_path):
    """fit_data.source out_of_fold: the train split in 2 folds of whole dialogues; each fold's
    logits are those of both backbones retrained (one epoch, from the train configs in their
    checkpoints) on the other fold only. A second call reuses everything."""
    import shutil

    from deepfusion.artifacts.inference import CheckpointModel
    from deepfusion.workflows.out_of_fold import oof_dir, out_of_fold_logits

    checkpoints = {}
    for field, kind in (("video", "mimamo"), ("audio_text", "multimodal_lstm")):
        folder = Path(shutil.copytree(backbones[field], tmp_path / kind))
        (folder / "train_config.json").write_text(json.dumps({
            "model": {"kind": kind, "preset": "cpu-small"}, "data": str(backbones["data"]), "epochs": 1,
            "batch_size": 8, "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "torch_threads": 1},
            "run": {"name": kind}, "evaluate_test": False}))
        checkpoints[field] = folder
    cfg = fusion_config({**backbones, **checkpoints}, tmp_path).model_copy(update={
        "fit_data": validate_config(FusionConfig, {
            "data": "x", "video_checkpoint": "x", "audio_text_checkpoint": "x",
            "fit_data": {"source": "out_of_fold", "folds": 2, "seed": 3}}).fit_data})
    cache, _ = open_or_build(cfg)
    oof = out_of_fold_logits(cfg, cache)
    train = cache.load("train")
    assert oof.sample_ids == train.sample_ids and np.array_equal(oof.labels, train.labels)
    assert not np.allclose(oof.video, train.video)  # other models than the full backbones

    root = oof_dir(cfg, cache)
    seen_test = []
    for k in range(2):
        fold = root / "data" / f"fold{k}"
        fit_rows = pq.read_table(fold / "split=train").to_pylist()
        held_out = pq.read_table(fold / "split=test").to_pylist()
        seen_test += [r["sample_id"] for r in held_out]
        # whole dialogues: none is on both sides of a fold
        assert not {r["dialogue_id"] for r in fit_rows} & {r["dialogue_id"] for r in held_out}
        # the fold's models were trained on this fold's train rows only (their card says so) ...
        video_model = CheckpointModel(root / "runs" / f"mimamo_fold{k}" / "best")
        assert video_model.card.data_info["path"] == str(fold.resolve())
        # ... and the out-of-fold logits of the held-out rows are theirs
        expected = video_model.logits_of_rows(held_out[:4])
        rows = [oof.sample_ids.index(r["sample_id"]) for r in held_out[:4]]
        np.testing.assert_allclose(oof.video[rows], expected, rtol=1e-4, atol=1e-5)
    assert sorted(seen_test) == sorted(train.sample_ids)  # every train row held out exactly once

    marker = (root / "oof.json").stat().st_mtime_ns
    again = out_of_fold_logits(cfg, cache)
    assert again.sample_ids == oof.sample_ids and np.array_equal(again.video, oof.video)
    assert (root / "oof.json").stat().st_mtime_ns == marker  # reused, nothing retrained

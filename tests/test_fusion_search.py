"""The fusion stage on a real local Ray: logit cache, the Tune + Optuna sweep, its outputs
(SQLite study, TensorBoard events, export, report) and resuming after a killed driver."""

from __future__ import annotations

import glob
import json
import os
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
from conftest import REPO_ROOT, meld_dataset, preprocess_config, save_backbone

from deepfusion.artifacts.batches import model_batch_inputs
from deepfusion.artifacts.checkpoint import load_model
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.config import ConfigError, FusionConfig, validate_config
from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig
from deepfusion.fusion.logit_cache import open_or_build
from deepfusion.fusion.study import load_study, open_storage, study_location
from deepfusion.preprocess.datasets import preprocess

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def backbones(demo_corpus, tmp_path_factory, ray_local) -> dict:
    root = tmp_path_factory.mktemp("fusion")
    preprocess(preprocess_config(root / "shards", meld_dataset(demo_corpus / "meld", name="meld")))
    data = ShardDataset.open(root / "shards" / "meld")
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


def run_in_own_session(command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose timeout kills the driver with the Ray node it started and
    still shows what it printed (a bare TimeoutExpired shows nothing)."""
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{command} still running after {timeout} s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def terminated_trials(experiment_dir: Path) -> dict[str, str]:
    """trial id -> its folder, for the trials the last experiment snapshot calls TERMINATED."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    out = {}
    for trial_json, _ in data["trial_data"]:
        trial = json.loads(trial_json)
        if trial["status"] == "TERMINATED":
            out[trial["trial_id"]] = trial["relative_logdir"]
    return out


def test_killed_driver_resumes_without_rerunning_finished_trials(backbones, tmp_path):
    import optuna

    cfg = fusion_config(backbones, tmp_path, num_samples=16, max_concurrent_trials=2)
    config = tmp_path / "fusion.yaml"
    config.write_text(yaml.safe_dump({"ray": {"num_cpus": 2}, "fusion": cfg.model_dump(mode="json")}))
    command = [sys.executable, "-m", "jobs.tune_fusion", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    experiment_dir = tmp_path / "tune" / "sweep"

    nothing = subprocess.run(command + ["--resume"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert nothing.returncode == 2 and "--resume: no search to resume in" in nothing.stderr, nothing.stderr[-2000:]

    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while len(terminated_trials(experiment_dir)) < 4:
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no 4 finished trials within 300 s"
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray node it started
    driver.wait(timeout=30)
    finished = terminated_trials(experiment_dir)
    assert len(finished) < 16, "killed mid-sweep"
    before = {t: (experiment_dir / d / "result.json").stat() for t, d in finished.items()}

    resumed = run_in_own_session(command + ["--resume"], env=env, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "resuming the search" in resumed.stderr
    assert "search: 16 trials (0 errored)" in resumed.stdout
    after = terminated_trials(experiment_dir)
    rerun = [t for t, stat in before.items()
             if ((now := (experiment_dir / finished[t] / "result.json").stat()).st_mtime_ns, now.st_size)
             != (stat.st_mtime_ns, stat.st_size)]
    print("FAULT " + json.dumps({"fault": "tune_driver_killed", "trials": 16, "finished_at_kill": len(finished),
                                 "finished_trials_rerun": len(rerun), "finished_after_resume": len(after)}))
    assert len(after) == 16 and set(finished) <= set(after)
    assert not rerun, f"trials {rerun} ran again"
    study = load_study("sweep", str(experiment_dir / "optuna.journal"))
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 16
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))

    # a changed search is refused rather than mixed into this one
    changed = subprocess.run(command + ["--set", "fusion.search.space.lr=[1e-4,1e-2]"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2 and "different space" in changed.stderr, changed.stderr[-2000:]


def test_a_logit_cache_build_killed_mid_way_is_never_read_and_the_rerun_completes(backbones, tmp_path):
    """SIGKILL of the fusion driver while Ray Data writes the logit cache: the staging
    folder has no card, so nothing reads it; the next build completes and removes it."""
    cfg = fusion_config(backbones, tmp_path, num_samples=2, max_concurrent_trials=2)
    config = tmp_path / "fusion.yaml"
    config.write_text(yaml.safe_dump({"ray": {"num_cpus": 2}, "fusion": cfg.model_dump(mode="json")}))
    command = [sys.executable, "-m", "jobs.tune_fusion", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cache_dir = Path(cfg.cache_dir)
    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list(cache_dir.glob("*.staging/split=*/*.parquet")):
        assert driver.poll() is None, "the job ended before it was killed"
        assert time.monotonic() < deadline, "no cache file written within 180 s"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
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

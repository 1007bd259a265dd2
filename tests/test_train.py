"""Training the backbones with Ray Train on a real local Ray: metrics, checkpoints, resume,
fractional GPUs, and the audio path on real speech."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, image_dataset, meld_dataset, preprocess_config, ray_actors

from deepfusion.artifacts.checkpoint import (
    CARD,
    TRAINING_STATE,
    checkpoint_hash,
    load_model,
    read_card,
)
from deepfusion.config import ConfigError, TrackingConfig, TrainConfig, validate_config
from deepfusion.preprocess.datasets import preprocess
from deepfusion.tracking.tensorboard import CURVES, read_curves
from deepfusion.training.trainer import train

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def shards(demo_corpus, tmp_path_factory, ray_local) -> Path:
    out = tmp_path_factory.mktemp("train_shards")
    preprocess(preprocess_config(
        out,
        image_dataset(demo_corpus / "textile", name="textile", target_per_class=60, image_size=64),
        meld_dataset(demo_corpus / "meld", name="meld"),
    ))
    return out


def train_config(tmp_path: Path, data: Path, model: dict, **overrides) -> TrainConfig:
    return validate_config(TrainConfig, {
        "model": model, "data": str(data), "epochs": 2, "batch_size": 16,
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "run": {"storage_path": str(tmp_path / "runs"), "name": "run"},
        **overrides,
    })


def test_textile_two_workers_beat_chance_and_write_test_report(shards, tmp_path):
    cfg = train_config(tmp_path, shards / "textile", {"kind": "textile", "preset": "cpu-small"},
                       epochs=6, early_stopping_patience=6)
    outcome = train(cfg)
    assert outcome.epochs_completed == 6 and outcome.worker_resources == {"CPU": 0.5}
    best = outcome.best_metrics
    assert best["val_accuracy"] >= 0.6, f"chance is 1/3; got {best}"  # 27 validation images
    assert {"train_loss", "train_weighted_f1", "val_loss", "val_weighted_f1", "lr",
            "train_f1_clothes_dump", "val_f1_textile_billboard"} <= set(best)
    # the best checkpoint, exported: safetensors weights and the label map travel with it
    card = read_card(outcome.best_checkpoint)
    assert card.label_names == ["clothes_dump", "textile_dye", "textile_billboard"]
    assert card.model_config.backbone.arch == "resnet18"
    assert json.loads((outcome.best_checkpoint / CARD).read_text())["label_names"] == card.label_names
    model, _ = load_model(outcome.best_checkpoint)
    assert isinstance(model, torch.nn.Module) and not model.training
    # test set: metrics JSON + confusion-matrix PNG, computed from the best checkpoint
    report = json.loads(outcome.test_metrics_path.read_text())
    assert report["num_samples"] == 27 and sum(map(sum, report["confusion_matrix"])) == 27
    assert report["checkpoint_hash"] == checkpoint_hash(outcome.best_checkpoint)
    assert set(report["per_class"]) == set(card.label_names)
    assert outcome.test_confusion_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_epochs_and_optimizer_state(shards, tmp_path):
    cfg = train_config(tmp_path, shards / "textile", {"kind": "textile", "preset": "cpu-small"},
                       epochs=1, evaluate_test=False)
    from mlflow.tracking import MlflowClient

    tracking = TrackingConfig(mlflow=True, local_store=tmp_path / "mlflow", experiment="resume-test")
    first = train(cfg, tracking=tracking)
    assert first.epochs_completed == 1
    longer = cfg.model_copy(update={"epochs": 2})
    second = train(longer, tracking=tracking)
    assert second.epochs_completed == 2
    # TensorBoard shows each epoch once, as the run reported it, over both invocations
    curves = read_curves(second.run_dir)
    for split in ("train", "val"):
        for tag in CURVES:
            assert curves[split][tag] == [(m["epoch"], pytest.approx(m[f"{split}_{tag}"], rel=1e-6))
                                          for m in second.history], (split, tag)
    assert [step for step, _ in curves["train"]["lr"]] == [1, 2]
    assert second.curves_path.stat().st_size > 10_000
    # ... and MLflow one run: the resumed invocation continued the first one's record
    client = MlflowClient(tracking.tracking_uri)
    assert second.mlflow_run_id == first.mlflow_run_id
    run = client.get_run(second.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["checkpoint_path"] == str(second.best_checkpoint)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == [
        (m["epoch"], pytest.approx(m["val_loss"], rel=1e-6)) for m in second.history]
    assert run.data.params["run.name"] == cfg.run.name and run.data.params["epochs"] == "1"  # the first call's
    # best/ shares its files with the epoch checkpoint it came from: no second copy on disk
    source = second.best_checkpoint.parent / f"checkpoint_epoch_{second.best_metrics['epoch']:04d}"
    assert (second.best_checkpoint / "model.safetensors").samefile(source / "model.safetensors")
    state = torch.load(second.run_dir / "checkpoint_epoch_0002" / TRAINING_STATE, weights_only=False)
    assert state["epoch"] == 2 and state["metrics"]["epoch"] == 2
    # Adam's step count carried over: two epochs of steps, not one (the batch of 16 is global)
    rows_per_worker = json.loads((shards / "textile" / "manifest.json").read_text())["totals"]["train"] // 2
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {2 * math.ceil(rows_per_worker / cfg.worker_batch_size)}
    # what defines the run may not change under the same name
    with pytest.raises(ConfigError, match="different batch_size"):
        train(longer.model_copy(update={"batch_size": 8}))
    restarted = train(longer.model_copy(update={"batch_size": 8}), fresh=True, tracking=tracking)
    assert restarted.epochs_completed == 2
    assert restarted.mlflow_run_id != first.mlflow_run_id  # a fresh run is a new record
    assert [r.info.status for r in client.search_runs([run.info.experiment_id])] == ["FINISHED", "FINISHED"]


def test_same_seed_repeats_every_epoch_and_a_resumed_run_repeats_the_uninterrupted_one(shards, tmp_path):
    """Shuffle, batch order, dropout and augmentation draw from streams seeded per epoch: the
    same seed gives the same losses to the last bit, also when the run stopped after epoch 1
    and resumed from its checkpoint; another seed does not (so the test can fail)."""
    def losses(outcome):
        return [(m["epoch"], m["train_loss"], m["val_loss"]) for m in outcome.history]

    model = {"kind": "multimodal_lstm", "preset": "cpu-small", "use_audio": False}
    one_worker = {"num_workers": 1, "cpus_per_worker": 1}

    def config(name, **overrides):
        return train_config(tmp_path, shards / "meld", model, scaling=one_worker, evaluate_test=False,
                            shuffle_buffer_rows=64, optim={"optimizer": "adamw", "scheduler": "none"},
                            run={"storage_path": str(tmp_path / "runs"), "name": name}, **overrides)

    straight = losses(train(config("straight")))
    train(config("resumed", epochs=1))  # a second run of epoch 1, then it stops
    resumed = train(config("resumed"))
    other_seed = losses(train(config("seed1", seed=1)))
    assert resumed.resumed_from == [1]
    assert losses(resumed) == straight, (straight, losses(resumed))
    assert other_seed[0][1] != straight[0][1]


@pytest.mark.parametrize("model", [
    {"kind": "mimamo", "preset": "cpu-small"},
    {"kind": "multimodal_lstm", "preset": "cpu-small"},
])
def test_emotion_models_train_on_partial_modalities(shards, tmp_path, model):
    manifest = json.loads((shards / "meld" / "manifest.json").read_text())
    assert manifest["media_by_sample"].get("text-only", 0) > 0, "the demo holds text-only rows"
    outcome = train(train_config(tmp_path, shards / "meld", model, epochs=1))
    metrics = outcome.best_metrics
    assert metrics["train_samples"] >= manifest["totals"]["train"] - 1  # equal split may drop one row
    assert all(v == v for v in metrics.values() if isinstance(v, float)), "no NaN anywhere"
    card = read_card(outcome.best_checkpoint)
    assert card.model_config.speaker.num_speakers == len(manifest["speakers"])
    assert outcome.test_metrics["num_samples"] == manifest["totals"]["test"]


def test_fine_tuning_with_focal_loss_and_length_grouped_batches_on_two_workers(shards, tmp_path):
    """The MELD text options together under DDP: the encoder trains at its own learning
    rate, focal loss, length-grouped batches (both workers must step equally often)."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    from deepfusion.pretrained import resolve_text_model

    manifest = json.loads((shards / "meld" / "manifest.json").read_text())
    model = {"kind": "multimodal_lstm", "preset": "cpu-small", "use_audio": False, "text_encoder": {"freeze": False}}
    outcome = train(train_config(tmp_path, shards / "meld", model, epochs=1, group_by_length=4, optim={
        "optimizer": "adamw", "lr": 1e-3, "encoder_lr": 2e-5, "scheduler": "none", "loss": "focal"}))
    metrics = outcome.best_metrics
    assert (metrics["lr"], metrics["lr_encoder"]) == (1e-3, 2e-5)
    assert metrics["train_samples"] >= manifest["totals"]["train"] - 1
    assert all(v == v for v in metrics.values() if isinstance(v, float)), "no NaN anywhere"
    trained = load_file(str(outcome.best_checkpoint / "model.safetensors"))
    pretrained = AutoModel.from_pretrained(resolve_text_model("offline")).state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    delta = (trained[f"text_encoder.model.{name}"] - pretrained[name]).abs().max()
    assert 0 < delta < 1e-2, delta  # fine-tuned, and gently (a 1e-3 step would move it further)


def test_mismatched_data_and_model_are_refused_before_training(shards, tmp_path):
    with pytest.raises(ConfigError, match="a textile model cannot train on .*meld dataset"):
        train(train_config(tmp_path, shards / "meld", {"kind": "textile", "preset": "cpu-small"}))
    # token ids of another vocabulary (the offline tokenizer is BERT's uncased WordPiece; the
    # paper preset's bert-base-uncased shares it, RoBERTa does not)
    with pytest.raises(ConfigError, match="tokenized with 'offline' \\(another vocabulary\\)"):
        train(train_config(tmp_path, shards / "meld", {"kind": "multimodal_lstm", "preset": "cpu-small",
                                                       "text_encoder": {"name": "roberta-base"}}))
    with pytest.raises(ConfigError, match="manifest.json not found.*jobs.preprocess"):
        train(train_config(tmp_path, tmp_path / "nothing", {"kind": "textile"}))


def test_a_worker_killed_mid_epoch_restores_from_the_last_checkpoint(shards, tmp_path):
    """SIGKILL a Ray Train worker once epoch 2's checkpoint exists (it is then in epoch 3):
    Ray restarts the worker group, which resumes from that checkpoint; every epoch is
    trained once and the count is intact."""
    import threading
    import time

    epochs = 5
    cfg = train_config(tmp_path, shards / "textile", {"kind": "textile", "preset": "cpu-small"},
                       epochs=epochs, early_stopping_patience=epochs, evaluate_test=False,
                       scaling={"num_workers": 2, "cpus_per_worker": 0.5},
                       run={"storage_path": str(tmp_path / "runs"), "name": "killed", "max_failures": 1})
    run_dir = tmp_path / "runs" / "killed"
    killed: dict = {}

    def committed_epochs() -> list[int]:
        """Epochs whose checkpoint Ray Train has registered (what a restart restores from)."""
        try:
            snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
        except (OSError, ValueError):
            return []
        return sorted(int(c["checkpoint_dir_name"][-4:]) for c in snapshot["checkpoint_results"])

    def kill_a_worker_after_epoch_2():
        deadline = time.monotonic() + 300
        while 2 not in committed_epochs():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        workers = ray_actors("TrainWorker", state="ALIVE")
        killed["committed"] = committed_epochs()
        killed["pid"] = workers[-1]["pid"]
        os.kill(workers[-1]["pid"], 9)

    killer = threading.Thread(target=kill_a_worker_after_epoch_2, daemon=True)
    killer.start()
    outcome = train(cfg)
    killer.join(timeout=5)
    assert killed.get("pid"), "no training worker was found to kill"
    assert killed["committed"][-1] < epochs, f"killed after the last epoch: {killed}"
    # resumed once, from the latest checkpoint registered when the worker died
    print("FAULT " + json.dumps({"fault": "train_worker_killed", "epochs": epochs, "killed_pid": killed["pid"],
                                 "checkpoints_committed_at_kill": killed["committed"],
                                 "resumed_from": outcome.resumed_from, "epochs_completed": outcome.epochs_completed}))
    assert outcome.resumed_from == [killed["committed"][-1]], (outcome.resumed_from, killed)
    assert outcome.epochs_completed == epochs
    assert [m["epoch"] for m in outcome.history] == list(range(1, epochs + 1))


def test_two_workers_share_one_gpu_at_half_each(shards, tmp_path):
    """A Ray node advertising one GPU: both workers get 0.5 of GPU 0; torch still runs on
    CPU here. A separate driver process, since it needs its own Ray node."""
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump({
        "ray": {"num_cpus": 2, "num_gpus": 1},
        "train": {"model": {"kind": "textile", "preset": "cpu-small"}, "data": str(shards / "textile"),
                  "epochs": 1, "batch_size": 16, "evaluate_test": False,
                  "scaling": {"num_workers": 2, "cpus_per_worker": 0.5, "use_gpu": True,
                              "gpus_per_worker": 0.5, "backend": "gloo"},
                  "run": {"storage_path": str(tmp_path / "runs"), "name": "gpu"}},
    }))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    job = subprocess.run([sys.executable, "-m", "jobs.train", "--config", str(config)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600,
                         env={**env, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    workers = re.findall(r"worker rank (\d)/2: torch device (\w+), Ray GPU ids \[(.*?)\]", output)
    assert sorted(workers) == [("0", "cpu", "0"), ("1", "cpu", "0")], workers
    assert "Requesting resources: {'CPU': 0.5, 'GPU': 0.5} * 2" in output
    assert "2 workers x {'CPU': 0.5, 'GPU': 0.5}" in job.stdout


def test_speech_audio_path_beats_chance_on_unseen_speakers(shared_data, tmp_path):
    """The Multimodal LSTM's audio path (log-mel front end) on REAL RAVDESS + TESS clips,
    speaker-independent: judged on the 30 clips of the 8 speakers it never heard."""
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config import load_config
    from deepfusion.evaluation.metrics import classification_metrics
    from deepfusion.evaluation.predict import evaluate_split

    real = load_config(REPO_ROOT / "configs" / "real_data.yaml").preprocess
    speech = next(d for d in real.datasets if d.name == "speech")
    [result] = preprocess(real.model_copy(update={"output_dir": tmp_path / "shards", "datasets": [speech]}))
    cfg = load_config(REPO_ROOT / "configs" / "speech_lstm.yaml", [
        f"train.data={result.out_dir}", "train.epochs=12", "train.early_stopping_patience=12",
        f"train.run.storage_path={tmp_path / 'runs'}", "train.evaluate_test=false", "train.seed=1",
    ]).train
    outcome = train(cfg)
    data = ShardDataset.open(result.out_dir)
    unseen = sum(evaluate_split(outcome.best_checkpoint, data, split, real.data).confusion
                 for split in ("val", "test"))
    metrics = classification_metrics(unseen, data.label_names)
    present = [c for c in metrics["per_class"].values() if c["support"]]
    balanced_accuracy = sum(c["recall"] for c in present) / len(present)
    majority = max(c["support"] for c in present) / metrics["num_samples"]
    print(f"unseen speakers: n={metrics['num_samples']} accuracy {metrics['accuracy']:.3f} "
          f"balanced {balanced_accuracy:.3f} (chance {1 / 7:.3f}, majority {majority:.3f})")
    assert metrics["num_samples"] == data.total("val") + data.total("test") >= 25
    # Chance is 1/7 for both; always answering the majority class has balanced accuracy 1/7.
    # 30 clips make these noisy: identical runs gave accuracy 0.20-0.40 and balanced
    # accuracy 0.18-0.33 (Ray Data's order varies), so the bar is chance itself, as the issue asks.
    chance = 1 / 7
    assert metrics["accuracy"] > chance and balanced_accuracy > chance, metrics

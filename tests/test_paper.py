"""The paper's configuration (configs/paper): every file validates and builds the
methodology's models; one test runs the whole paper pipeline on a tiny synthetic slice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, SMALL_DEMO, free_ports, job_env, run_in_own_session

from deepfusion.artifacts.batches import model_batch_inputs
from deepfusion.config import load_config
from deepfusion.config.architectures import random_init_overrides
from deepfusion.demo.meld_corpus import write_meld_corpus
from deepfusion.models import build_model
from deepfusion.workflows.pipeline_plan import plan_pipeline

PAPER = REPO_ROOT / "configs" / "paper"
PIPELINE = PAPER / "pipeline.yaml"
MODELS = ("textile", "mimamo", "multimodal_lstm")
# The SYNTHETIC MELD slice the paper pipeline runs on: a third of the session's small demo
# (about 12 training clips), as every epoch of the paper-size models costs seconds per clip.
PAPER_SLICE = SMALL_DEMO.model_copy(update={"dialogues": {"train": 4, "dev": 2, "test": 2},
                                            "utterances_per_dialogue": (2, 4)})


def test_the_paper_files_hold_the_methodologys_settings():
    experiment = load_config(PIPELINE)
    plan = plan_pipeline(experiment, PIPELINE)
    train = {cfg.run.name: cfg for _, cfg in plan.train}
    assert set(train) == {"textile", "mimamo", "multimodal_lstm"}
    textile, mimamo, lstm = train["textile"], train["mimamo"], train["multimodal_lstm"]
    # Table 2 and Fig. 3: batch sizes, optimizers, epochs, patience
    assert (textile.batch_size, textile.optim.optimizer, textile.optim.lr, textile.optim.scheduler) == \
        (32, "adam", 1e-3, "plateau")
    assert textile.epochs == 100 and textile.early_stopping_patience == 10
    assert textile.model.backbone.arch == "resnet50" and textile.model.backbone.weights == "IMAGENET1K_V2"
    assert textile.model.dropout == 0.5 and textile.training_augmentation is not None
    assert (mimamo.batch_size, lstm.batch_size) == (16, 32)
    # each worker's half in micro-batches: the spec's batch per step, within half a 12 GB card
    assert (textile.micro_batch_size, mimamo.micro_batch_size, lstm.micro_batch_size) == (16, 4, 4)
    assert mimamo.model.num_frames == 8 and mimamo.model.text_encoder.name == "bert-base-uncased"
    assert lstm.model.audio_encoder.name == "facebook/wav2vec2-base" and lstm.model.model_dim == 768
    assert lstm.model.lstm_hidden == 256 and lstm.model.speaker.dim == 64 and lstm.model.num_heads == 8
    for cfg in train.values():  # two workers share each RTX 3060, fp16 autocast
        assert (cfg.scaling.num_workers, cfg.scaling.gpus_per_worker, cfg.scaling.amp) == (2, 0.5, True)
    images, meld = experiment.preprocess.datasets
    assert images.image_size == 224 and images.target_per_class == 800
    assert (meld.video.num_frames, meld.video.frame_size) == (8, 224)
    fusion = load_config(plan.fusion[0]).fusion
    assert fusion.search.num_samples >= 50 and fusion.training.focal_gamma > 0
    serve = load_config(plan.serve[0]).serve
    assert serve.video.num_gpus == serve.audio_text.num_gpus == 0.5


@pytest.mark.parametrize("name", ["textile", "mimamo", "multimodal_lstm"])
def test_the_paper_models_build_offline_and_give_one_logit_per_class(name):
    cfg = load_config(PAPER / f"{name}.yaml", random_init_overrides(name)).train
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    rng = np.random.default_rng(0)
    rows = 2
    if name == "textile":
        size = 224
        batch = {"image": np.array([rng.integers(0, 256, size * size * 3, dtype=np.uint8).tobytes()
                                    for _ in range(rows)], dtype=object),
                 "height": np.full(rows, size), "width": np.full(rows, size)}
    else:
        size, frames = 224, 8
        batch = {"speaker_id": np.zeros(rows, dtype=np.int64), "gender": np.array(["female"] * rows, dtype=object),
                 "age": np.array([None] * rows, dtype=object), "has_text": np.ones(rows, dtype=bool),
                 "input_ids": np.array([np.array([101, 7592, 2088, 102], dtype=np.int32)] * rows, dtype=object)}
        if name == "mimamo":
            batch |= {"video_frames": np.array([rng.integers(0, 256, frames * size * size * 3, dtype=np.uint8)
                                                .tobytes() for _ in range(rows)], dtype=object),
                      "num_frames": np.full(rows, frames), "frame_size": np.full(rows, size),
                      "has_video": np.ones(rows, dtype=bool)}
        else:
            batch |= {"audio": np.array([rng.standard_normal(16000).astype(np.float32) * 0.1
                                         for _ in range(rows)], dtype=object),
                      "has_audio": np.ones(rows, dtype=bool)}
    with torch.inference_mode():
        logits = model(model_batch_inputs(cfg.model, batch))
    assert logits.shape == (rows, cfg.model.num_classes) and torch.isfinite(logits).all()
    parameters = sum(p.numel() for p in model.parameters())
    # ResNet-50 (23.5M) + head; + BERT-base (109M); BERT-base + Wav2Vec2-base (94M)
    assert parameters > {"textile": 24e6, "mimamo": 130e6, "multimodal_lstm": 200e6}[name], parameters


@pytest.mark.usefixtures("ray_head")
def test_the_paper_pipeline_end_to_end_on_a_tiny_slice(demo_corpus, tmp_path):
    """preprocess -> the three paper backbones (random weights, one epoch, CPU) -> a fusion
    sweep of 3 trials -> Serve answers one request, as `python -m jobs.pipeline` on this
    machine runs it: joining the session's head. The MELD slice is its own, smaller than the
session's demo corpus. Frames and images are 48-64 px (the
    synthetic slice's own size) so that ResNet-50 runs in minutes on 2 cores."""
    (port,) = free_ports(1)
    meld = tmp_path / "meld"
    rows = write_meld_corpus(PAPER_SLICE, meld)
    assert rows["train"] >= 8, rows
    stage = {name: [*random_init_overrides(name), "train.epochs=1", "train.scaling.num_workers=1",
                    "train.scaling.torch_threads=2", "ray.num_cpus=2"] for name in MODELS}
    stage["textile"] += ["train.batch_size=8"]
    stage["mimamo"] += ["train.batch_size=4"]
    stage["multimodal_lstm"] += ["train.batch_size=4"]
    overrides = [
        "ray.num_cpus=2", "tracking.mlflow=false", "preprocess.data.num_cpus=0.5", "preprocess.data.concurrency=2",
        f"preprocess.datasets.0.root={demo_corpus / 'textile'}", "preprocess.datasets.0.target_per_class=12",
        "preprocess.datasets.0.image_size=64",
        f"preprocess.datasets.1.root={meld}",
        'preprocess.datasets.1.media_dirs={"train": "train", "val": "dev", "test": "test"}',
        "preprocess.datasets.1.video.frame_size=48", "preprocess.datasets.1.audio.max_seconds=2.0",
        *[f"pipeline.train.{i}.overrides={json.dumps(stage[name])}"
          for i, name in enumerate(["textile", "mimamo", "multimodal_lstm"])],
        "pipeline.fusion.overrides=" + json.dumps([
            "ray.num_cpus=2", "fusion.search.num_samples=3", "fusion.search.verbose=0",
            "fusion.search.max_concurrent_trials=2", "fusion.inference.num_gpus=0",
            "fusion.inference.num_cpus=0.5", "fusion.inference.concurrency=1"]),
        "pipeline.serve.overrides=" + json.dumps([
            "ray.num_cpus=2", "serve.video.num_gpus=0", "serve.audio_text.num_gpus=0", "serve.textile.num_gpus=0",
            "serve.video.num_cpus=0.25", "serve.audio_text.num_cpus=0.25", "serve.textile.num_cpus=0.25",
            "serve.ingress.num_cpus=0.25"]),
        f"pipeline.serve.url=http://127.0.0.1:{port}",
    ]
    run = run_in_own_session([sys.executable, "-m", "jobs.pipeline", "--config", str(PIPELINE), "--workdir",
                              str(tmp_path)] + [arg for o in overrides for arg in ("--set", o)],
                             env=job_env(), timeout=800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    summary = json.loads((tmp_path / "work/paper/pipeline/summary.json").read_text())
    assert [row["model"] for row in summary["comparison"]] == ["MIMAMO Net", "Multimodal LSTM", "Late Fusion",
                                                               "Enhanced Late Fusion"]
    cards = {name: json.loads((tmp_path / f"work/paper/runs/{name}/best/card.json").read_text())
             for name in MODELS}
    assert cards["textile"]["model_config"]["backbone"]["arch"] == "resnet50"
    assert cards["mimamo"]["model_config"]["text_encoder"]["name"] == "bert-base-uncased"
    assert cards["multimodal_lstm"]["model_config"]["audio_encoder"]["name"] == "facebook/wav2vec2-base"
    for card in cards.values():  # random init offline, and every output says so
        assert card["pretrained"]["random_init"], card["pretrained"]
    assert "random-init" in run.stdout
    answer = summary["serve_response"]["response"]
    assert answer["emotion"] in answer["probabilities"] and len(answer["fusion_weights"]) == 2


def test_the_gpu_bench_without_cuda_says_so_in_one_line_and_exits_0():
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, even on a GPU machine
    run = subprocess.run([sys.executable, "bench/gpu.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    result = json.loads(lines[0])
    assert result["bench"] == "gpu" and "no CUDA device" in result["skipped"] and "models" not in result

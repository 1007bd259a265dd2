"""The Ray side of ``bench/gpu.py``: the paper presets under Ray Train and Ray Serve.

- ``ray_train``: a synthetic image folder preprocessed (Ray Data) at 224 px, then the paper
  textile classifier (ResNet-50, random weights) trained for one epoch by Ray Train with
  two workers at ``gpus_per_worker`` each (0.5: both on one card), AMP on.
- ``serve``: paper-preset MIMAMO Net and Multimodal LSTM checkpoints (random weights, on a
  synthetic MELD-layout corpus at 8 frames of 224 px) and an Enhanced Late Fusion, deployed
  as the composed application with ``num_gpus`` per model replica; ``/v1/emotion`` over
  HTTP at concurrency 1 and 8 (bench/serve_latency.py's client).

Both run on CPU too (``bench/gpu.py --device cpu``), smaller, to check the script.
"""

from __future__ import annotations

import time
from pathlib import Path

from deepfusion.config import DemoDataConfig, validate_config
from deepfusion.config.preprocess import PreprocessConfig


def _preprocess(out: Path, *datasets: dict):
    from deepfusion.preprocess.datasets import preprocess

    return preprocess(validate_config(PreprocessConfig, {
        "output_dir": str(out), "data": {"num_cpus": 1, "concurrency": 4, "batch_size": 8},
        "datasets": list(datasets)}))


def ray_train(root: Path, *, gpus_per_worker: float, use_gpu: bool, image_size: int, per_class: int) -> dict:
    """One epoch of the paper textile net under Ray Train, 2 workers."""
    from deepfusion.config import TrainConfig
    from deepfusion.demo.image_corpus import write_image_corpus
    from deepfusion.training.trainer import train

    write_image_corpus(DemoDataConfig(out=root, image_scale=per_class / 474, image_size=image_size), root / "images")
    _preprocess(root / "shards", {"kind": "image_folder", "name": "textile", "root": str(root / "images"),
                                  "target_per_class": per_class, "image_size": image_size})
    cfg = validate_config(TrainConfig, {
        "model": {"kind": "textile", "preset": "paper", "backbone": {"arch": "resnet50", "weights": None}},
        "data": str(root / "shards" / "textile"), "epochs": 1, "batch_size": 32,
        "scaling": {"num_workers": 2, "use_gpu": use_gpu, "gpus_per_worker": gpus_per_worker,
                    "cpus_per_worker": 1, "amp": True},
        "run": {"storage_path": str(root / "runs"), "name": "paper_textile"}})
    started = time.perf_counter()
    outcome = train(cfg)
    wall = time.perf_counter() - started
    best = outcome.best_metrics
    return {"workers": outcome.num_workers, "worker_resources": outcome.worker_resources,
            "train_samples_per_s": best.get("train_samples_per_s"), "epoch_s": best.get("epoch_s"),
            "wall_s": round(wall, 1), "val_accuracy": round(best["val_accuracy"], 4)}


def serve(root: Path, *, num_gpus: float, frame_size: int, requests: int, num_cpus: float = 1.0) -> dict:
    """The composed app on paper-preset backbones: latency over HTTP."""
    import torch
    from serve_latency import run_concurrency, utterances

    from deepfusion.artifacts.checkpoint import CheckpointCard, read_card, save_checkpoint, save_fusion
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig
    from deepfusion.config.serving import ServeSection
    from deepfusion.demo.meld_corpus import write_meld_corpus
    from deepfusion.models import build_model
    from deepfusion.models.fusion import EnhancedLateFusion

    corpus = DemoDataConfig(out=root, dialogues={"train": 4, "dev": 2, "test": 6}, frame_size=frame_size,
                            seconds=(2.0, 3.0))
    write_meld_corpus(corpus, root / "meld")
    _preprocess(root / "shards", {"kind": "meld", "name": "meld", "root": str(root / "meld"),
                                  "video": {"num_frames": 8, "frame_size": frame_size},
                                  "audio": {"sample_rate": 16000, "max_seconds": 6.0},
                                  "text": {"tokenizer": "offline", "max_length": 128}})
    data = ShardDataset.open(root / "shards" / "meld")
    offline = {"load_weights": False}
    checkpoints = {}
    for name, model_cfg in (
            ("video", MimamoConfig(preset="paper", backbone={"arch": "resnet50", "weights": None},
                                   text_encoder=offline)),
            ("audio_text", MultimodalLSTMConfig(preset="paper", text_encoder=offline, audio_encoder=offline))):
        torch.manual_seed(0)
        model_cfg = data.resolve_model_config(model_cfg)
        checkpoints[name] = save_checkpoint(root / name, build_model(model_cfg), model_config=model_cfg,
                                            label_names=data.label_names, data_info=data.checkpoint_info(),
                                            train_config={}, training_state={})
    save_fusion(root / "fusion", EnhancedLateFusion(7, video_weight=0.58), CheckpointCard(
        kind="enhanced_late_fusion", label_names=data.label_names, hyperparameters={"video_weight": 0.58},
        backbones={f"{k}_checkpoint": {"path": str(v), "sha256": read_card(v).content_hash}
                   for k, v in checkpoints.items()}, fusion_weights=[0.58, 0.42]))
    cfg = validate_config(ServeSection, {
        "video_checkpoint": str(checkpoints["video"]), "audio_text_checkpoint": str(checkpoints["audio_text"]),
        "fusion_checkpoint": str(root / "fusion"), "http_port": 8123,
        "video": {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_batch_size": 8},
        "audio_text": {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_batch_size": 8},
        "ingress": {"num_cpus": num_cpus}, "fusion": {"num_cpus": 0.1}})

    from deepfusion.ray_runtime import use_serve_environment

    use_serve_environment()
    from ray import serve as ray_serve

    from deepfusion.serving.app import build_app

    ray_serve.start(http_options={"host": "127.0.0.1", "port": cfg.http_port})
    ray_serve.run(build_app(cfg), name="paper", route_prefix="/")
    url = f"http://127.0.0.1:{cfg.http_port}/v1/emotion"
    samples = utterances(root / "meld", "test")
    try:
        run_concurrency(url, samples, 1, min(8, requests))  # warm-up: kernels, cuDNN plans, caches
        levels = {c: run_concurrency(url, samples, c, max(requests, 2 * c)) for c in (1, 8)}
    finally:
        ray_serve.shutdown()
    c1 = levels[1]
    return {"p50_ms": c1["p50_ms"], "p95_ms": c1["p95_ms"], "rps_c1": c1["rps"],
            "p50_ms_c8": levels[8]["p50_ms"], "rps_c8": levels[8]["rps"], "stages_p50_ms": c1["stages_p50_ms"],
            "target_p50_ms": 30, "meets_target": c1["p50_ms"] <= 30, "frame_size": frame_size,
            "num_gpus_per_model": num_gpus}

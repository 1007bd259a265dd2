"""Every artifact on a storage URI: an S3-compatible server on loopback (``s3_store``,
moto's server mode) stands in for S3, GCS or MinIO. Shards, training runs, the fusion
sweep, exports, predictions and the Serve app read and write the bucket; nothing of the
project's ``work/`` is used."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import (
    DEMO_MELD,
    DEMO_TEXTILE,
    image_dataset,
    kill_a_train_worker_after,
    meld_dataset,
    preprocess_config,
    save_backbone,
)

from deepfusion import storage


@pytest.fixture(scope="module")
def bucket_shards(s3_store, demo_corpus, ray_local) -> dict:
    """The demo corpus preprocessed into the bucket."""
    from deepfusion.preprocess.datasets import preprocess

    out = f"{s3_store}/shards"
    cfg = preprocess_config(out, meld_dataset(demo_corpus / "meld", **DEMO_MELD),
                            image_dataset(demo_corpus / "textile", **DEMO_TEXTILE))
    results = preprocess(cfg)
    return {"cfg": cfg, "results": {r.name: r for r in results}, "meld": f"{out}/meld", "textile": f"{out}/textile"}


def test_preprocess_writes_shards_and_manifest_to_the_bucket(bucket_shards, demo_shards):
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.preprocess.datasets import preprocess

    files = storage.files(bucket_shards["meld"])
    manifest = json.loads(storage.read_text(f"{bucket_shards['meld']}/manifest.json"))
    assert set(manifest["shards"]["train"]) <= set(files) and "quarantine.jsonl" in files
    local = json.loads((demo_shards["meld"] / "manifest.json").read_text())
    assert manifest["totals"] == local["totals"] and manifest["counts"] == local["counts"]
    data = ShardDataset.open(bucket_shards["meld"])
    assert data.split("train", ["sample_id"]).count() == manifest["totals"]["train"]
    assert data.bytes_on_disk("train") == sum(size for f, (size, _) in files.items() if f.startswith("split=train/"))
    # the freshness rule on a URI: a second run finds both datasets current
    again = preprocess(bucket_shards["cfg"])
    assert all(r.skipped for r in again), [(r.name, r.skipped) for r in again]


@pytest.fixture(scope="module")
def bucket_run(bucket_shards, s3_store, tmp_path_factory) -> dict:
    """A textile classifier trained on the bucket's shards with its run in the bucket; its
    only Train worker is SIGKILLed after epoch 1's checkpoint reached the store."""
    from deepfusion.config import TrainConfig, validate_config
    from deepfusion.training.trainer import train

    record = tmp_path_factory.mktemp("kill") / "killed.json"
    cfg = validate_config(TrainConfig, {
        "model": {"kind": "textile", "preset": "cpu-small"}, "data": bucket_shards["textile"],
        "epochs": 3, "early_stopping_patience": 3, "batch_size": 16,
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "run": {"storage_path": f"{s3_store}/runs", "name": "textile", "max_failures": 1}})
    outcome = train(cfg, callbacks=[kill_a_train_worker_after(1, record)])
    return {"cfg": cfg, "outcome": outcome, "killed": json.loads(record.read_text())}


def test_training_keeps_its_run_in_the_bucket_and_resumes_from_the_stores_checkpoint(bucket_run, s3_store):
    from deepfusion.artifacts.checkpoint import CARD, checkpoint_hash, read_card
    from deepfusion.tracking.tensorboard import read_curves

    outcome, killed = bucket_run["outcome"], bucket_run["killed"]
    run = f"{s3_store}/runs/textile"
    # the worker was killed once epoch 1's checkpoint was in the store; the restarted worker
    # group read it back from there and trained epochs 2 and 3 only
    assert killed["checkpoint"].startswith("deepfusion-test/runs/textile/checkpoint_epoch_0001"), killed
    assert outcome.resumed_from == [1] and [m["epoch"] for m in outcome.history] == [1, 2, 3]
    assert outcome.run_dir == run and outcome.best_checkpoint == f"{run}/best"
    files = storage.files(run)
    assert {"run_config.json", "best/model.safetensors", f"best/{CARD}", "best/training_state.pt",
            "evaluation/training_curves.png", "evaluation/test_metrics.json"} <= set(files), sorted(files)
    assert any(f.startswith("checkpoint_epoch_0003/") for f in files)
    # the store's best checkpoint is a whole checkpoint, read through this node's mirror
    card = read_card(outcome.best_checkpoint)
    assert card.label_names == ["clothes_dump", "textile_billboard", "textile_dye"]
    assert card.data_info["path"] == f"{s3_store}/shards/textile"
    report = json.loads(storage.read_text(outcome.test_metrics_path))
    assert report["checkpoint_hash"] == checkpoint_hash(outcome.best_checkpoint) and report["num_samples"] == 27
    # TensorBoard's curves, sent by the rank-0 worker each epoch: one point per epoch
    curves = read_curves(storage.materialize(run))
    assert [step for step, _ in curves["val"]["loss"]] == [1, 2, 3]


@pytest.fixture(scope="module")
def bucket_fusion(bucket_shards, s3_store, tmp_path_factory) -> dict:
    """Both backbones uploaded to the bucket (untrained checkpoints of the corpus' shape),
    then a 3-trial fusion sweep whose cache, Tune experiment, journal and export are there."""
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config import FusionConfig, validate_config
    from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig
    from deepfusion.fusion.tune import tune_fusion

    local = tmp_path_factory.mktemp("uploaded")
    meld = ShardDataset.open(bucket_shards["meld"])
    for name, model, seed in (("mimamo", MimamoConfig(kind="mimamo", preset="cpu-small"), 0),
                              ("lstm", MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 1)):
        save_backbone(local / name, meld, model, seed)
        storage.push(local / name, f"{s3_store}/models/{name}")
    cfg = validate_config(FusionConfig, {
        "data": bucket_shards["meld"], "video_checkpoint": f"{s3_store}/models/mimamo",
        "audio_text_checkpoint": f"{s3_store}/models/lstm", "cache_dir": f"{s3_store}/logit_cache",
        "inference": {"num_cpus": 0.5, "concurrency": 1, "batch_size": 16}, "training": {"max_epochs": 5},
        "search": {"num_samples": 3, "storage_path": f"{s3_store}/tune", "name": "sweep"},
        "export_dir": f"{s3_store}/fusion/best"})
    return {"cfg": cfg, "outcome": tune_fusion(cfg)}


def test_fusion_sweep_keeps_cache_study_and_export_in_the_bucket_and_resumes_on_a_new_node(bucket_fusion, s3_store):
    import optuna

    from deepfusion.artifacts.checkpoint import backbone_path, load_fusion
    from deepfusion.fusion.study import load_study
    from deepfusion.fusion.tune import tune_fusion

    cfg, outcome = bucket_fusion["cfg"], bucket_fusion["outcome"]
    assert outcome.cache_built and outcome.cache.folder.startswith(f"{s3_store}/logit_cache/")
    assert outcome.search.num_trials == 3 and outcome.search.num_errored == 0
    assert outcome.search.best_checkpoint.startswith(f"{s3_store}/tune/sweep/")
    tune_files = storage.files(f"{s3_store}/tune/sweep")
    assert {"optuna.journal", "run_config.json", "report/comparison.json", "report/report.md"} <= set(tune_files)
    # the exported checkpoint names its backbones relative to itself, inside the bucket
    assert outcome.export_dir == f"{s3_store}/fusion/best"
    model, card = load_fusion(outcome.export_dir)
    assert card.backbones["video_checkpoint"]["path"] == "../../models/mimamo"
    assert backbone_path(card, "audio_text_checkpoint") == f"{s3_store}/models/lstm"
    assert card.metrics["search"]["num_trials"] == 3

    # another node (an empty mirror): the cache is found current in the store, the search
    # is restored from it with its journal, and no finished trial runs again
    mirror = storage.cache_root()
    for child in mirror.iterdir():
        shutil.rmtree(child)
    journal_before = storage.read_bytes(f"{s3_store}/tune/sweep/optuna.journal")
    again = tune_fusion(cfg)
    assert not again.cache_built and again.search.num_trials == 3
    assert storage.read_bytes(f"{s3_store}/tune/sweep/optuna.journal") == journal_before
    study = load_study("sweep", again.search.optuna_storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3


def test_export_predict_and_serve_read_the_bucket(bucket_fusion, bucket_run, s3_store, demo_corpus, serve_port,
                                                  tmp_path, capsys):
    """`deepfusion export` bundles the bucket's fusion into the bucket; batch prediction
    reads that bundle and writes its results there (a rerun finds them); the Serve app
    serves the bundle and the bucket's textile classifier, each replica reading the store."""
    import requests
    from helpers import deploy, run_cli
    from ray import serve

    from deepfusion.config import validate_config
    from deepfusion.config.serving import ServeSection
    from deepfusion.serving.app import build_app
    from deepfusion.workflows.predict import predict

    bundle = f"{s3_store}/models/fusion-v1"
    code, out, err = run_cli(["export", bucket_fusion["outcome"].export_dir, bundle], capsys)
    assert code == 0, err
    assert f"-> {bundle}" in out and "video_checkpoint: mimamo backbones/video" in out
    assert {"card.json", "model.safetensors", "backbones/video/card.json", "backbones/audio_text/model.safetensors"} \
        <= set(storage.files(bundle))

    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in sorted((demo_corpus / "meld" / "test").glob("*.mp4"))[:3]:
        shutil.copy(clip, clips / clip.name)
    small = {"decode": {"num_cpus": 0.5, "concurrency": 1, "batch_size": 4},
             "model": {"num_cpus": 0.5, "concurrency": 1, "batch_size": 4}, "rows_per_file": 2}
    from deepfusion.config import PredictSection

    cfg = validate_config(PredictSection, small)
    out_uri = f"{s3_store}/predictions/clips"
    first = predict(bundle, clips, out_uri, cfg=cfg, write_csv=True)
    assert (first.total, first.predicted, first.stored_at) == (3, 3, out_uri)
    stored = storage.files(out_uri)
    assert sum(f.startswith("predictions/part-") for f in stored) == 2 and "predictions.csv" in stored
    assert first.shown(first.csv_path) == f"{out_uri}/predictions.csv"
    shutil.rmtree(storage.cache_root() / "s3" / "deepfusion-test" / "predictions")  # another node
    again = predict(bundle, clips, out_uri, cfg=cfg)
    assert (again.predicted, again.already_done) == (0, 3)
    assert again.table()["sample_id"].tolist() == first.table()["sample_id"].tolist()

    url = deploy(build_app(validate_config(ServeSection, {
        "fusion_checkpoint": bundle, "textile_checkpoint": bucket_run["outcome"].best_checkpoint})),
        "from_bucket", serve_port)
    try:
        listed = requests.get(f"{url}/v1/models", timeout=30).json()
        assert set(listed) == {"video", "audio_text", "fusion", "textile"}
        clip = next(clips.glob("*.mp4"))
        answer = requests.post(f"{url}/v1/emotion", files={"video": (clip.name, clip.read_bytes(), "video/mp4")},
                               data={"text": "I can't believe it!"}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["emotion"] in listed["fusion"]["labels"]
        image = next((demo_corpus / "textile").rglob("*.jpg"))
        photo = requests.post(f"{url}/v1/textile", files={"image": (image.name, image.read_bytes(), "image/jpeg")},
                              timeout=60)
        assert photo.status_code == 200, photo.text
        assert photo.json()["class"] in ["clothes_dump", "textile_billboard", "textile_dye"]
    finally:
        serve.delete("from_bucket")


def test_a_store_that_cannot_be_used_is_named_before_any_work(s3_store, capsys):
    """A missing bucket, or an endpoint nobody answers on: the job stops at its config,
    naming the key and the URI, before Ray or any worker starts."""
    import subprocess

    from helpers import BIN, REPO_ROOT, free_ports, run_cli

    code, _, err = run_cli(["train", "--config", "configs/textile.yaml",
                            "--set", "train.run.storage_path=s3://no-such-bucket/runs"], capsys)
    assert code == 2
    assert "train.run.storage_path: cannot use s3://no-such-bucket/runs: bucket 'no-such-bucket' does not exist" in err
    [dead] = free_ports(1)
    job = subprocess.run([str(BIN / "deepfusion"), "preprocess", "--config", "configs/demo.yaml",
                          "--set", "preprocess.output_dir=s3://deepfusion-test/shards"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}"})
    assert job.returncode == 2, job.stderr[-2000:]
    assert "preprocess.output_dir: cannot use s3://deepfusion-test/shards" in job.stderr
    assert "AWS_ENDPOINT_URL" in job.stderr and "Traceback" not in job.stderr

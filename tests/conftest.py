"""Shared fixtures: a real local Ray, small synthetic corpora, the real data in ../shared/data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import requests

from deepfusion.config import DemoDataConfig, PreprocessConfig, validate_config
from deepfusion.demo.image_corpus import write_image_corpus
from deepfusion.demo.meld_corpus import write_meld_corpus
from deepfusion.ray_runtime import remove_stale_bootstrap_file, use_serve_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEEPFUSION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    # Keep the many Ray Data progress lines out of test logs.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # Every Ray the tests start (here, `ray start`, jobs) runs Serve as the product does.
    use_serve_environment()
    # That mode serves HTTP from the ingress replica itself and, stopping it, waits 30 s
    # for an external load balancer to deregister it. Tests have none: each serve.shutdown
    # or redeploy would idle 30 s for nothing.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")


def start_local_ray() -> None:
    """The session's single-node Ray, sized like the 2-core machines here."""
    remove_stale_bootstrap_file()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="session")
def ray_local():
    """One real single-node Ray for the session (tests/test_multinode.py pauses it)."""
    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found: {SHARED_DATA} (set DEEPFUSION_SHARED_DATA)")
    return SHARED_DATA


SMALL_DEMO = DemoDataConfig(
    out=Path("unused"), seed=0, dialogues={"train": 10, "dev": 3, "test": 3},
    utterances_per_dialogue=(3, 5), frame_size=48, image_scale=0.05, image_size=64,
)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """A small SYNTHETIC corpus: ``meld/`` (MELD layout) and ``textile/`` (image folder)."""
    root = tmp_path_factory.mktemp("demo_corpus")
    write_meld_corpus(SMALL_DEMO, root / "meld")
    write_image_corpus(SMALL_DEMO, root / "textile")
    return root


@pytest.fixture
def corpus_copy(demo_corpus, tmp_path) -> Path:
    """A private copy of the demo corpus that a test may damage."""
    return Path(shutil.copytree(demo_corpus, tmp_path / "corpus"))


def preprocess_config(output_dir: Path, *datasets: dict, **data) -> PreprocessConfig:
    return validate_config(PreprocessConfig, {
        "output_dir": str(output_dir),
        "data": {"num_cpus": 0.5, "concurrency": 2, "batch_size": 8, **data},
        "datasets": list(datasets),
    })


def image_dataset(root: Path, name: str = "textile", **kw) -> dict:
    return {"kind": "image_folder", "name": name, "root": str(root), "target_per_class": 30,
            "image_size": 32, **kw}


def meld_dataset(root: Path, name: str = "meld", **kw) -> dict:
    return {"kind": "meld", "name": name, "root": str(root),
            "video": {"num_frames": 8, "frame_size": 32},
            "audio": {"sample_rate": 16000, "max_seconds": 3.0},
            "text": {"tokenizer": "offline", "max_length": 32}, **kw}


def read_shards(out_dir: Path, split: str) -> list[dict]:
    """Rows of one split, ``split`` restored from the Hive folder name as readers do."""
    import pyarrow.parquet as pq

    folder = Path(out_dir) / f"split={split}"
    if not folder.is_dir():
        return []
    return [row | {"split": split} for row in pq.read_table(folder).to_pylist()]


def save_backbone(folder: Path, data, model_config, seed: int) -> Path:
    """A backbone checkpoint as jobs.train writes it, with untrained weights: what the
    fusion and serving tests need is real checkpoints, not good ones (learning is tested
    elsewhere)."""
    import torch

    from deepfusion.artifacts.checkpoint import save_checkpoint
    from deepfusion.models import build_model

    torch.manual_seed(seed)
    model_config = data.resolve_model_config(model_config)
    save_checkpoint(folder, build_model(model_config), model_config=model_config, label_names=data.label_names,
                    data_info=data.checkpoint_info(), train_config={}, training_state={})
    return folder


def ray_actors(class_name_part: str, state: str | None = None) -> list[dict]:
    """Actors of this Ray cluster as the GCS records them (class name, state, pid, node id,
    dead ones too). Ray's public State API needs the dashboard, which the test Rays leave off."""
    from ray._private import state as gcs_state

    return [{"class_name": a["ActorClassName"], "state": a["State"], "pid": a["Pid"], "actor_id": a["ActorID"],
             "node_id": a["Address"]["NodeID"]}
            for a in gcs_state.actors().values()
            if class_name_part in a["ActorClassName"] and (state is None or a["State"] == state)]


def wait_for_job(client, job_id: str, timeout_s: float) -> tuple:
    """Poll a submitted Ray job to a terminal status; returns (status, logs). Fails the
    test with the job's log tail when it runs past ``timeout_s``."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED}:
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-4000:]
        time.sleep(2)
    return status, client.get_job_logs(job_id)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="session")
def served(demo_corpus, tmp_path_factory, ray_local) -> dict:
    """Checkpoints for the Serve app (both backbones, a fusion model, the textile net), with a
    ``ServeSection`` for them. Built once: tests/test_serving.py and tests/test_hostile_input.py
    each deploy them under their own configuration."""
    import torch

    from deepfusion.artifacts.checkpoint import CheckpointCard, read_card, save_fusion
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig, TextileNetConfig
    from deepfusion.config.serving import ServeSection
    from deepfusion.models.fusion import EnhancedLateFusion
    from deepfusion.preprocess.datasets import preprocess

    root = tmp_path_factory.mktemp("serving")
    preprocess(preprocess_config(root / "shards", meld_dataset(demo_corpus / "meld", name="meld"),
                                 image_dataset(demo_corpus / "textile", name="textile")))
    meld, textile = ShardDataset.open(root / "shards" / "meld"), ShardDataset.open(root / "shards" / "textile")
    video = save_backbone(root / "mimamo", meld, MimamoConfig(kind="mimamo", preset="cpu-small"), 0)
    audio_text = save_backbone(root / "lstm", meld, MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 1)
    textile_ckpt = save_backbone(root / "textile", textile, TextileNetConfig(kind="textile", preset="cpu-small"), 2)
    fusion = EnhancedLateFusion(7, video_weight=0.6)
    with torch.no_grad():
        fusion.bias.normal_(0, 0.1)
    save_fusion(root / "fusion", fusion, CheckpointCard(
        kind="enhanced_late_fusion", label_names=meld.label_names,
        hyperparameters={"video_weight": 0.6, "dropout": 0.3},
        backbones={"video_checkpoint": {"path": str(video), "sha256": read_card(video).content_hash},
                   "audio_text_checkpoint": {"path": str(audio_text), "sha256": read_card(audio_text).content_hash}},
        metrics={}, fusion_weights=[0.6, 0.4]))
    return {"root": root, "meld": meld, "textile": textile, "demo": demo_corpus,
            "cfg": validate_config(ServeSection, {
                "video_checkpoint": str(video), "audio_text_checkpoint": str(audio_text),
                "fusion_checkpoint": str(root / "fusion"), "textile_checkpoint": str(textile_ckpt),
                "limits": {"max_upload_mb": 1, "max_text_chars": 200}})}


def demo_clip(served) -> Path:
    return sorted((served["demo"] / "meld" / "train").glob("*.mp4"))[0]


@pytest.fixture
def ray_head(tmp_path):
    """A separate ``ray start --head`` on its own ports; --block ties its life to this process."""
    gcs_port, dashboard_port, agent_port, client_port = free_ports(4)
    head_log = (tmp_path / "head.log").open("w")  # the child keeps its own copy of the descriptor
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
         f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}",
         f"--ray-client-server-port={client_port}", "--min-worker-port=20000",
         "--max-worker-port=20999", "--num-cpus=2", "--disable-usage-stats",
         "--include-dashboard=true"],
        stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True,
        # as after `. .venv/bin/activate`: the job's `python` is the project's interpreter
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    head_log.close()
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            requests.get(f"{address}/api/version", timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(1)
    else:
        head.kill()
        pytest.fail(f"ray head did not start: {(tmp_path / 'head.log').read_text()[-2000:]}")
    yield address
    # `ray start --block` stops its node gracefully on SIGTERM (~30 s); the test is done
    # with it, and every process of the node is in this process group.
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)

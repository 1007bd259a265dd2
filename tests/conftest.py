"""The session's shared fixtures: one in-process Ray, one `ray start --head` that every CLI,
job-submit and deploy check joins, the small SYNTHETIC corpora and their shards (built once,
read-only: a test that writes works on a copy), the Serve app's checkpoints, and the real
data in ../shared/data. Plain helpers are in tests/helpers.py.

Tiers: a test that needs a Ray cluster, Serve or a job of its own is marked ``cluster``
(by the fixtures it uses, or explicitly); ``make test-fast`` runs the rest."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import ray
import requests
from helpers import (
    BIN,
    DEMO_MELD,
    DEMO_TEXTILE,
    SHARED_DATA,
    SMALL_DEMO,
    bootstrap_file,
    bootstrap_file_set_aside,
    free_ports,
    image_dataset,
    meld_dataset,
    preprocess_config,
    save_backbone,
    start_local_ray,
)

from deepfusion.config import validate_config
from deepfusion.demo.image_corpus import write_image_corpus
from deepfusion.demo.meld_corpus import write_meld_corpus
from deepfusion.ray_runtime import use_serve_environment

# Fixtures that start or use a Ray cluster, a Serve app or a job's own Ray node
CLUSTER_FIXTURES = {"ray_local", "ray_head", "private_node", "demo_shards", "served"}


def pytest_configure(config):
    # Keep the many Ray Data progress lines out of test logs.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # Every Ray the tests start (here, `ray start`, jobs) runs Serve as the product does.
    use_serve_environment()
    # That mode serves HTTP from the ingress replica itself and, stopping it, waits 30 s
    # for an external load balancer to deregister it. Tests have none: each serve.shutdown
    # or redeploy would idle 30 s for nothing.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    # An S3-compatible store on loopback (``s3_store``: moto's server, started on first use).
    # Like a cluster's nodes, every Ray process the session starts carries its endpoint and
    # (test) credentials in its environment, which pyarrow and boto read.
    [port] = free_ports(1)
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    # node-local mirrors of storage URIs: the session's own, like a fresh node's
    os.environ["DEEPFUSION_STORAGE_CACHE"] = tempfile.mkdtemp(prefix="deepfusion-storage-cache-")
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("DEEPFUSION_STORAGE_CACHE", "/nonexistent"), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def ray_local():
    """One real single-node Ray for the session, in this process (tests/test_multinode.py
    pauses it)."""
    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found: {SHARED_DATA} (set DEEPFUSION_SHARED_DATA)")
    return SHARED_DATA


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


@pytest.fixture(scope="session")
def demo_shards(demo_corpus, tmp_path_factory, ray_local) -> dict:
    """The demo corpus preprocessed once for the session (``meld_dataset`` and a textile
    folder at 60 images per class, 64 px): ``{"root", "meld", "textile", "results"}``.
    Read-only: every consumer writes its own outputs elsewhere."""
    from deepfusion.preprocess.datasets import preprocess

    root = tmp_path_factory.mktemp("demo_shards")
    results = preprocess(preprocess_config(root, meld_dataset(demo_corpus / "meld", **DEMO_MELD),
                                           image_dataset(demo_corpus / "textile", **DEMO_TEXTILE)))
    return {"root": root, "meld": root / "meld", "textile": root / "textile",
            "results": {result.name: result for result in results}}


@pytest.fixture(scope="session")
def served(demo_corpus, demo_shards, tmp_path_factory) -> dict:
    """Checkpoints for the Serve app (both backbones, a fusion model, the textile net), with a
    ``ServeSection`` for them. Built once: tests/test_serving.py and tests/test_hostile_input.py
    each deploy them under their own configuration."""
    import torch

    from deepfusion.artifacts.checkpoint import CheckpointCard, read_card, save_fusion
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig, TextileNetConfig
    from deepfusion.config.serving import ServeSection
    from deepfusion.models.fusion import EnhancedLateFusion

    root = tmp_path_factory.mktemp("serving")
    meld, textile = ShardDataset.open(demo_shards["meld"]), ShardDataset.open(demo_shards["textile"])
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


@pytest.fixture(scope="session")
def serve_port(ray_local):
    """The HTTP port of the session's Serve instance on the in-process Ray: modules deploy
    their applications on it (``helpers.deploy``) and delete them when done, so Serve's
    controller and proxy start once."""
    from ray import serve

    [port] = free_ports(1)
    yield port
    if ray.is_initialized():
        serve.shutdown()


# -- the session's `ray start --head` ---------------------------------------------------------

_SESSION_HEAD_GCS: list[str] = []


@pytest.fixture(scope="session")
def session_head(tmp_path_factory):
    """One ``ray start --head`` on its own ports for the session (started when a test first
    needs it): the CLI, job-submit, dashboard and deploy checks join it as users do. Its
    bootstrap file makes a plain ``python -m jobs.X`` join it, so tests whose subject is a
    node of the job's own use ``private_node``."""
    log_path = tmp_path_factory.mktemp("ray_head") / "head.log"
    gcs_port, dashboard_port, agent_port, client_port = free_ports(4)
    with log_path.open("w") as head_log:  # the child keeps its own copy of the descriptor
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
             f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}",
             f"--ray-client-server-port={client_port}", "--min-worker-port=20000",
             "--max-worker-port=20999", "--num-cpus=2", "--disable-usage-stats",
             "--include-dashboard=true"],
            stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True,
            # as after `. .venv/bin/activate`: the job's `python` is the project's interpreter
            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    address = f"http://127.0.0.1:{dashboard_port}"
    _SESSION_HEAD_GCS.append(f"127.0.0.1:{gcs_port}")
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(f"{address}/api/version", timeout=2)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL)
                pytest.fail(f"ray head did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
    yield address
    # `ray start --block` stops its node gracefully on SIGTERM (~30 s); the session is done
    # with it, and every process of the node is in this process group.
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)
    bootstrap_file().unlink(missing_ok=True)


@pytest.fixture
def session_head_gcs(session_head) -> str:
    """The session head's GCS address, which ``ray start --address`` joins a node to."""
    return _SESSION_HEAD_GCS[-1]


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory) -> str:
    """The session's S3-compatible server (moto in server mode, as Ray's own tests use) on
    the loopback port every Ray process was told of; yields a fresh bucket's URI."""
    import boto3

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"
    port = endpoint.rsplit(":", 1)[1]
    with log_path.open("w") as server_log:
        server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", port],
                                  stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(endpoint, timeout=2)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"moto server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
    boto3.client("s3").create_bucket(Bucket="deepfusion-test")
    yield "s3://deepfusion-test"
    server.kill()
    server.wait(timeout=30)


@functools.cache
def _head_headers() -> dict:
    token = subprocess.run([str(BIN / "ray"), "get-auth-token"], capture_output=True, text=True,
                           check=True).stdout.strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def ray_head(session_head):
    """The session head's dashboard address. After the test, any Serve application it left
    on the head is deleted, so the next test finds the head's CPUs free."""
    yield session_head
    headers = _head_headers()
    apps = requests.get(f"{session_head}/api/serve/applications/", headers=headers, timeout=30)
    if apps.status_code == 200 and apps.json().get("applications"):
        requests.delete(f"{session_head}/api/serve/applications/", headers=headers, timeout=120)


@pytest.fixture
def private_node():
    """A job started by this test starts a Ray node of its own (the node is what the test is
    about: a stale bootstrap file, a fake GPU, a driver killed with its node): Ray's
    bootstrap file is set aside for the test and put back after."""
    with bootstrap_file_set_aside() as path:
        yield path

"""Jobs as users run them: ``python -m jobs.X`` and ``ray job submit`` to a local head."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import free_ports, wait_for_job

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_job(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})


def tiny_image_folder(demo_corpus: Path, dest: Path, per_class: int = 8) -> Path:
    for folder in (demo_corpus / "textile").iterdir():
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            shutil.copy(image, dest / folder.name / image.name)
    return dest


def write_config(path: Path, root: Path, out: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "ray": {"num_cpus": 2},
        "preprocess": {"output_dir": str(out), "data": {"num_cpus": 0.5, "concurrency": 2},
                       "datasets": [{"kind": "image_folder", "name": "tiny", "root": str(root),
                                     "target_per_class": 10, "image_size": 32}]},
    }))
    return path


@pytest.mark.usefixtures("ray_head")
def test_preprocess_cli_joins_a_local_head_and_reruns_idempotently(demo_corpus, tmp_path):
    root = tiny_image_folder(demo_corpus, tmp_path / "images")
    (root / "textile_dye" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    config = write_config(tmp_path / "exp.yaml", root, tmp_path / "shards")
    first = run_job("jobs.preprocess", "--config", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[tiny] written in" in first.stdout
    assert "joined the running Ray cluster" in first.stderr  # the `ray start --head` above
    assert "train     18" in first.stdout  # 10 per class: 15% of 10 rounds half up to 2 -> 6 / 2 / 2
    assert "quarantined 1" in first.stdout
    again = run_job("jobs.preprocess", "--config", str(config))
    assert again.returncode == 0 and "[tiny] up to date, nothing redone" in again.stdout
    forced = run_job("jobs.preprocess", "--config", str(config), "--force")
    assert forced.returncode == 0 and "[tiny] written in" in forced.stdout


@pytest.fixture
def stale_bootstrap_file():
    """Ray's bootstrap file naming a head that is gone (as after a crash), restored after."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    original = path.read_text() if path.exists() else None
    [dead_port] = free_ports(1)  # nothing listens there
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"127.0.0.1:{dead_port}")
    yield
    if original is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(original)


@pytest.mark.usefixtures("stale_bootstrap_file")
def test_cli_starts_a_local_node_despite_a_stale_head_address(demo_corpus, tmp_path):
    root = tiny_image_folder(demo_corpus, tmp_path / "images", per_class=6)
    config = write_config(tmp_path / "exp.yaml", root, tmp_path / "shards")
    result = run_job("jobs.preprocess", "--config", str(config), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started a local Ray node" in result.stderr
    assert "[tiny] written in" in result.stdout


def test_cli_rejects_a_bad_config_naming_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("preprocess:\n  output_dir: o\n  datasets:\n    - {kind: image_folder, name: t, "
                      "root: r, image_sise: 10}\n")
    result = run_job("jobs.preprocess", "--config", str(config))
    assert result.returncode == 2
    assert "preprocess.datasets.0.image_sise: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_names_a_missing_dataset_root(tmp_path):
    config = write_config(tmp_path / "exp.yaml", tmp_path / "absent", tmp_path / "shards")
    result = run_job("jobs.preprocess", "--config", str(config))
    assert result.returncode == 2
    assert f"image folder root not found: {tmp_path / 'absent'}" in result.stderr


@pytest.mark.usefixtures("ray_local")  # token auth on in this process, as the `ray` CLI does
def test_job_submission_api_runs_a_job_to_succeeded(ray_head, demo_corpus, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    root = tiny_image_folder(demo_corpus, tmp_path / "images")
    out = tmp_path / "shards"
    client = JobSubmissionClient(ray_head)
    job_id = client.submit_job(
        # the `deepfusion` console script, as users submit it (= python -m jobs.preprocess)
        entrypoint=(f"deepfusion preprocess --config configs/demo.yaml "
                    f"--set preprocess.output_dir={out} "
                    f"--set 'preprocess.datasets=[{{kind: image_folder, name: tiny, root: {root}, "
                    f"target_per_class: 10, image_size: 32}}]'"),
        runtime_env={"working_dir": str(REPO_ROOT)},
    )
    status, logs = wait_for_job(client, job_id, timeout_s=300)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "Connecting to existing Ray cluster" in logs  # the job joined the head, not a new node
    assert "[tiny] written in" in logs
    assert (out / "tiny" / "manifest.json").is_file()


def test_a_preprocessing_job_killed_mid_write_leaves_nothing_readable_and_the_rerun_cleans_up(demo_corpus, tmp_path):
    """SIGKILL of the driver (and the Ray node it started) while it writes shards: no
    dataset appears, the half-written staging folder is never read, and the next run
    completes and removes it."""
    import signal
    import time

    from conftest import meld_dataset, preprocess_config

    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config import ConfigError

    out = tmp_path / "shards"
    cfg = preprocess_config(out, meld_dataset(demo_corpus / "meld", name="meld"))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"ray": {"num_cpus": 2}, "preprocess": cfg.model_dump(mode="json")}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    command = [sys.executable, "-m", "jobs.preprocess", "--config", str(config)]
    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list(out.glob(".meld.partial-*/split=*/*.parquet")):  # mid-write: some shards, no manifest
        assert driver.poll() is None, "the job ended before it was killed"
        assert time.monotonic() < deadline, "no shard written within 180 s"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    assert list(out.glob(".meld.partial-*")) and not (out / "meld").exists()
    with pytest.raises(ConfigError, match="meld"):
        ShardDataset.open(out / "meld")

    rerun = run_job("jobs.preprocess", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[meld] written in" in rerun.stdout
    assert ShardDataset.open(out / "meld").label_names
    assert sorted(p.name for p in out.iterdir()) == ["meld"], "the killed run's staging folder is gone"

"""Jobs as users run them: ``python -m jobs.X`` and ``ray job submit`` to a local head."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest
import ray
import yaml
from helpers import REPO_ROOT, job_env, run_cli, run_in_own_session, run_job, wait_for_job


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


@pytest.mark.usefixtures("ray_head", "ray_local")
def test_preprocess_cli_joins_a_local_head_and_reruns_idempotently(demo_corpus, tmp_path, capsys):
    root = tiny_image_folder(demo_corpus, tmp_path / "images")
    (root / "textile_dye" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    config = write_config(tmp_path / "exp.yaml", root, tmp_path / "shards")
    first = run_job("jobs.preprocess", "--config", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[tiny] written in" in first.stdout
    assert "joined the running Ray cluster" in first.stderr  # the session's `ray start --head`
    assert "train     18" in first.stdout  # 10 per class: 15% of 10 rounds half up to 2 -> 6 / 2 / 2
    assert "quarantined 1" in first.stdout
    # the same command again (here in this process: what is checked is the job, not the node)
    code, out, _ = run_cli(["preprocess", "--config", str(config)], capsys)
    assert code == 0 and "[tiny] up to date, nothing redone" in out, out
    code, out, _ = run_cli(["preprocess", "--config", str(config), "--force"], capsys)
    assert code == 0 and "[tiny] written in" in out, out


@pytest.fixture
def stale_bootstrap_file(private_node):
    """Ray's bootstrap file naming a head that is gone (as after a crash); ``private_node``
    puts the real one back after."""
    from helpers import free_ports

    [dead_port] = free_ports(1)  # nothing listens there
    private_node.parent.mkdir(parents=True, exist_ok=True)
    private_node.write_text(f"127.0.0.1:{dead_port}")
    return private_node


@pytest.mark.usefixtures("stale_bootstrap_file")
def test_cli_starts_a_local_node_despite_a_stale_head_address(demo_corpus, tmp_path):
    root = tiny_image_folder(demo_corpus, tmp_path / "images", per_class=6)
    config = write_config(tmp_path / "exp.yaml", root, tmp_path / "shards")
    result = run_job("jobs.preprocess", "--config", str(config), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started a local Ray node" in result.stderr
    assert "[tiny] written in" in result.stdout


def test_cli_rejects_a_bad_config_naming_the_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("preprocess:\n  output_dir: o\n  datasets:\n    - {kind: image_folder, name: t, "
                      "root: r, image_sise: 10}\n")
    code, _, err = run_cli(["preprocess", "--config", str(config)], capsys)
    assert code == 2
    assert "preprocess.datasets.0.image_sise: Extra inputs are not permitted" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("dataset, message", [
    ({"kind": "image_folder", "name": "t", "root": "{tmp}/absent"}, "image folder root not found: {tmp}/absent"),
    ({"kind": "meld", "name": "m", "root": "{tmp}"}, "MELD csv for split 'train' not found: {tmp}/train_sent_emo.csv"),
    ({"kind": "speech", "name": "s", "root": "{tmp}"}, "speech manifest not found: {tmp}/MANIFEST.csv"),
    ({"kind": "manifest", "name": "x", "manifest": "{tmp}/table.csv"}, "manifest not found: {tmp}/table.csv"),
])
def test_cli_names_a_missing_layout_before_ray_starts(tmp_path, capsys, dataset, message):
    """Each layout's missing root, csv or table is refused, naming it, before the job
    connects to or starts Ray (seconds a refused job would otherwise spend first)."""
    was_up = ray.is_initialized()
    dataset = {k: v.format(tmp=tmp_path) for k, v in dataset.items()}
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"preprocess": {"output_dir": str(tmp_path / "shards"),
                                                     "datasets": [dataset]}}))
    code, _, err = run_cli(["preprocess", "--config", str(config)], capsys)
    assert code == 2 and message.format(tmp=tmp_path) in err, err
    assert ray.is_initialized() == was_up, "the job started Ray before refusing its layout"


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


def test_a_driver_joining_a_cluster_ships_its_library_unless_the_job_already_does(monkeypatch):
    """What ``connect`` adds to the job's runtime env: the deepfusion package this process
    imported, as ``py_modules``; nothing when the submitted job carries ``py_modules`` (Ray
    refuses to merge two). The pipeline job test runs both on a node without the project."""
    import json

    import deepfusion
    from deepfusion.ray_runtime import library_runtime_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    shipped = library_runtime_env()
    assert shipped == {"py_modules": [str(Path(deepfusion.__file__).parent)]}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg.zip"}}))
    assert library_runtime_env() == shipped
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": "gcs://_ray_pkg.zip", "py_modules": ["gcs://_ray_pkg_lib.zip"]}}))
    assert library_runtime_env() is None


# A driver that dies (SIGKILL, with the Ray node it started: its process group) the moment
# the shards are written and before the dataset's quarantine list, manifest and publishing.
KILLED_PREPROCESS = """
import os, signal, sys
import deepfusion.preprocess.datasets as datasets
from deepfusion.config import load_config
from deepfusion.ray_runtime import connect

def die(staging, quarantined):
    os.killpg(0, signal.SIGKILL)

datasets.write_quarantine = die  # called once the shards are written, before the manifest
experiment = load_config(sys.argv[1])
connect(experiment.ray)
datasets.preprocess(experiment.preprocess)
"""


@pytest.mark.usefixtures("private_node", "ray_local")
def test_a_preprocessing_job_killed_mid_write_leaves_nothing_readable_and_the_rerun_cleans_up(
        demo_corpus, tmp_path, capsys):
    """SIGKILL of the driver (and the Ray node it started) once its shards are written, before
    the manifest: no dataset appears, the half-written staging folder is never read, and the
    next run completes and removes it."""
    from helpers import meld_dataset, preprocess_config

    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config import ConfigError

    out = tmp_path / "shards"
    cfg = preprocess_config(out, meld_dataset(demo_corpus / "meld", name="meld"))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"ray": {"num_cpus": 2}, "preprocess": cfg.model_dump(mode="json")}))
    killed = run_in_own_session([sys.executable, "-c", KILLED_PREPROCESS, str(config)], env=job_env(), timeout=300)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert list(out.glob(".meld.partial-*/split=*/*.parquet")), "the killed job wrote no shard"
    assert not (out / "meld").exists()
    with pytest.raises(ConfigError, match="meld"):
        ShardDataset.open(out / "meld")

    code, stdout, err = run_cli(["preprocess", "--config", str(config)], capsys)  # the rerun, in this process
    assert code == 0, err[-3000:]
    assert "[meld] written in" in stdout
    assert ShardDataset.open(out / "meld").label_names
    assert sorted(p.name for p in out.iterdir()) == ["meld"], "the killed run's staging folder is gone"

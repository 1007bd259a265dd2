"""Plain helpers the tests share: configs for small datasets, checkpoints of untrained
models, reading shards, Ray's actor table, waiting on jobs, free ports. No fixtures here
(those live in conftest.py); tests import what they use: ``from helpers import ...``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from deepfusion.config import DemoDataConfig, PreprocessConfig, validate_config
from deepfusion.ray_runtime import remove_stale_bootstrap_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEEPFUSION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
BIN = Path(sys.executable).parent  # the venv's console scripts: deepfusion, ray, serve

SMALL_DEMO = DemoDataConfig(
    out=Path("unused"), seed=0, dialogues={"train": 10, "dev": 3, "test": 3},
    utterances_per_dialogue=(3, 5), frame_size=48, image_scale=0.05, image_size=64,
)

# The session's shards of the demo corpus (the ``demo_shards`` fixture): what training,
# fusion, evaluation and serving read.
DEMO_MELD = {"name": "meld"}
DEMO_TEXTILE = {"name": "textile", "target_per_class": 60, "image_size": 64}


def start_local_ray() -> None:
    """The session's in-process Ray (the ``ray_local`` fixture): a single node sized like
    the 2-core machines here."""
    import ray

    remove_stale_bootstrap_file()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


def bootstrap_file() -> Path:
    """Where ``ray start --head`` (and ``ray.cluster_utils.Cluster``) record the local
    cluster: what ``address="auto"`` and a job's supervisor resolve."""
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


@contextlib.contextmanager
def bootstrap_file_set_aside():
    """Ray's bootstrap file is removed for the block and put back as it was after: a node
    started inside (a job's own, a test cluster) neither joins the session head nor leaves
    the head's record pointing elsewhere."""
    path = bootstrap_file()
    saved = path.read_text() if path.exists() else None
    path.unlink(missing_ok=True)
    try:
        yield path
    finally:
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(saved)


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


def demo_clip(served) -> Path:
    return sorted((served["demo"] / "meld" / "train").glob("*.mp4"))[0]


def ray_actors(class_name_part: str, state: str | None = None) -> list[dict]:
    """Actors of this Ray cluster as the GCS records them (class name, state, pid, node id,
    dead ones too). Ray's public State API needs the dashboard, which the test Rays leave off."""
    from ray._private import state as gcs_state

    return [{"class_name": a["ActorClassName"], "state": a["State"], "pid": a["Pid"], "actor_id": a["ActorID"],
             "node_id": a["Address"]["NodeID"]}
            for a in gcs_state.actors().values()
            if class_name_part in a["ActorClassName"] and (state is None or a["State"] == state)]


def wait_for_job(client, job_id: str, timeout_s: float) -> tuple:
    """Wait for a submitted Ray job to reach a terminal status; returns (status, logs).
    Follows the job's log stream (no polling interval to wait out); fails the test with the
    log's tail when the job runs past ``timeout_s``."""
    import asyncio

    from ray.job_submission import JobStatus

    async def follow() -> None:
        async for _ in client.tail_job_logs(job_id):  # ends when the job does
            pass

    try:
        asyncio.run(asyncio.wait_for(follow(), timeout_s))
    except TimeoutError:
        raise AssertionError(f"job {job_id} still running after {timeout_s} s:\n"
                             f"{client.get_job_logs(job_id)[-4000:]}") from None
    deadline = time.monotonic() + 30  # the status follows the log's end within moments
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"job {job_id}: log ended, status still {status}"
        time.sleep(0.2)
    return status, client.get_job_logs(job_id)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def job_env(**extra: str) -> dict:
    """The environment a job started by a test gets: no RAY_ADDRESS of this process, quiet
    Ray Data progress bars."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"} | extra


def run_job(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m <job> ...`` from the repository root, as users run it; its timeout kills
    the driver with any Ray node it started and still shows what it printed."""
    return run_in_own_session([sys.executable, "-m", *args], env=env or job_env(), timeout=timeout)


def run_in_own_session(command: list[str], env: dict, timeout: float, cwd: Path = REPO_ROOT
                       ) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose timeout kills the driver with the Ray node it started and
    still shows what it printed (a bare TimeoutExpired shows nothing)."""
    import signal

    import pytest

    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{command} still running after {timeout} s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``deepfusion <argv>`` in this process: the job joins this process's Ray (if up), and
    its exit code, stdout and stderr come back. Where a separate process proves nothing more,
    this saves a Python start, a torch import and a Ray node. The job's INFO log lines go
    to pytest's log capture (``caplog``), not stderr."""
    from jobs.cli import main

    saved_argv, saved_cwd = sys.argv[:], os.getcwd()
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    out, err = capsys.readouterr()
    return code, out, err


def deploy(app, name: str, port: int) -> str:
    """Deploy a Serve application at ``/`` on the session's Serve instance (started on
    ``port`` if this Ray has none yet); returns its base URL."""
    from ray import serve

    from deepfusion.ray_runtime import start_serve

    url = start_serve("127.0.0.1", port)
    serve.run(app, name=name, route_prefix="/")
    return url


def manifest_from_meld(meld_root: Path, table: Path, words: dict[str, str], copy_media: bool = False) -> Path:
    """A user's corpus in the manifest layout, made from a demo MELD corpus: a row per
    utterance whose emotion has a label word in ``words`` (MELD emotion -> the corpus's own
    word; the others are left out), with its mp4 and wav (relative to the table; with
    ``copy_media``, copied into ``clips/`` beside it), transcript, speaker and MELD's split.
    Returns ``table`` (a .csv)."""
    import csv
    import shutil

    rows = []
    for split, csv_name in (("train", "train"), ("val", "dev"), ("test", "test")):
        with open(meld_root / f"{csv_name}_sent_emo.csv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                word = words.get(row["Emotion"])
                if word is None:
                    continue
                stem = meld_root / csv_name / f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}"
                sample_id, media = f"{split}-{stem.name}", {}
                for kind, suffix in (("video", ".mp4"), ("audio", ".wav")):
                    file = stem.with_suffix(suffix)
                    if file.is_file() and copy_media:
                        (table.parent / "clips").mkdir(parents=True, exist_ok=True)
                        file = Path(shutil.copy(file, table.parent / "clips" / f"{sample_id}{suffix}"))
                    media[kind] = os.path.relpath(file, table.parent) if file.is_file() else ""
                rows.append({"sample_id": sample_id, **media, "text": row["Utterance"],
                             "speaker": row["Speaker"], "label": word, "split": split})
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


@contextlib.contextmanager
def browser_page():
    """A tab of Debian's Chromium driven by Playwright (Playwright's own browser downloads
    are not used); skips the test when no Chromium is installed."""
    import shutil

    import pytest

    executable = os.environ.get("DEEPFUSION_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` (what .ci/run does) or set "
                    "DEEPFUSION_CHROMIUM to a Chrome/Chromium executable to run the demo page's browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(60_000)
        try:
            yield tab
        finally:
            browser.close()


def open_demo_page(page, http: str) -> None:
    """The app's demo page, once it has listed the served models."""
    page.goto(f"{http}/")
    page.wait_for_function("!document.getElementById('models').textContent.startsWith('Loading')")
    listing = page.inner_text("#models")
    assert listing.startswith("Serving"), listing  # else the page shows why /v1/models failed


def kill_a_train_worker_after(epoch: int, record: Path, pids_by_node: dict[str, list[int]] | None = None):
    """A Ray Train callback that SIGKILLs one Train worker as soon as the controller has
    registered ``epoch``'s report and checkpoint (the workers are then in the next epoch),
    and writes what it did to ``record``. It runs on the controller, inside the report's
    handling, so no later checkpoint can be registered before the kill: no race.
    ``pids_by_node`` (node id -> every process of that node): kill the worker's whole node
    instead (its raylet, object store and workers: the machine is gone)."""

    import ray.train

    class KillAWorker(ray.train.UserCallback):
        def __init__(self):
            self.done = False

        def after_report(self, run_context, metrics, checkpoint):
            if self.done or checkpoint is None or metrics[0]["epoch"] != epoch:
                return
            from ray._private import state

            workers = sorted((a for a in state.actors().values()
                              if "TrainWorker" in a["ActorClassName"] and a["State"] == "ALIVE"),
                             key=lambda a: a["Pid"])
            victim = workers[-1]
            node = victim["Address"]["NodeID"]
            for pid in (pids_by_node[node] if pids_by_node else [victim["Pid"]]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.done = True
            record.write_text(json.dumps({"epoch": epoch, "pid": victim["Pid"], "workers": len(workers),
                                          "node": node, "checkpoint": checkpoint.path}))

    return KillAWorker()


def _mount_namespace() -> list[str]:
    """The ``unshare`` command that gives a process its own mount namespace here: as root
    with CAP_SYS_ADMIN, else inside a user namespace; the test is skipped where neither is
    allowed (a container without either), saying so."""
    import pytest

    for command in (["unshare", "--mount", "--propagation", "private"],
                    ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]):
        probe = subprocess.run([*command, "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
        if probe.returncode == 0:
            return command
    pytest.skip(f"no mount namespace can be made here (unshare: {probe.stderr.strip()})")


@contextlib.contextmanager
def node_without_these_folders(gcs_address: str, hidden: list[Path], log_path: Path, env: dict | None = None,
                               **start_args):
    """A Ray worker node joined to ``gcs_address`` that cannot see ``hidden``: its raylet
    and every process it starts live in their own mount namespace, with an empty tmpfs over
    each hidden folder, as on a machine that shares no disk with the head. The interpreter
    and its packages stay (a node's installed software), even where the venv sits inside a
    hidden folder; an editable install's source does not. ``env``: the node's environment
    (its processes inherit it); ``start_args``: more ``ray start`` options (``num_gpus=1``).
    Yields the ``ray start`` process; the node is killed after."""
    import shlex

    venv = Path(sys.prefix)
    agent, grpc, node_manager, object_manager, env_agent, metrics = free_ports(6)
    start = [str(venv / "bin" / "ray"), "start", f"--address={gcs_address}", "--block", "--disable-usage-stats",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
             f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
             f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
             "--min-worker-port=21000", "--max-worker-port=21999",
             *(f"--{key.replace('_', '-')}={value}" for key, value in start_args.items())]
    keep_venv = any(venv.is_relative_to(folder) for folder in hidden)
    script = ["set -e", "stash=$(mktemp -d)"]
    if keep_venv:
        script.append(f"mount --bind {shlex.quote(str(venv))} \"$stash\"")
    script += [f"mount -t tmpfs -o size=256m tmpfs {shlex.quote(str(folder))}" for folder in hidden]
    if keep_venv:
        script += [f"mkdir -p {shlex.quote(str(venv))}", f"mount --bind \"$stash\" {shlex.quote(str(venv))}"]
    script += ["cd /", "exec " + shlex.join(start)]
    with log_path.open("w") as log:
        node = subprocess.Popen([*_mount_namespace(), "sh", "-c", "\n".join(script)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker node did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield node
    finally:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=60)

"""cluster.yaml against Ray's own cluster-launcher schema and `ray up`'s config resolution."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from helpers import REPO_ROOT
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.util import validate_config

RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_schema_and_resolves_as_ray_up_does(cluster):
    jsonschema.validate(cluster, RAY_SCHEMA)  # the file as written
    # `ray up`'s own path: defaults filled in for the local provider, then validate_config
    resolved = _bootstrap_config(copy.deepcopy(cluster), no_config_cache=True)
    [node_type] = resolved["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(cluster["provider"]["worker_ips"])


def test_workers_advertise_their_gpu_and_the_head_none(cluster):
    """Fractional GPUs need whole GPUs declared on the workers; the head trains nothing."""
    [head_start] = [c for c in cluster["head_start_ray_commands"] if " start " in c]
    [worker_start] = [c for c in cluster["worker_start_ray_commands"] if " start " in c]
    assert "--head" in head_start and "--num-gpus=0" in head_start
    assert "--num-gpus=1" in worker_start and "--address=$RAY_HEAD_IP:6379" in worker_start
    for command in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token" in command and "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in command


def test_a_command_that_yaml_reads_as_a_mapping_is_refused():
    """The mistake this file once had: `--resources='{"gpu": 1}'` unquoted is a YAML mapping."""
    broken = yaml.safe_load("cluster_name: x\nprovider: {type: local, head_ip: 1.2.3.4, worker_ips: []}\n"
                            "worker_start_ray_commands:\n  - ray start --resources='{\"rtx3060\": 1}'\n")
    assert isinstance(broken["worker_start_ray_commands"][0], dict)
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        validate_config(broken)


# a head of its own (the node's token is what is tested); private_node keeps the session
# head's bootstrap file, which this `ray start` would otherwise overwrite
@pytest.mark.usefixtures("private_node")
def test_the_token_reaches_each_node_by_file_mount_and_ray_refuses_clients_without_it(cluster, tmp_path):
    """No shared placeholder secret: the operator's token file is mounted to Ray's default
    token path, setup stops without it, and a head started as cluster.yaml starts it
    (RAY_AUTH_MODE=token) refuses a client without the token and lets one with it in."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests
    from helpers import free_ports

    text = (REPO_ROOT / "cluster.yaml").read_text()
    assert "replace-with" not in text and "> ~/.ray/auth_token" not in text  # no token is made up on a node
    assert cluster["file_mounts"]["/home/ubuntu/.ray/auth_token"] == ".ray-auth-token"
    assert ".ray-auth-token" in cluster["rsync_exclude"]
    assert ".ray-auth-token" in (REPO_ROOT / ".gitignore").read_text().split()

    # The token setup commands, run for real on a "node" (a HOME) without the token, then with it.
    home = tmp_path / "node"
    home.mkdir()
    token_setup = [c for c in cluster["setup_commands"] if "auth_token" in c]
    env = {**os.environ, "HOME": str(home)}
    missing = subprocess.run(["bash", "-ec", "\n".join(token_setup)], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "no Ray auth token" in missing.stderr, missing.stderr
    token = os.urandom(32).hex()
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(token)  # as file_mounts copies it
    present = subprocess.run(["bash", "-ec", "\n".join(token_setup)], env=env, capture_output=True, text=True)
    assert present.returncode == 0, present.stderr
    assert (home / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600

    # A head as head_start_ray_commands starts it, finding the token where the mount put it.
    gcs, dashboard, agent, client = free_ports(4)
    bin_dir = Path(sys.executable).parent
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}", "--num-cpus=1",
         "--include-dashboard=true", "--disable-usage-stats"],
        env={**env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dashboard}/api/jobs/"
        deadline = time.monotonic() + 120
        while True:
            try:
                anonymous = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the head did not come up"
                time.sleep(1)
        wrong = requests.get(url, headers={"Authorization": "Bearer " + "0" * 64}, timeout=5)
        right = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 403, 200)
        # A driver holding the token (as a client with RAY_AUTH_TOKEN_PATH) joins and runs a task.
        token_file = tmp_path / "client-token"
        token_file.write_text(token)
        driver = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{gcs}', log_to_driver=False); "
             "print('answer', ray.get(ray.remote(lambda: 6 * 7).remote()))"],
            env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "HOME": str(tmp_path),
                 "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)},
            capture_output=True, text=True, timeout=120)
        assert "answer 42" in driver.stdout, driver.stderr[-2000:]
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)

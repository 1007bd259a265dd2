"""cluster.yaml against Ray's own cluster-launcher schema and `ray up`'s config resolution."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from conftest import REPO_ROOT
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

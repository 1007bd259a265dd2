"""The cluster files against what reads them: cluster.yaml against Ray's own cluster-launcher
schema and `ray up`'s config resolution; the KubeRay manifests against KubeRay's CRD schemas
(tests/data/kuberay); the Dockerfile, cluster.yaml and the shipped configs against each other."""

from __future__ import annotations

import copy
import json
import re
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
    assert cluster["file_mounts"]["~/.ray/auth_token"] == ".ray-auth-token"
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


def _extras(command: str) -> set[str]:
    """The extras of a ``pip install ... .[a,b]`` line."""
    match = re.search(r"""pip install [^\n]*?['"]?(?:\.|~/deepfusion)\[([a-z,]+)\]""", command)
    assert match, command
    return set(match.group(1).split(","))


def _required_extras() -> set[str]:
    """The extras the shipped cluster configs need: MLflow wherever tracking is on."""
    from deepfusion.config import ExperimentConfig, validate_config

    needed = set()
    for path in sorted((REPO_ROOT / "configs" / "paper").glob("*.yaml")):
        experiment = validate_config(ExperimentConfig, yaml.safe_load(path.read_text()), str(path))
        if experiment.tracking.tracking_uri is not None:
            needed.add("tracking")
    return needed


def test_the_image_and_cluster_yaml_install_the_extras_the_shipped_configs_need(cluster):
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    [image_install] = [line for line in dockerfile.splitlines() if line.startswith("RUN pip install") and "[" in line]
    [setup_install] = [c for c in cluster["setup_commands"] if "pip install" in c]
    required = _required_extras()
    assert required == {"tracking"}  # configs/paper/pipeline.yaml turns MLflow on
    assert _extras(image_install) == _extras(setup_install) == required
    # one image everywhere, of this version, on Ray's image of the Ray the project pins
    from deepfusion import __version__

    ray_minor = ".".join(ray.__version__.split(".")[:2])
    assert re.search(rf"^ARG RAY_IMAGE=rayproject/ray:{re.escape(ray_minor)}\.\d+-py311-gpu$", dockerfile, re.M)
    assert "torch==2.14.1 torchvision==0.29.1 --index-url" in dockerfile
    images = {cluster["docker"]["image"]} | {c["image"] for m in _manifests().values() for c in _containers(m)}
    assert images == {f"registry.example.com/deepfusion:{__version__}"}
    for manifest in _manifests().values():
        spec = manifest["spec"].get("rayClusterSpec") or manifest["spec"]["rayClusterConfig"]
        assert spec["rayVersion"].rsplit(".", 1)[0] == ray_minor


def test_cluster_yaml_keeps_artifacts_in_the_bucket_and_refuses_a_node_without_one(cluster, tmp_path):
    import os
    import subprocess

    assert "work" in cluster["rsync_exclude"] and "cluster.env" in cluster["rsync_exclude"]
    assert cluster["file_mounts"]["~/.deepfusion/cluster.env"] == "cluster.env"
    assert "cluster.env" in (REPO_ROOT / ".gitignore").read_text().split()
    for command in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]:
        if " start " in command:  # each raylet starts with the store's settings
            assert command.startswith("set -a && . ~/.deepfusion/cluster.env && set +a && ")
    # the storage check of setup, run for real on a "node" without the variable, then with it
    [check] = [c for c in cluster["setup_commands"] if "DEEPFUSION_STORAGE" in c]
    home = tmp_path / "node"
    (home / ".deepfusion").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    (home / ".deepfusion" / "cluster.env").write_text("DEEPFUSION_STORAGE=\n")
    refused = subprocess.run(["bash", "-ec", check], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "sets no DEEPFUSION_STORAGE" in refused.stderr
    example = (REPO_ROOT / "deploy" / "cluster.env.example").read_text()
    (home / ".deepfusion" / "cluster.env").write_text(example)
    assert subprocess.run(["bash", "-ec", check], env=env).returncode == 0
    # the shipped cluster configs write every artifact under DEEPFUSION_STORAGE
    from deepfusion.config import ExperimentConfig, validate_config
    from deepfusion.config.loading import storage_uris

    os.environ["DEEPFUSION_STORAGE"] = "s3://team-bucket/deepfusion"
    try:
        pipeline = validate_config(ExperimentConfig, yaml.safe_load(
            (REPO_ROOT / "configs" / "paper" / "pipeline.yaml").read_text()))
        uris = dict(storage_uris(pipeline))
        stages = [validate_config(ExperimentConfig, yaml.safe_load(p.read_text()))
                  for p in sorted((REPO_ROOT / "configs" / "paper").glob("*.yaml")) if p.name != "pipeline.yaml"]
    finally:
        del os.environ["DEEPFUSION_STORAGE"]
    assert uris == {"preprocess.output_dir": "s3://team-bucket/deepfusion/shards",
                    "pipeline.state_dir": "s3://team-bucket/deepfusion/pipeline"}
    stage_uris = {key for stage in stages for key, _ in storage_uris(stage)}
    assert {"train.data", "train.run.storage_path", "fusion.data", "fusion.cache_dir", "fusion.search.storage_path",
            "fusion.export_dir", "fusion.video_checkpoint", "serve.fusion_checkpoint"} <= stage_uris


# -- KubeRay -------------------------------------------------------------------------------

KUBERAY = REPO_ROOT / "tests" / "data" / "kuberay"


def _manifests() -> dict[str, dict]:
    return {name: yaml.safe_load((REPO_ROOT / "deploy" / "kuberay" / f"{name}.yaml").read_text())
            for name in ("rayjob", "rayservice")}


def _containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec") or manifest["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def _strict(schema):
    """A CRD's structural schema as the API server applies it with strict field validation
    (kubectl's default): an object that lists its properties admits no others."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_schema(plural: str) -> dict:
    crd = json.loads((KUBERAY / f"ray.io_{plural}.v1.json").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def test_kuberay_manifests_validate_against_kuberays_crds():
    manifests = _manifests()
    for name, plural, kind in (("rayjob", "rayjobs", "RayJob"), ("rayservice", "rayservices", "RayService")):
        manifest = manifests[name]
        assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", kind)
        jsonschema.validate(manifest, _crd_schema(plural))
    # the check bites: a misspelt field is refused, as the API server refuses it
    broken = copy.deepcopy(manifests["rayjob"])
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError, match="'replica' was unexpected"):
        jsonschema.validate(broken, _crd_schema("rayjobs"))


def test_kuberay_clusters_match_cluster_yaml_and_fit_the_configs_fractional_gpus(cluster):
    from deepfusion.config import ExperimentConfig, validate_config

    specs = {name: m["spec"].get("rayClusterSpec") or m["spec"]["rayClusterConfig"] for name, m in _manifests().items()}
    for spec in specs.values():
        assert spec["authOptions"] == {"mode": "token"}
        assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
        [group] = spec["workerGroupSpecs"]
        [worker] = group["template"]["spec"]["containers"]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 == worker["resources"]["requests"]["nvidia.com/gpu"]
        assert group["rayStartParams"]["num-gpus"] == "1"
        assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {"rtx3060": 1}
        assert group["replicas"] == len(cluster["provider"]["worker_ips"])
        for container in _containers({"spec": {"rayClusterSpec": spec}}):
            assert {"secretRef": {"name": "deepfusion-storage"}} in container["envFrom"]
    job, service = specs["rayjob"], specs["rayservice"]
    # the job's driver, on the head pod, reads the corpus: a read-only claim at /data, where
    # the paper pipeline's DEEPFUSION_MELD / DEEPFUSION_TEXTILE point
    head = job["headGroupSpec"]["template"]["spec"]
    assert head.pop("volumes") == [{"name": "corpus", "persistentVolumeClaim": {"claimName": "deepfusion-corpus",
                                                                                "readOnly": True}}]
    [head_container] = head["containers"]
    assert head_container.pop("volumeMounts") == [{"name": "corpus", "mountPath": "/data", "readOnly": True}]
    corpus_env = {e["name"]: e["value"] for e in head_container["env"]}
    assert corpus_env == {"DEEPFUSION_MELD": "/data/MELD.Raw", "DEEPFUSION_TEXTILE": "/data/visual_pollution"}
    pipeline_file = (REPO_ROOT / "configs" / "paper" / "pipeline.yaml").read_text()
    assert all("${" + name + ":-" in pipeline_file for name in corpus_env)
    strip = lambda s: json.loads(json.dumps(s).replace(', {"containerPort": 8000, "name": "serve"}', ""))  # noqa: E731
    for part in (job, service):
        for container in _containers({"spec": {"rayClusterSpec": part}}):
            container.pop("env", None)
    assert strip(service) == strip(job)  # one cluster shape: the service adds its port and token only
    gpus = sum(g["replicas"] for g in job["workerGroupSpecs"])
    # the paper's fractional asks pack onto these whole GPUs
    for name in ("textile", "mimamo", "multimodal_lstm"):
        train = validate_config(ExperimentConfig, yaml.safe_load(
            (REPO_ROOT / "configs" / "paper" / f"{name}.yaml").read_text())).train
        assert 0 < train.scaling.gpus_per_worker <= 1
        assert train.scaling.num_workers * train.scaling.gpus_per_worker <= gpus
    serve_cfg = validate_config(ExperimentConfig, yaml.safe_load(
        (REPO_ROOT / "configs" / "paper" / "serve.yaml").read_text())).serve
    asked = [serve_cfg.video.num_gpus, serve_cfg.audio_text.num_gpus, serve_cfg.textile.num_gpus]
    assert all(0 < g < 1 for g in asked) and sum(asked) <= gpus


def test_the_rayservice_serves_the_shipped_serve_config():
    from deepfusion.config import ExperimentConfig, load_config

    service = _manifests()["rayservice"]
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    shipped = yaml.safe_load((REPO_ROOT / "serve" / "config.yaml").read_text())
    # the two changes a pod needs, and nothing else
    assert embedded["http_options"].pop("host") == "0.0.0.0"
    shipped["http_options"].pop("host")
    [app], [shipped_app] = embedded["applications"], shipped["applications"]
    args, shipped_args = app.pop("args"), shipped_app.pop("args")
    assert embedded == shipped and set(shipped_args) == {"config"}
    image_root = "/home/ray/deepfusion"  # the Dockerfile's WORKDIR, where configs/ is copied
    assert f"WORKDIR {image_root}" in (REPO_ROOT / "Dockerfile").read_text()
    assert args["workdir"] == image_root and args["config"].startswith(image_root + "/")
    config = REPO_ROOT / args["config"][len(image_root) + 1:]
    assert config.is_file(), config
    experiment = load_config(config, args["set"], model=ExperimentConfig, base=REPO_ROOT)
    assert experiment.serve.auth.token_env == "DEEPFUSION_SERVE_TOKEN"
    for container in _containers(service):  # every pod can run the ingress: every pod has the token
        assert {"name": "DEEPFUSION_SERVE_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "deepfusion-serve-token", "key": "token"}}} in container["env"]
    job = _manifests()["rayjob"]["spec"]["entrypoint"].split()
    assert job[:3] == ["python", "-m", "jobs.pipeline"]
    assert (REPO_ROOT / job[job.index("--config") + 1][len(image_root) + 1:]).is_file()

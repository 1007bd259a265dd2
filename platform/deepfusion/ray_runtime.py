"""Reaching Ray the way ``ray`` users expect: join a running cluster, else start a local one.

Private Ray APIs used in the library (each pinned by a test, so a Ray upgrade that moves
one fails loudly rather than silently):

- ``ray._common.utils.get_ray_address_file`` (here): where ``ray start --head`` records
  its address. Needed to tell a live local head from a dead one's leftover file, which
  ``ray.init()`` would otherwise wait on forever. Public replacement: none yet; an
  explicit ``RAY_ADDRESS`` / ``ray.address`` in the config skips it entirely.
- Ray Train's internal logger names (``quiet_ray_train_reports``, here): only to lower
  two chatty INFO loggers. Public replacement: ``RAY_TRAIN_*`` logging configuration,
  should Ray Train expose per-logger levels; an ImportError leaves logging as it is.
- ``ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR`` (``library_runtime_env``,
  here): the variable through which ``ray job submit`` hands its runtime env to the
  driver, read to tell whether the job already ships ``py_modules``. Public replacement:
  none; ``ray.get_runtime_context().runtime_env`` needs a connected driver.
- ``ray.serve._private.constants`` (``serving.app.build_app``): read-only, to warn when
  ``ray.serve`` was imported before the throughput mode was set. Public replacement:
  none; dropping the check only loses the warning.
- ``ray.serve.context._get_global_client`` (``start_serve``, here): the HTTP options of
  the Serve instance actually running, which ``serve.start`` ignores when Serve is up
  already. Public replacement: Serve's REST API (``GET /api/serve/applications/``), which
  needs the dashboard's address and token.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import ray

from deepfusion import storage
from deepfusion.config import DataResources, RayConfig

log = logging.getLogger(__name__)

# Ray Serve's documented high-throughput mode (Ray >= 2.55): gRPC between deployments,
# replicas serving HTTP directly, user code and the router on the replica's event loop,
# buffered request logs. It cut the Serve app's overhead from 13 to 4 ms here
# (docs/benchmarks.md). Serve reads it at import in every process, so it must be in the
# environment Ray starts with: set here for nodes this code starts, by `make serve` for
# `serve run`, and on `ray start` in cluster.yaml. RAY_SERVE_THROUGHPUT_OPTIMIZED=0 turns it off.
SERVE_ENVIRONMENT = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def serve_environment() -> dict[str, str]:
    """``SERVE_ENVIRONMENT`` under what this process's environment already sets."""
    return {name: os.environ.get(name, value) for name, value in SERVE_ENVIRONMENT.items()}


def use_serve_environment() -> None:
    """Put ``SERVE_ENVIRONMENT`` into this process's environment (keeping what is set).
    Called explicitly, never on import: by ``connect``, ``app_builder``, the pipeline's
    serve stage and (through ``python -m deepfusion.ray_runtime serve-env``) ``make serve``."""
    os.environ.update(serve_environment())


def start_serve(host: str, port: int, request_timeout_s: float | None = None) -> str:
    """Start Serve's HTTP proxies at ``host:port`` (if Serve is not up on this cluster yet)
    and return the base URL clients reach it at.

    Serve's HTTP options are cluster-wide and fixed once it runs: a cluster where Serve is up
    on another port keeps it (Ray warns and ignores the new options). The app then goes there,
    and the URL returned says so, rather than one nothing listens on.
    """
    from ray import serve
    from ray.serve.context import _get_global_client

    options = {"host": host, "port": port}
    if request_timeout_s is not None:
        options["request_timeout_s"] = request_timeout_s
    serve.start(http_options=options)
    running = _get_global_client().http_config
    if (running.host, running.port) != (host, port):
        log.warning("Serve already runs on this cluster at %s:%s (not %s:%s as asked); the app is deployed "
                    "there. Its HTTP options change only with a new Serve instance (`serve shutdown`).",
                    running.host, running.port, host, port)
    # a proxy bound to every interface is reached at the host the caller named
    reach = host if running.host in (host, "0.0.0.0", "::") else running.host
    return f"http://{reach}:{running.port}"


def local_head_address() -> str | None:
    """The address of a ``ray start --head`` on this machine, if one is alive.

    Ray records the last head it started in a bootstrap file and ``ray.init()`` follows
    it; when that head died uncleanly the file stays, and Ray then waits on the dead
    address indefinitely. Only an address where something accepts connections counts.
    """
    from ray._common.utils import get_ray_address_file  # Ray's own bootstrap file location

    try:
        address = Path(get_ray_address_file(None)).read_text().strip()
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1.0):
            return address
    except (OSError, ValueError):
        return None


def remove_stale_bootstrap_file() -> None:
    from ray._common.utils import get_ray_address_file

    if local_head_address() is None:
        Path(get_ray_address_file(None)).unlink(missing_ok=True)


def library_runtime_env() -> dict | None:
    """The runtime env that sends this process's ``deepfusion`` package to the cluster's
    workers (``py_modules``); None when the job's own runtime env already names
    ``py_modules`` (``ray job submit --runtime-env deploy/runtime_env.yaml``): Ray refuses
    to merge two, and the job's copy is the same code the driver imported."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    job_config = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR) or "{}")
    if (job_config.get("runtime_env") or {}).get("py_modules"):
        return None
    return {"py_modules": [str(Path(__file__).parent)]}  # this module's package: deepfusion


def connect(cfg: RayConfig = RayConfig()) -> None:
    """Join ``cfg.address`` / ``RAY_ADDRESS`` / a live local head; else start a node.

    Under ``ray job submit`` the driver finds its cluster through ``RAY_ADDRESS``; a plain
    ``python -m jobs.X`` joins a head started with ``ray start --head`` on this machine,
    and otherwise starts a private node sized by ``cfg.num_cpus``/``cfg.num_gpus``. A job
    joining a cluster sends its deepfusion package along (``cfg.ship_library``): a node
    that shares no disk with the driver runs the same code.
    """
    use_serve_environment()  # before anything imports ray.serve, and inherited by a node started here
    if ray.is_initialized():
        return
    explicit = cfg.address or os.environ.get("RAY_ADDRESS")
    runtime_env = library_runtime_env() if cfg.ship_library else None
    if explicit:
        ray.init(address=explicit, runtime_env=runtime_env)
        log.info("joined the running Ray cluster at %s", explicit)
    elif head := local_head_address():
        # "auto" resolves to the same head; unlike an explicit address it also picks up
        # the local auth token (Ray >= 2.59 turns token auth on for local heads).
        ray.init(address="auto", runtime_env=runtime_env)
        log.info("joined the running Ray cluster at %s", head)
    else:
        # The bootstrap file, if any, names a dead head: remove it, or Ray's own helpers
        # that locate "the local cluster" (Train's placement-group cleaner, the State
        # API) chase it and time out. "local": a new node either way.
        remove_stale_bootstrap_file()
        ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
        log.info("started a local Ray node")


# Every Ray node carries its id as this label; selecting on it pins work to one node (what
# Ray Data itself does for ``local://`` reads, in place of a hard NodeAffinitySchedulingStrategy).
NODE_ID_LABEL = "ray.io/node-id"


def on_this_node() -> dict:
    """Ray remote args that keep a task or actor on this process's node (a hard constraint:
    it waits for room there rather than run where the files it needs are missing)."""
    return {"label_selector": {NODE_ID_LABEL: ray.get_runtime_context().get_node_id()}}


def reading_local_files(data: DataResources) -> dict:
    """Ray remote args for the decoders of a corpus's local files: on the driver's node,
    which has them, unless ``data.decode_on`` says every node mounts them."""
    return on_this_node() if data.decode_on == "driver_node" else {}


def writing_to(folder: storage.Location) -> dict:
    """Ray remote args for tasks that write into ``folder``: a local folder is this node's
    (a task elsewhere would write to its own node's disk); a storage URI is reached anywhere."""
    return {} if storage.is_uri(folder) else on_this_node()


def quiet_ray_train_reports() -> None:
    """Ray Train logs, from every worker and at INFO, each report's whole metrics dict and
    each checkpoint path: two long lines per epoch around our one-line epoch summary."""
    try:
        from ray.train._internal import storage as v1_storage
        from ray.train.v2._internal.execution import context as v2_context
        from ray.train.v2._internal.execution import storage as v2_storage
    except ImportError:  # other Ray versions: keep their logging as it is
        return
    # context.py names its logger by file path, not module
    for name in (v2_context.__file__, v2_storage.__name__, v1_storage.__name__):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["serve-env"]:
        sys.exit("usage: python -m deepfusion.ray_runtime serve-env   (prints NAME=value lines for `env`)")
    print(" ".join(f"{name}={value}" for name, value in serve_environment().items()))

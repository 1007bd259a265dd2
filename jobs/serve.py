"""Deploy the Serve app on the checkpoints a config's ``serve`` section names (a fusion model
and its backbones, one backbone alone, an image classifier, or emotion and images), and keep it up.

    deepfusion serve --config configs/serve.yaml                  # until Ctrl-C (= make serve)
    deepfusion serve --config configs/serve.yaml --detach         # onto a running cluster, then return
    deepfusion serve --config configs/serve.yaml --write-serve-config /srv/deepfusion_serve.yaml

The HTTP proxy binds ``serve.http_host:serve.http_port`` (a Serve already running keeps its
own, and the printed address says which). ``--detach`` leaves the app on the cluster it
joined (``ray.address`` / ``RAY_ADDRESS``, or the head ``ray start --head`` started on this
machine; ``serve status``, ``serve shutdown``); without a cluster to join the app would end
with this process, so it is refused. ``--write-serve-config`` writes a Ray Serve config file for ``serve deploy`` /
``serve run`` with the experiment config and its folder as absolute paths, so it works
from any folder and on any node that has the same paths.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray
import yaml

from deepfusion.config import ConfigError, load_config
from deepfusion.ray_runtime import connect, local_head_address, start_serve
from jobs._cli import job_parser, parse_job_args, run_job

APP_NAME = "deepfusion"


def serve_config_file(config: str, overrides: list[str], serve) -> dict:
    """A Serve config file (what ``serve/config.yaml`` is) with absolute paths."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": serve.http_host, "port": serve.http_port,
                         "request_timeout_s": serve.request_timeout_s},
        "applications": [{
            "name": APP_NAME, "route_prefix": "/", "import_path": "deepfusion.serving.app:app_builder",
            "args": {"config": str(Path(config).resolve()), "set": list(overrides), "workdir": os.getcwd()},
        }],
    }


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--detach", action="store_true",
                        help="deploy onto the running cluster (ray.address / RAY_ADDRESS) and return")
    parser.add_argument("--write-serve-config", metavar="FILE", type=Path,
                        help="write a Serve config file for `serve deploy FILE` (absolute paths) and exit")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("serve", args.config)
    if args.write_serve_config:
        args.write_serve_config.parent.mkdir(parents=True, exist_ok=True)
        args.write_serve_config.write_text(
            "# Written by `deepfusion serve --write-serve-config`; deploy with `serve deploy` from any folder.\n"
            + yaml.safe_dump(serve_config_file(args.config, args.overrides, cfg), sort_keys=False))
        print(f"wrote {args.write_serve_config}: serve deploy {args.write_serve_config}")
        return 0
    if args.detach and not (experiment.ray.address or os.environ.get("RAY_ADDRESS") or local_head_address()
                            or ray.is_initialized()):
        raise ConfigError("--detach: no cluster to leave the app on; start one (`ray start --head`), or set "
                          "RAY_ADDRESS or ray.address to one")
    connect(experiment.ray)  # sets Serve's environment before ray.serve is imported
    from ray import serve

    from deepfusion.serving.app import build_app

    url = start_serve(cfg.http_host, cfg.http_port, cfg.request_timeout_s)
    try:
        serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
        print(f"deepfusion is served at {url} (POST /v1/emotion, POST /v1/textile, GET /v1/models, /docs)"
              + ("" if args.detach else "; Ctrl-C stops it"), flush=True)
        if args.detach:
            return 0
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if args.detach:
            raise
        print("stopping the deepfusion app", flush=True)
        # This app only (other apps of a cluster stay); not waiting for its replicas' drain.
        serve.delete(APP_NAME, _blocking=False)
    return 0


if __name__ == "__main__":
    run_job(main)

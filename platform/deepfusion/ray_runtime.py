"""Reaching Ray the way ``ray`` users expect: join a running cluster, else start a local one."""

from __future__ import annotations

import logging
import os

import ray

from deepfusion.config import RayConfig

log = logging.getLogger(__name__)


def connect(cfg: RayConfig = RayConfig()) -> None:
    """Join ``cfg.address`` / ``RAY_ADDRESS`` / a local ``ray start`` head; else start a node.

    Under ``ray job submit`` the driver finds its cluster through ``RAY_ADDRESS``; a plain
    ``python -m jobs.X`` joins a head started with ``ray start --head`` on this machine,
    and otherwise starts a private node sized by ``cfg.num_cpus``/``cfg.num_gpus``.
    """
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    try:
        ray.init(address="auto")
        log.info("joined the running Ray cluster on this machine")
    except ConnectionError:
        # "local": never follow a stale address file left by a head that is gone.
        ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
        log.info("started a local Ray node")

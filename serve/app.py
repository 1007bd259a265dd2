"""The Serve application's entry point for ``serve run`` / ``serve deploy`` (serve/config.yaml).

    serve run serve/config.yaml
    serve run serve.app:build config=configs/serve.yaml

``args.config`` names the experiment YAML whose ``serve`` section lists the checkpoints
and deployment sizes; the application itself is ``deepfusion.serving.app``.
"""

from __future__ import annotations

from deepfusion.config import load_config
from deepfusion.serving.app import build_app


def build(args: dict):
    config = args.get("config", "configs/serve.yaml")
    overrides = args.get("set", [])
    return build_app(load_config(config, [overrides] if isinstance(overrides, str) else overrides)
                     .require("serve", config))

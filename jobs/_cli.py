"""What every job's command line shares: --config, --set overrides, clean error exits."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from deepfusion.config import ConfigError
from deepfusion.preprocessing import MediaError
from deepfusion.sources import LayoutError


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="experiment YAML file (configs/...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. output_dir=/tmp/x")
    return parser


def run_job(main: Callable[[], int]) -> None:
    """Run ``main``; user errors (config, layout) exit 2 with their message, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(main())
    except (ConfigError, LayoutError, MediaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

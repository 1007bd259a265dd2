"""What every job's command line shares: --config, --set overrides, clean error exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from deepfusion.config import ConfigError
from deepfusion.media import MediaError
from deepfusion.pretrained import ModelWeightsUnavailable, TextModelUnavailable
from deepfusion.sources import LayoutError
from deepfusion.splits import NotEnoughImages
from deepfusion.storage import StorageError

# Errors in what the user gave (config, data layout, model names): a message, exit 2.
# Anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, LayoutError, MediaError, ModelWeightsUnavailable, NotEnoughImages, StorageError,
               TextModelUnavailable)


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML file (configs/...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. output_dir=/tmp/x")
    parser.add_argument("--workdir", metavar="DIR",
                        help="run in DIR: the config's relative paths (work/...) resolve there. Under "
                             "`ray job submit --working-dir .` a job otherwise runs in a temporary copy "
                             "of the code, and its outputs would vanish with it")
    return parser


def parse_job_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse; with ``--workdir``, make ``--config`` absolute and move into the folder."""
    args = parser.parse_args()
    if args.workdir:
        args.config = os.path.abspath(args.config)
        os.makedirs(args.workdir, exist_ok=True)
        os.chdir(args.workdir)
    return args


def run_job(main: Callable[[], int]) -> None:
    """Run ``main``; user errors exit 2 with their message, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(main())
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

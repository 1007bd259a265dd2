"""The ``deepfusion`` command: one subcommand per job, with the job's own options.

    deepfusion train --config configs/textile.yaml      # = python -m jobs.train --config ...
    deepfusion predict --help
    ray job submit --working-dir . -- deepfusion pipeline --config configs/demo.yaml --workdir $PWD
"""

from __future__ import annotations

import importlib
import sys

from deepfusion import __version__

# subcommand -> the job module it runs (``python -m <module>`` takes the same options)
COMMANDS: dict[str, str] = {
    "make-demo-data": "jobs.make_demo_data",
    "preprocess": "jobs.preprocess",
    "train": "jobs.train",
    "tune": "jobs.tune_fusion",
    "compare-fusion": "jobs.compare_fusion",
    "evaluate": "jobs.evaluate",
    "evaluate-faces": "jobs.evaluate_faces",
    "ensemble": "jobs.ensemble",
    "average-checkpoints": "jobs.average_checkpoints",
    "predict": "jobs.predict",
    "export": "jobs.export",
    "crossval": "jobs.crossval",
    "pipeline": "jobs.pipeline",
    "serve": "jobs.serve",
}


def usage() -> str:
    lines = [f"usage: deepfusion {{{','.join(COMMANDS)}}} [options]   (deepfusion <command> --help)", "",
             f"deepfusion {__version__}: multimodal deep-fusion experiments on Ray.", "", "commands:"]
    for name, module in COMMANDS.items():
        summary = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<15} {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from jobs._cli import run_job

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"deepfusion {__version__}")
        sys.exit(0)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"deepfusion: unknown command {name!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    job = importlib.import_module(COMMANDS[name])
    sys.argv = [f"deepfusion {name}", *rest]  # argparse names the command in usage and errors
    run_job(job.main)


if __name__ == "__main__":
    main()

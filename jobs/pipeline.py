"""The whole methodology in one job: data -> preprocess -> backbones -> fusion search -> report -> Serve.

    python -m jobs.pipeline --config configs/demo.yaml [--redo STAGE ...] [--set KEY=VALUE ...]

Stages whose inputs (config and the content hashes of what they read) are unchanged
since their last run are skipped; an interrupted stage resumes from its checkpoints.
``--redo`` runs a stage from scratch: demo_data, preprocess, train/<run name>, fusion, all.
"""

from __future__ import annotations

from pathlib import Path

from deepfusion.config import load_config
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--redo", action="append", default=[], metavar="STAGE",
                        help="run this stage from scratch (repeatable; 'all' for every stage)")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    from deepfusion.workflows.pipeline_plan import plan_pipeline

    plan = plan_pipeline(experiment, Path(args.config))
    connect(experiment.ray)
    from deepfusion.workflows.pipeline import pipeline
    from deepfusion.workflows.pipeline_report import comparison_table

    run = pipeline(plan, redo=frozenset(args.redo))
    summary = run.summary
    print()
    print(f"{'stage':<24} {'status':<11} {'wall s':>8}  detail")
    for s in run.stages:
        print(f"{s.stage:<24} {s.status:<11} {s.wall_s:>8.1f}  {s.detail}")
    print()
    if summary["synthetic"]:
        print("Test split of the SYNTHETIC demo corpora (this shows the plumbing works, not model quality):")
    print("\n".join(comparison_table(summary)))
    print()
    artifacts = summary["artifacts"]
    print(f"report:          {artifacts['report']}")
    for key, label in (("fusion_report", "fusion report"), ("tune_results", "Tune results"),
                       ("optuna_study", "Optuna study"), ("fusion_checkpoint", "fusion checkpoint")):
        if key in artifacts:
            print(f"{label + ':':<16} {artifacts[key]}")
    for path in artifacts.get("plots", []):
        print(f"plot:            {path}")
    for backbone in summary["backbones"]:
        print(f"checkpoint:      {backbone['checkpoint']}  (confusion matrix: {backbone['confusion_png']}, "
              f"curves: {backbone['curves_png']})")
        if backbone.get("random_init"):
            print(f"  random-init:   {backbone['run']}: {', '.join(backbone['random_init'])} started from random "
                  f"weights, not pretrained ones")
    for what, command in summary["watch"].items():
        print(f"browse:          {command}    # {what}")
    if run.serve_response is not None:
        answer = run.serve_response["response"]
        print(f"serve:           {run.serve_response['request']['sample']} -> {answer['emotion']} "
              f"(confidence {answer['confidence']:.3f}; true: {run.serve_response['request']['true_emotion']})")
    return 0


if __name__ == "__main__":
    run_job(main)

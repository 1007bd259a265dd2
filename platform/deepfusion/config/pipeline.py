"""The ``pipeline`` section: which experiment files make up the one-command pipeline.

The pipeline reuses the stage files users already run one by one (``configs/textile.yaml``,
``configs/fusion.yaml``...): each stage names its file and, optionally, ``--set`` style
overrides for it. Stage files are found relative to the pipeline file's folder (as an
include would be); every other path, as in any config, is relative to the working folder.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from deepfusion.config.base import StoragePath, StrictModel


class StageFile(StrictModel):
    """Another experiment file, run as one stage of the pipeline."""

    config: Path
    # Applied to that file as `--set` would be, e.g. ["train.epochs=10"].
    overrides: list[str] = []

    @field_validator("overrides")
    @classmethod
    def _assignments(cls, overrides: list[str]) -> list[str]:
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form dotted.key=value")
        return overrides


class ServeStage(StageFile):
    """Deploy the Serve app after the models are ready and send it one request."""

    deploy: bool = True
    # Leave the application running when the pipeline ends (else it is deleted again).
    keep_running: bool = False
    # Where to send the check request; the app's HTTP address on the driver's node.
    url: str = "http://127.0.0.1:8000"
    ready_timeout_s: float = Field(300.0, gt=0)


class PipelineConfig(StrictModel):
    # Stage records (what each stage was run from, the hashes of what it made) and the report.
    state_dir: StoragePath = Field(Path("work/pipeline"), validate_default=True)  # or s3://bucket/pipeline
    # Write the SYNTHETIC demo corpora first (needs a demo_data section beside this one).
    make_demo_data: bool = False
    # Preprocess with this file's own preprocess section first.
    preprocess: bool = True
    train: list[StageFile] = Field(min_length=1)
    fusion: StageFile | None = None
    serve: ServeStage | None = None

"""The ``predict`` section: how batch prediction (``jobs.predict``, ``jobs.evaluate``) sizes its workers."""

from __future__ import annotations

from pydantic import Field

from deepfusion.config.base import StrictModel
from deepfusion.config.preprocess import MediaLimits
from deepfusion.config.resources import DataResources


class ModelActors(StrictModel):
    """The Ray Data actors that hold the models: each loads the checkpoint(s) once and
    takes ``batch_size`` decoded rows at a time. ``num_gpus: 0.5`` puts two on one GPU."""

    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    concurrency: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    # torch's threads in each actor. None: Ray's default, one per whole CPU asked for.
    torch_threads: int | None = Field(None, ge=1)


class PredictSection(StrictModel):
    """Decoding workers (the ingestion decoders), then the model actors."""

    decode: DataResources = DataResources()
    model: ModelActors = ModelActors()
    # What decoding one file may cost; a file over a cap is quarantined with the reason.
    limits: MediaLimits = MediaLimits()
    # Rows per Parquet file of predictions, written as they come: a killed run keeps every
    # finished file, and a rerun predicts only the samples no file holds.
    rows_per_file: int = Field(64, ge=1)

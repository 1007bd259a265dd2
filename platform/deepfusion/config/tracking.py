"""The ``tracking`` section: where training curves and experiment records go.

TensorBoard event files are always written (cheap, beside each run's checkpoints).
MLflow is opt-in: ``tracking: {mlflow: true}`` records every backbone run and fusion
trial in a SQLite store under ``work/mlflow`` (MLflow 3 no longer accepts its old
folder store), ``tracking: {mlflow_uri: http://host:5000}`` in a tracking server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import Field, model_validator

from deepfusion.config.base import StrictModel, WorkPath


class TrackingConfig(StrictModel):
    # Per-epoch curves of every Ray Train run in <run_dir>/tensorboard/{train,val}.
    tensorboard: bool = True
    # MLflow: off unless asked for; naming a mlflow_uri turns it on.
    mlflow: bool = False
    # Any MLflow tracking URI (http://..., sqlite:///..., databricks); None: the local store.
    mlflow_uri: str | None = None
    # The local store: <local_store>/mlflow.db, artifacts in <local_store>/artifacts.
    local_store: WorkPath = Field(Path("work/mlflow"), validate_default=True)
    # The MLflow experiment every run of this file goes to (a pipeline: all its stages).
    experiment: str = Field("deepfusion", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _uri_turns_mlflow_on(cls, data):
        if isinstance(data, dict) and data.get("mlflow_uri") is not None:
            data = {**data, "mlflow": True}  # a named tracking server wins over a file's `mlflow: false`
        return data

    @model_validator(mode="after")
    def _mlflow_is_installed(self):
        # Checked when the config is read, not at the first run record minutes into a job.
        if self.mlflow and not _installed("mlflow"):
            raise ValueError("tracking.mlflow is on but MLflow is not installed in this environment: "
                             "pip install -e '.[tracking]' (make test's environment has it)")
        return self

    @property
    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI, or None when MLflow is off."""
        if not self.mlflow:
            return None
        return self.mlflow_uri or f"sqlite:///{Path(self.local_store) / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts: the local store's folder for the local store."""
        return None if self.mlflow_uri else (Path(self.local_store) / "artifacts").as_uri()


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a module stub without a spec
        return False

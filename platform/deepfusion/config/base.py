"""The base of every config section, and the error every bad config raises."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, ValidationInfo, WithJsonSchema
from pydantic.functional_validators import PlainValidator

from deepfusion.locations import location


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base") or Path.cwd()
    return path if path.is_absolute() else Path(base) / path


# A file or folder named in a config: relative to the folder the job runs in (or the
# ``base`` a loader passes, e.g. the Serve config's ``workdir``), and made absolute when
# the config is loaded. Ray's workers are other processes, maybe on other
# nodes or in a job's working_dir, and do not share the driver's working folder.
WorkPath = Annotated[Path, AfterValidator(_absolute)]


def _location(value, info: ValidationInfo):
    if not isinstance(value, (str, Path)):
        raise ValueError("expected a folder path or a storage URI (s3://bucket/prefix)")
    return location(value, (info.context or {}).get("base"))


# Where an artifact is written or read: a local folder (a WorkPath) or a storage URI such
# as ``s3://bucket/prefix`` or ``gs://bucket/prefix``, kept as given (``deepfusion.locations``).
# On a cluster whose nodes share no disk, every artifact a later stage or another node reads
# belongs on a URI.
StoragePath = Annotated[Path | str, PlainValidator(_location), PlainSerializer(str, return_type=str),
                        WithJsonSchema({"type": "string", "description": "a folder or a storage URI"})]


def is_storage_field(field) -> bool:
    """A pydantic field declared as a ``StoragePath`` (optional or not)."""
    return any(getattr(m, "func", None) is _location for m in field.metadata) or any(
        getattr(m, "func", None) is _location for arg in getattr(field.annotation, "__args__", ())
        for m in getattr(arg, "__metadata__", ()))

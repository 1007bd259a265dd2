"""The base of every config section, and the error every bad config raises."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


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

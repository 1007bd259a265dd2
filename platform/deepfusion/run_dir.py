"""A run folder that remembers what it was started with, so a re-run resumes or refuses.

Training runs and Tune sweeps both resume when started again under the same name. What
must not change across a resume (the model, the data, the search space...) is written
to ``run_config.json`` the first time; a later start with different values is refused
with the names of the fields that changed, instead of silently mixing two experiments.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepfusion.config import ConfigError

RUN_CONFIG = "run_config.json"


def claim_run_dir(run_dir: Path, key: dict, *, what: str, fresh: bool) -> bool:
    """True when an earlier run in ``run_dir`` will be resumed; ``fresh`` deletes it first."""
    run_dir = Path(run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    record = run_dir / RUN_CONFIG
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous != key:
            changed = sorted(k for k in {*key, *previous} if previous.get(k) != key.get(k))
            raise ConfigError(
                f"{what} {run_dir.name!r} in {run_dir.parent} was started with a different "
                f"{', '.join(changed)}; resume it unchanged, pass --fresh to start over, or choose another name"
            )
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(key, indent=2) + "\n")
    return False

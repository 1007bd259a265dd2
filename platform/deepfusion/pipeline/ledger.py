"""Which pipeline stages are up to date, by content hashes of what each one read and made.

Every stage writes ``<state_dir>/stages/<stage>.json`` when it starts and again when it
finishes: the hash of its inputs (its resolved config and the hashes of the artifacts it
reads: a data manifest, backbone checkpoints) and the hashes of its outputs. A later run
then decides, per stage:

- ``skip``: finished with the same inputs, and its outputs are still what it made;
- ``resume``: started with the same inputs but not finished (a killed run), or its
  outputs changed since: the stage's own resume picks up its checkpoints;
- ``fresh``: new inputs (a changed config, retrained upstream model, new data) or no
  record: the stage's earlier results are discarded and it runs from the start.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Literal

Decision = Literal["skip", "resume", "fresh"]


def sha256_of(value) -> str:
    """The hash of a JSON-able value (keys sorted), or of a (small: a manifest, a metrics
    file) file's bytes for a ``Path``."""
    if isinstance(value, Path):
        return hashlib.sha256(value.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class StageLedger:
    def __init__(self, state_dir: Path):
        self.folder = Path(state_dir) / "stages"

    def _path(self, stage: str) -> Path:
        return self.folder / (stage.replace("/", "__") + ".json")

    def record(self, stage: str) -> dict | None:
        try:
            return json.loads(self._path(stage).read_text())
        except (OSError, ValueError):
            return None

    def decide(self, stage: str, inputs: dict, current_outputs: Callable[[], dict]) -> Decision:
        """``current_outputs`` hashes the stage's outputs as they are now (raising
        ``FileNotFoundError`` when one is gone)."""
        record = self.record(stage)
        if record is None or record.get("inputs_sha256") != sha256_of(inputs):
            return "fresh"
        if record.get("state") != "done":
            return "resume"
        try:
            unchanged = current_outputs() == record.get("outputs")
        except FileNotFoundError:
            unchanged = False
        return "skip" if unchanged else "resume"

    def started(self, stage: str, inputs: dict) -> None:
        self._write(stage, {"stage": stage, "state": "running", "inputs_sha256": sha256_of(inputs),
                            "inputs": inputs, "started": _now()})

    def finished(self, stage: str, inputs: dict, outputs: dict, wall_s: float) -> None:
        record = self.record(stage) or {}
        self._write(stage, {"stage": stage, "state": "done", "inputs_sha256": sha256_of(inputs),
                            "inputs": inputs, "outputs": outputs, "started": record.get("started", _now()),
                            "finished": _now(), "wall_s": round(wall_s, 2)})

    def _write(self, stage: str, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(stage)
        staging = path.with_suffix(".json.partial")
        staging.write_text(json.dumps(record, indent=2, default=str) + "\n")
        staging.replace(path)  # atomic: a killed pipeline never leaves half a record


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

"""The one freshness rule: a content key of (resolved config, input hashes), and its record.

Every piece of work that can be skipped or resumed decides the same way. What it was
configured with (a resolved config, as JSON) and the content hashes of what it reads
(``hashing``) make one key, ``content_key(config, inputs)``; the work writes
``freshness_record(config, inputs)`` (the key and its parts) beside what it made, and is
current later exactly when the recorded key equals the key computed now. Its users:

- demo corpora: ``DEMO_CORPUS.json`` (the corpus settings);
- preprocessing: each dataset manifest's ``freshness`` (the dataset config and shard
  schema version; the fingerprint of the source tree);
- training runs and fusion sweeps: ``run_config.json`` in the run folder (what may not
  change across a resume), through ``claim_run_dir``; inside a claimed folder Ray Train
  and Tune restore their own state;
- the logit cache: its folder is named by the key (both checkpoints, the data manifest);
- the pipeline: ``<state_dir>/stages/<stage>.json`` (``StageLedger``), which adds the
  hashes of what a stage made, so it can tell "done" from "interrupted".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from deepfusion import storage
from deepfusion.config import ConfigError
from deepfusion.hashing import sha256_json

RUN_CONFIG = "run_config.json"
Decision = Literal["skip", "resume", "fresh"]

__all__ = ["Decision", "RUN_CONFIG", "StageLedger", "claim_run_dir", "content_key", "freshness_record",
           "is_current", "write_json_atomic"]


def content_key(config, inputs: dict | None = None) -> str:
    """The key of work configured with ``config`` that read ``inputs`` (name -> hash)."""
    return sha256_json({"config": config, "inputs": inputs or {}})


def freshness_record(config, inputs: dict | None = None) -> dict:
    return {"key": content_key(config, inputs), "config": config, "inputs": inputs or {}}


def is_current(record: dict | None, config, inputs: dict | None = None) -> bool:
    return bool(record) and record.get("key") == content_key(config, inputs)


def write_json_atomic(path: storage.Location, value) -> None:
    """Write JSON (to a file or a storage URI) so that a killed process never leaves half a file."""
    storage.write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def _read_json(path: storage.Location) -> dict | None:
    try:
        return json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return None


def claim_run_dir(run_dir: storage.Location, config: dict, *, what: str, fresh: bool) -> bool:
    """A run folder that resumes or refuses: True when an earlier run in ``run_dir`` will be
    resumed (its recorded config is ``config``); ``fresh`` deletes it first. A run started
    with another config is refused, naming the fields that changed, instead of silently
    mixing two experiments."""
    if fresh:
        storage.remove(run_dir)
    record_path = storage.join(run_dir, RUN_CONFIG)
    record = _read_json(record_path)
    if record is not None:
        if "key" not in record:  # written before records carried their key: the config itself
            record = freshness_record(record)
        if not is_current(record, config):
            previous = record["config"]
            changed = sorted(k for k in {*config, *previous} if previous.get(k) != config.get(k))
            raise ConfigError(
                f"{what} {storage.name(run_dir)!r} in {storage.parent(run_dir)} was started with a different "
                f"{', '.join(changed)}; resume it unchanged, pass --fresh to start over, or choose another name"
            )
        return True
    if not storage.is_uri(run_dir):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path, freshness_record(config))
    return False


class StageLedger:
    """Which pipeline stages are up to date: ``<state_dir>/stages/<stage>.json``.

    A stage's ``inputs`` are ``{"config": <resolved stage config>, <artifact>: <hash>, ...}``.
    Each stage writes its record when it starts and again, with the hashes of its outputs,
    when it finishes. A later run then decides, per stage:

    - ``skip``: finished with the same key, and its outputs are still what it made;
    - ``resume``: started with the same key but not finished (a killed run), or its outputs
      changed since: the stage's own resume picks up its checkpoints;
    - ``fresh``: another key (a changed config, retrained upstream model, new data) or no
      record: the stage's earlier results are discarded and it runs from the start.
    """

    def __init__(self, state_dir: storage.Location):
        self.folder = storage.join(state_dir, "stages")

    def _path(self, stage: str) -> storage.Location:
        return storage.join(self.folder, stage.replace("/", "__") + ".json")

    def record(self, stage: str) -> dict | None:
        return _read_json(self._path(stage))

    @staticmethod
    def _freshness(inputs: dict) -> dict:
        return freshness_record(inputs.get("config"), {k: v for k, v in inputs.items() if k != "config"})

    def decide(self, stage: str, inputs: dict, current_outputs: Callable[[], dict]) -> Decision:
        """``current_outputs`` hashes the stage's outputs as they are now (raising
        ``FileNotFoundError`` when one is gone)."""
        record = self.record(stage)
        if record is None or record.get("key") != self._freshness(inputs)["key"]:
            return "fresh"
        if record.get("state") != "done":
            return "resume"
        try:
            unchanged = current_outputs() == record.get("outputs")
        except FileNotFoundError:
            unchanged = False
        return "skip" if unchanged else "resume"

    def started(self, stage: str, inputs: dict) -> None:
        write_json_atomic(self._path(stage), {"stage": stage, "state": "running", **self._freshness(inputs),
                                              "started": _now()})

    def finished(self, stage: str, inputs: dict, outputs: dict, wall_s: float) -> None:
        record = self.record(stage) or {}
        write_json_atomic(self._path(stage), {
            "stage": stage, "state": "done", **self._freshness(inputs), "outputs": outputs,
            "started": record.get("started", _now()), "finished": _now(), "wall_s": round(wall_s, 2)})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

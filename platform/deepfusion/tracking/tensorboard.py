"""A training run's curves as TensorBoard event files.

``<run_dir>/tensorboard/train`` and ``<run_dir>/tensorboard/val`` hold the same tags
(``loss``, ``accuracy``, ``weighted_f1``, ``macro_f1``), so TensorBoard draws train and
val in one chart per metric; ``lr`` (and ``lr_<group>`` per parameter group) is in
``train``. The step is the epoch. A resumed run purges what an interrupted attempt wrote
past its checkpoint, so the curves show each epoch once.

    tensorboard --logdir work/      # every backbone run and the fusion sweep's trials
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from deepfusion import storage

EVENTS_DIR = "tensorboard"
CURVES = ("loss", "accuracy", "weighted_f1", "macro_f1")


def events_dir(run_dir: Path) -> Path:
    return Path(run_dir) / EVENTS_DIR


class EpochCurves:
    """Per-epoch scalars of one run; ``first_epoch`` > 1 when resuming."""

    def __init__(self, run_dir: storage.Location, first_epoch: int = 1):
        from tensorboardX import SummaryWriter

        # a run on a storage URI: this process's event files, written in a folder of its own
        # and sent after each epoch (a resumed run, maybe on another node, adds its own files)
        self.remote = storage.join(run_dir, EVENTS_DIR) if storage.is_uri(run_dir) else None
        root = Path(tempfile.mkdtemp(prefix="deepfusion-events-")) if self.remote else events_dir(run_dir)
        self.root = root
        purge = first_epoch if first_epoch > 1 else None
        self.writers = {split: SummaryWriter(str(root / split), purge_step=purge, flush_secs=10)
                        for split in ("train", "val")}

    def epoch(self, metrics: dict) -> None:
        step = int(metrics["epoch"])
        for split, writer in self.writers.items():
            for name in CURVES:
                writer.add_scalar(name, float(metrics[f"{split}_{name}"]), step)
        train = self.writers["train"]
        for key, value in metrics.items():
            if key == "lr" or key.startswith("lr_"):
                train.add_scalar(key, float(value), step)
        for writer in self.writers.values():
            writer.flush()
        if self.remote:
            storage.push(self.root, self.remote)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        if self.remote:
            storage.push(self.root, self.remote)
            shutil.rmtree(self.root, ignore_errors=True)


def read_curves(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{split: {tag: [(epoch, value), ...]}}`` from a run's event files, as TensorBoard
    reads them (its ``EventAccumulator``, purges included). Needs the tensorboard package."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = {}
    for split in ("train", "val"):
        accumulator = EventAccumulator(str(events_dir(run_dir) / split))
        accumulator.Reload()
        curves[split] = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
                         for tag in accumulator.Tags()["scalars"]}
    return curves

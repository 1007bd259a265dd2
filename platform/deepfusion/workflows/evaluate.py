"""A trained emotion model on a MELD-layout csv it has never seen (``jobs.evaluate``).

The csv goes the way training data went: ``scan_meld`` (same checks, same quarantine),
the Ray Data decoder with the preprocessing settings recorded in the checkpoint's card
(``data_info``) and the checkpoint's own speaker ids, Parquet shards, then the batch
evaluation every run's test split gets. Nothing about the file is assumed beyond MELD's
columns: any split, any subset, a re-annotation.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from deepfusion.artifacts.checkpoint import checkpoint_hash, read_card
from deepfusion.config import ConfigError, DataResources, MeldDataset
from deepfusion.evaluation.predict import Evaluation

SPLIT = "test"  # the csv's rows are one split of the scratch dataset


@dataclass(frozen=True)
class CsvEvaluation:
    evaluation: Evaluation
    metrics_path: Path
    confusion_path: Path
    quarantined: int
    quarantine_path: Path | None
    media: str  # what the rows carried: "text-only: n, video+audio: m"
    unavailable: list[str]  # modalities the model reads that no row had (it saw the rest)


def meld_dataset_for(csv_path: Path, data_info: dict, media_dir: Path | None) -> MeldDataset:
    """The checkpoint's MELD settings (video, audio, text), pointed at one csv."""
    settings = data_info.get("preprocess_config", {})
    if data_info.get("kind") != "meld":
        raise ConfigError(f"--checkpoint: trained on a {data_info.get('kind')!r} dataset "
                          f"({data_info.get('dataset')}); --data takes a MELD-layout csv, so only "
                          f"models trained on MELD-layout data can be evaluated this way")
    root = csv_path.parent
    media = None
    if media_dir is not None:
        if not media_dir.is_dir():
            raise ConfigError(f"--media: {media_dir} is not a folder")
        media = {SPLIT: os.path.relpath(media_dir, root)}
    return MeldDataset(kind="meld", name=f"eval_{csv_path.stem}", root=root, csv_files={SPLIT: csv_path.name},
                       media_dirs=media, video=settings["video"], audio=settings["audio"], text=settings["text"])


def evaluate(checkpoint: Path, csv_path: Path, out_dir: Path, *, media_dir: Path | None = None,
                      resources: DataResources = DataResources(), batch_size: int = 32) -> CsvEvaluation:
    """Decode ``csv_path`` into ``out_dir/shards`` and evaluate ``checkpoint`` on it (Ray must be up)."""
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.artifacts.shards import EMOTION_SCHEMA, QUARANTINE
    from deepfusion.evaluation.predict import evaluate_split
    from deepfusion.evaluation.report import write_evaluation
    from deepfusion.preprocess.emotion import build_emotion_shards
    from deepfusion.preprocess.writer import write_manifest, write_quarantine

    csv_path, out_dir = Path(csv_path).resolve(), Path(out_dir).resolve()
    if not csv_path.is_file():
        raise ConfigError(f"--data: {csv_path} not found")
    card = read_card(checkpoint)
    dataset = meld_dataset_for(csv_path, card.data_info, media_dir)
    shards = out_dir / "shards"
    shutil.rmtree(shards, ignore_errors=True)  # a scratch copy of this csv, rebuilt each time
    shards.mkdir(parents=True)
    counts, written, quarantined, extra = build_emotion_shards(
        dataset, resources, shards, speakers=card.data_info.get("speakers", {}))
    write_quarantine(shards, quarantined)
    write_manifest(shards, dataset_config=dataset, kind="meld", schema=EMOTION_SCHEMA, freshness=None,
                   counts=counts, shards=written, quarantined=quarantined, extra=extra)
    data = ShardDataset.open(shards, field="--data")
    if data.total(SPLIT) == 0:
        raise ConfigError(f"--data: no usable rows in {csv_path} ({len(quarantined)} quarantined, "
                          f"see {shards / QUARANTINE})")
    unavailable = check_inputs_available(card.model_config, extra["media_by_sample"], csv_path)
    evaluation = evaluate_split(Path(checkpoint), data, SPLIT, resources, batch_size)
    evaluation = Evaluation(csv_path.stem, evaluation.metrics, evaluation.confusion, evaluation.label_names,
                            evaluation.sample_ids, evaluation.logits)
    metrics_path, confusion_path = write_evaluation(
        evaluation, out_dir, checkpoint=Path(checkpoint), checkpoint_hash=checkpoint_hash(checkpoint),
        title=f"{card.model_config.kind} ({card.preset}) on {csv_path.name}")
    return CsvEvaluation(evaluation, metrics_path, confusion_path, len(quarantined),
                         shards / QUARANTINE if quarantined else None,
                         ", ".join(f"{k}: {v}" for k, v in sorted(extra["media_by_sample"].items())), unavailable)


def check_inputs_available(model_config, media_by_sample: dict[str, int], csv_path: Path) -> list[str]:
    """The modalities the model reads that no row has. Every model copes with a missing
    modality per sample (masks); one that would see nothing at all is refused."""
    from deepfusion.models import model_inputs

    wanted = [name for name, used in model_inputs(model_config).items() if used]
    present = {"text"} | {m for kind in media_by_sample for m in kind.split("+") if m in ("video", "audio")}
    if not set(wanted) & present:
        raise ConfigError(f"--checkpoint: {model_config.kind} needs {' or '.join(wanted)}, and {csv_path.name} "
                          f"supplies none ({media_by_sample}); pass --media with the csv's clips")
    return [name for name in wanted if name not in present]

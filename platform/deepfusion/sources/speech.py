"""Speech corpora described by a ``MANIFEST.csv`` (path,label,speaker[,gender,age,text,...]).

Labels are mapped onto the dataset's classes through the config's explicit ``label_map``;
splits are speaker-disjoint (within each corpus), so no voice is in train and test.
Columns that carry the label in disguise (``intensity``: RAVDESS records "neutral" at
normal intensity only) are not read.
"""

from __future__ import annotations

from pathlib import Path

from deepfusion.config import SpeechDataset
from deepfusion.labels import LabelMap
from deepfusion.sources import LayoutError, Quarantined, csv_manifest_rows, unknown_label
from deepfusion.splits import speaker_disjoint_split, speaker_fold_split

REQUIRED_COLUMNS = ("path", "label", "speaker")


def _parse_age(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def check_speech_layout(cfg: SpeechDataset) -> Path:
    """The manifest file exists (it is not read); returns its path."""
    manifest = Path(cfg.root) / cfg.manifest
    if not manifest.is_file():
        raise LayoutError(f"speech manifest not found: {manifest}")
    return manifest


def scan_speech(cfg: SpeechDataset, label_map_origin: str = "label_map") -> tuple[list[dict], list[Quarantined]]:
    manifest = check_speech_layout(cfg)
    root = Path(cfg.root)
    labels = LabelMap(cfg.class_names)
    records: list[dict] = []
    quarantined: list[Quarantined] = []
    required = REQUIRED_COLUMNS + (("corpus",) if cfg.corpora is not None else ())
    for where, row in csv_manifest_rows(manifest, required, quarantined):
        if cfg.corpora is not None and row["corpus"].strip() not in cfg.corpora:
            continue  # another corpus of the manifest, left out by the config
        raw_label = row["label"].strip()
        if raw_label not in cfg.label_map:
            quarantined.append(Quarantined(where, unknown_label(raw_label, cfg.label_map, label_map_origin)))
            continue
        audio_path = root / row["path"].strip()
        if not audio_path.is_file():
            quarantined.append(Quarantined(str(audio_path), "missing file"))
            continue
        emotion = cfg.label_map[raw_label]
        records.append({
            "sample_id": f"{cfg.name}/{row['path'].strip()}",
            "split": None,  # decided below, per speaker
            "emotion": emotion,
            "label": labels.id_of(emotion),
            "text": (row.get("text") or "").strip(),
            "speaker": row["speaker"].strip(),
            "gender": (row.get("gender") or "").strip() or None,
            "age": _parse_age(row.get("age")),
            "dialogue_id": None,
            "utterance_id": None,
            "video_path": None,
            "audio_path": str(audio_path),
            "source": where,
            "_group": (row.get("corpus") or "").strip() or "all",
        })
    speakers, groups = [r["speaker"] for r in records], [r["_group"] for r in records]
    if cfg.folds is None:
        split_of = speaker_disjoint_split(speakers, groups, cfg.split, cfg.seed)
    else:
        split_of = speaker_fold_split(speakers, groups, cfg.folds, cfg.split, cfg.seed)
    for r in records:
        r["corpus"] = r.pop("_group")
        r["split"] = split_of[r["speaker"]]
    return records, quarantined

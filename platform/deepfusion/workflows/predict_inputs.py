"""What ``--data`` is, and its samples: every layout the platform reads, for prediction.

    a .jsonl / .parquet file, or a .csv with a sample_id column    the generic manifest
    a .csv with MELD's columns (Utterance, Speaker, Emotion, ...)   a MELD split
    a .csv with path,label,speaker, or a folder with MANIFEST.csv   a speech corpus
    any other folder                                                clips paired by stem
                                                                    (images, for textile)

Samples are read with the layout's own reader (same checks, same quarantine), with the
decoding settings of the checkpoint's training data.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from deepfusion.config import ConfigError, ManifestDataset, MeldDataset, SpeechDataset
from deepfusion.sources import Quarantined
from deepfusion.sources.manifest import scan_manifest
from deepfusion.sources.media_folder import scan_image_files, scan_media_folder
from deepfusion.sources.meld import REQUIRED_COLUMNS as MELD_COLUMNS
from deepfusion.sources.meld import scan_meld
from deepfusion.sources.speech import REQUIRED_COLUMNS as SPEECH_COLUMNS
from deepfusion.sources.speech import scan_speech

MELD_SPLIT = "test"  # a MELD csv's rows are one split


def layout_of(data: Path) -> str:
    """"manifest", "meld", "speech" or "folder"; ``ConfigError`` for anything else."""
    if data.is_dir():
        return "speech" if (data / "MANIFEST.csv").is_file() else "folder"
    if not data.is_file():
        raise ConfigError(f"--data: {data} not found")
    suffix = data.suffix.lower()
    if suffix in (".jsonl", ".parquet"):
        return "manifest"
    if suffix != ".csv":
        raise ConfigError(f"--data: {data} is a {suffix or 'suffix-less'} file; expected a folder, a .csv, "
                          f".jsonl or .parquet manifest, a MELD csv or a speech MANIFEST.csv")
    try:
        with open(data, encoding="utf-8", newline="") as handle:
            header = [h.strip() for h in next(csv.reader(handle), [])]
    except UnicodeDecodeError:
        raise ConfigError(f"--data: {data} is not a UTF-8 csv") from None
    if "sample_id" in header:
        return "manifest"
    if all(c in header for c in MELD_COLUMNS):
        return "meld"
    if all(c in header for c in SPEECH_COLUMNS):
        return "speech"
    raise ConfigError(f"--data: {data} has columns {header}: not a manifest (sample_id, video/audio/text, ...), "
                      f"a MELD csv ({', '.join(MELD_COLUMNS)}) or a speech manifest ({', '.join(SPEECH_COLUMNS)})")


def emotion_samples(data: Path, data_info: dict, media_dir: Path | None = None):
    """``(records, quarantined, layout)`` of ``data`` for an emotion model whose training
    data is described by ``data_info`` (its video, audio and text settings)."""
    settings = data_info.get("preprocess_config", {})
    decoding = {k: settings[k] for k in ("audio", "text") if k in settings}
    name = _name(data)
    layout = layout_of(data)
    if media_dir is not None and layout != "meld":
        raise ConfigError(f"--media: only a MELD csv takes a separate media folder; {data} is a {layout}")
    if layout == "manifest":
        cfg = ManifestDataset(kind="manifest", name=name, manifest=data, **decoding,
                              **({"video": settings["video"]} if "video" in settings else {}))
        records, quarantined, _ = scan_manifest(cfg, require_labels=False)
    elif layout == "meld":
        records, quarantined = scan_meld(meld_dataset_for(data, settings, media_dir))
    elif layout == "speech":
        root, manifest = (data, "MANIFEST.csv") if data.is_dir() else (data.parent, data.name)
        records, quarantined = scan_speech(SpeechDataset(kind="speech", name=name, root=root, manifest=manifest,
                                                         **decoding))
    else:
        records, quarantined = scan_media_folder(data)
    return records, quarantined, layout


def image_samples(data: Path, classes: list[str]) -> tuple[list[dict], list[Quarantined]]:
    if not data.is_dir():
        raise ConfigError(f"--data: a textile model predicts over a folder of images; {data} is not a folder")
    return scan_image_files(data, classes)


def meld_dataset_for(csv_path: Path, settings: dict, media_dir: Path | None) -> MeldDataset:
    """A checkpoint's MELD settings (video, audio, text), pointed at one csv."""
    root = csv_path.parent
    media = None
    if media_dir is not None:
        if not media_dir.is_dir():
            raise ConfigError(f"--media: {media_dir} is not a folder")
        media = {MELD_SPLIT: os.path.relpath(media_dir, root)}
    return MeldDataset(kind="meld", name=_name(csv_path), root=root, csv_files={MELD_SPLIT: csv_path.name},
                       media_dirs=media, **{k: settings[k] for k in ("video", "audio", "text") if k in settings})


def _name(data: Path) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", data.stem if data.is_file() else data.name) or "data"

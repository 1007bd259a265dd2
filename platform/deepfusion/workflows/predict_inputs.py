"""What ``--data`` is, and its samples: every layout the platform reads, for prediction.

    a .jsonl / .parquet file, or a .csv with a sample_id column    the generic manifest
    a .csv with MELD's columns (Utterance, Speaker, Emotion, ...)   a MELD split
    a .csv with path,label,speaker, or a folder with MANIFEST.csv   a speech corpus
    any other folder                                                clips paired by stem
                                                                    (images, for textile)

Samples are read with the layout's own reader (same checks, same quarantine), with the
decoding settings of the checkpoint's training data, and their labels are mapped onto the
model's classes with the label map its card records (``--label-map`` overrides it).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class InputLabels:
    """How an input's labels become the model's classes: ``label_map`` (input label ->
    class), and where that map came from (named when a label is quarantined)."""

    classes: tuple[str, ...]
    label_map: dict[str, str]
    origin: str


def input_labels(classes: list[str], data_info: dict, override: dict[str, str] | None = None,
                 override_origin: str = "--label-map") -> InputLabels:
    """The model's classes with the label map of its training data (the card's), or
    ``override``; a model trained without one reads its class names as they are."""
    if override is not None:
        label_map, origin = dict(override), override_origin
    elif data_info.get("preprocess_config", {}).get("label_map"):
        # the training data's own words, and the class names themselves
        label_map = dict(data_info["preprocess_config"]["label_map"])
        label_map |= {name: name for name in classes if name not in label_map}
        origin = "the label map of the checkpoint's card"
    else:
        label_map, origin = {name: name for name in classes}, "the checkpoint's classes"
    bad = sorted({target for target in label_map.values() if target not in classes})
    if bad:
        raise ConfigError(f"{origin}: maps onto {bad}, which are not the model's classes {list(classes)}")
    return InputLabels(tuple(classes), label_map, origin)


def read_label_map(value: str) -> tuple[dict[str, str], str]:
    """``--label-map``: a .json / .yaml file holding ``{input label: class}``, or inline
    ``hap=happy,ang=angry``. Returns the map and how to name it in messages."""
    path = Path(value)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"--label-map: {path} not found")
        import yaml

        try:
            text = path.read_text()
            loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"--label-map: {path} is not readable ({err})") from None
        if not isinstance(loaded, dict) or not loaded:
            raise ConfigError(f"--label-map: {path} must hold a mapping {{input label: class}}")
        return {str(k): str(v) for k, v in loaded.items()}, f"--label-map {path}"
    pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise ConfigError(f"--label-map: {value!r}; expected a .json/.yaml file or label=class,label=class")
    return {k.strip(): v.strip() for k, v in pairs}, "--label-map"


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


def emotion_samples(data: Path, data_info: dict, labels: InputLabels, media_dir: Path | None = None):
    """``(records, quarantined, layout)`` of ``data`` for an emotion model whose training
    data is described by ``data_info`` (its video, audio and text settings); labels are
    mapped by ``labels``."""
    settings = data_info.get("preprocess_config", {})
    classes = {"classes": labels.classes, "label_map": labels.label_map}
    decoding = {k: settings[k] for k in ("audio", "text") if k in settings}
    name = _name(data)
    layout = layout_of(data)
    if media_dir is not None and layout != "meld":
        raise ConfigError(f"--media: only a MELD csv takes a separate media folder; {data} is a {layout}")
    if layout == "manifest":
        cfg = ManifestDataset(kind="manifest", name=name, manifest=data, **decoding, **classes,
                              **({"video": settings["video"]} if "video" in settings else {}))
        records, quarantined, _ = scan_manifest(cfg, require_labels=False, label_map_origin=labels.origin)
    elif layout == "meld":
        records, quarantined = scan_meld(meld_dataset_for(data, settings, media_dir, labels.classes))
    elif layout == "speech":
        root, manifest = (data, "MANIFEST.csv") if data.is_dir() else (data.parent, data.name)
        records, quarantined = scan_speech(SpeechDataset(kind="speech", name=name, root=root, manifest=manifest,
                                                         **decoding, **classes), label_map_origin=labels.origin)
    else:
        records, quarantined = scan_media_folder(data)
    return records, quarantined, layout


def image_samples(data: Path, labels: InputLabels) -> tuple[list[dict], list[Quarantined]]:
    if not data.is_dir():
        raise ConfigError(f"--data: an image model predicts over a folder of images; {data} is not a folder")
    return scan_image_files(data, labels.label_map)


def meld_dataset_for(csv_path: Path, settings: dict, media_dir: Path | None,
                     classes: tuple[str, ...] | None = None) -> MeldDataset:
    """A checkpoint's MELD settings (video, audio, text), pointed at one csv."""
    root = csv_path.parent
    media = None
    if media_dir is not None:
        if not media_dir.is_dir():
            raise ConfigError(f"--media: {media_dir} is not a folder")
        media = {MELD_SPLIT: os.path.relpath(media_dir, root)}
    return MeldDataset(kind="meld", name=_name(csv_path), root=root, csv_files={MELD_SPLIT: csv_path.name},
                       media_dirs=media, **{k: settings[k] for k in ("video", "audio", "text") if k in settings},
                       **({"classes": classes} if classes is not None else {}))


def _name(data: Path) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", data.stem if data.is_file() else data.name) or "data"

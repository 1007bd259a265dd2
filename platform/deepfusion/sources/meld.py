"""MELD's layout: ``{train,dev,test}_sent_emo.csv`` plus ``<split>/dia{D}_utt{U}.mp4`` (+ ``.wav``).

Rows whose media is missing stay in as text-only samples (their modality mask says so).
Only MELD's inputs are read: ``Sentiment`` is an annotation derived from the same human
judgement as ``Emotion`` and is deliberately not carried into the shards.
"""

from __future__ import annotations

import csv
from pathlib import Path

from deepfusion.config import MeldDataset
from deepfusion.labels import LabelMap
from deepfusion.sources import LayoutError, Quarantined

REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def _media_paths(media_dir: Path | None, dialogue_id: int, utterance_id: int):
    if media_dir is None:
        return None, None
    stem = media_dir / f"dia{dialogue_id}_utt{utterance_id}"
    mp4, wav = stem.with_suffix(".mp4"), stem.with_suffix(".wav")
    video = str(mp4) if mp4.is_file() else None
    # A wav beside the mp4 wins; otherwise the mp4's own audio track is decoded.
    audio = str(wav) if wav.is_file() else video
    return video, audio


def check_meld_layout(cfg: MeldDataset) -> Path:
    """The root, each split's csv and media folder exist (no file is read); returns the root."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise LayoutError(f"MELD root not found: {root}")
    for split, csv_name in cfg.csv_files.items():
        if not (root / csv_name).is_file():
            raise LayoutError(f"MELD csv for split {split!r} not found: {root / csv_name}")
        if cfg.media_dirs is not None and not (root / cfg.media_dirs[split]).is_dir():
            raise LayoutError(f"MELD media folder for split {split!r} not found: {root / cfg.media_dirs[split]} "
                              f"(set media_dirs: null for a text-only corpus)")
    return root


def scan_meld(cfg: MeldDataset) -> tuple[list[dict], list[Quarantined]]:
    root = check_meld_layout(cfg)
    labels = LabelMap(cfg.class_names)
    records: list[dict] = []
    quarantined: list[Quarantined] = []
    for split, csv_name in cfg.csv_files.items():
        csv_path = root / csv_name
        media_dir = None if cfg.media_dirs is None else root / cfg.media_dirs[split]
        seen: set[tuple[int, int]] = set()
        with open(csv_path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise LayoutError(f"{csv_path}: empty csv, expected a header row")
            header = [h.strip() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise LayoutError(f"{csv_path}: missing column(s) {missing}; header is {header}")
            col = {name: header.index(name) for name in header}
            for row in reader:
                where = f"{csv_path}:{reader.line_num}"
                if not any(cell.strip() for cell in row):
                    continue  # a blank line is not a row
                if len(row) != len(header):
                    quarantined.append(Quarantined(
                        where, f"malformed row: {len(row)} fields, header has {len(header)}"))
                    continue
                try:
                    dialogue_id = int(row[col["Dialogue_ID"]])
                    utterance_id = int(row[col["Utterance_ID"]])
                    if dialogue_id < 0 or utterance_id < 0:
                        raise ValueError
                except ValueError:
                    quarantined.append(Quarantined(
                        where, f"malformed row: Dialogue_ID={row[col['Dialogue_ID']]!r}, "
                        f"Utterance_ID={row[col['Utterance_ID']]!r} are not non-negative integers"))
                    continue
                emotion = row[col["Emotion"]].strip().lower()
                if emotion not in labels.names:
                    quarantined.append(Quarantined(
                        where, f"unknown label Emotion={row[col['Emotion']]!r}; expected one of "
                        f"classes {list(labels.names)}"))
                    continue
                if (dialogue_id, utterance_id) in seen:
                    quarantined.append(Quarantined(
                        where, f"duplicate row for dia{dialogue_id}_utt{utterance_id}"))
                    continue
                seen.add((dialogue_id, utterance_id))
                video_path, audio_path = _media_paths(media_dir, dialogue_id, utterance_id)
                records.append({
                    "sample_id": f"{cfg.name}/{split}/dia{dialogue_id}_utt{utterance_id}",
                    "split": split,
                    "emotion": emotion,
                    "label": labels.id_of(emotion),
                    "text": row[col["Utterance"]].strip(),
                    "speaker": row[col["Speaker"]].strip(),
                    "gender": None,
                    "age": None,
                    "dialogue_id": dialogue_id,
                    "utterance_id": utterance_id,
                    "video_path": video_path,
                    "audio_path": audio_path,
                    "source": where,
                })
    add_dialogue_context(records, cfg.text.context_turns)
    return records, quarantined


def add_dialogue_context(records: list[dict], turns: int) -> None:
    """Each record's ``context``: the ``turns`` utterances before it in its dialogue (same
    split), by utterance id, whatever the csv's row order. Rows that were quarantined are
    not part of any context."""
    from collections import defaultdict

    from deepfusion.media.text import dialogue_context

    dialogues = defaultdict(list)
    for record in records:
        dialogues[record["split"], record["dialogue_id"]].append(record)
    for turns_of_dialogue in dialogues.values():
        turns_of_dialogue.sort(key=lambda r: r["utterance_id"])
        for i, record in enumerate(turns_of_dialogue):
            previous = [(r["speaker"], r["text"]) for r in turns_of_dialogue[max(0, i - turns):i]]
            record["context"] = dialogue_context(previous, turns)

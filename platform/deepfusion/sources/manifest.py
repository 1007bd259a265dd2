"""The generic layout: one table (CSV, JSONL or Parquet) with a row per sample.

Columns (only ``sample_id`` and one of ``video`` / ``audio`` / ``text`` are required):

    sample_id     unique per row; the id predictions and shards carry
    video, audio  media paths, relative to the table's folder (audio empty with a video:
                  the mp4's own sound track)
    text          the transcript
    speaker, gender, age
    context       the dialogue before this turn, as JSON [{"speaker": ..., "text": ...}, ...]
    dialogue_id, turn   integers: context built from the earlier turns of the same
                  dialogue (and split), when there is no context column
    label         mapped onto the dataset's classes by the config's ``label_map``
    split         train / val (or dev) / test; without the column splits are drawn

Other columns are ignored (and named in the data manifest). Every row that cannot become
a sample is quarantined with its line and the reason; a table that is wrong as a whole
raises ``LayoutError``.
"""

from __future__ import annotations

import json
from pathlib import Path

from deepfusion.config import ManifestDataset
from deepfusion.labels import LabelMap
from deepfusion.sources import LayoutError, Quarantined, unknown_label

COLUMNS = ("sample_id", "video", "audio", "text", "speaker", "gender", "age", "context", "dialogue_id", "turn",
           "label", "split")
SPLIT_NAMES = {"train": "train", "val": "val", "dev": "val", "validation": "val", "test": "test"}
FORMATS = (".csv", ".jsonl", ".parquet")


def read_table(path: Path) -> tuple[list[dict], list[str], str]:
    """The table's rows (str values; missing cells ""), its columns, and what a row's
    position is called in messages ("line" or "row")."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise LayoutError(f"{path}: a manifest is a {', '.join(FORMATS)} file, not {suffix or 'a file without suffix'}")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise LayoutError(f"{path}: cannot read the manifest: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    rows = [{k: _cell(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return rows, list(frame.columns), "row" if suffix == ".parquet" else "line"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).strip()


def check_manifest_layout(cfg: ManifestDataset) -> Path:
    """The table exists (it is not read); returns its path."""
    path = Path(cfg.manifest)
    if not path.is_file():
        raise LayoutError(f"manifest not found: {path}")
    return path


def scan_manifest(cfg: ManifestDataset, require_labels: bool = True, label_map_origin: str = "label_map"):
    """Return ``(records, quarantined, info)``; ``info`` says how splits were made and
    which columns were ignored (the data manifest records it).

    ``require_labels``: training data (every row needs a label; splits are drawn when the
    table has none). False, for prediction: unlabeled rows are kept, nothing is drawn.
    ``label_map_origin``: where ``cfg.label_map`` came from, named in a quarantine reason.
    """
    from deepfusion.media.text import dialogue_context, parse_context
    from deepfusion.sources.meld import add_dialogue_context
    from deepfusion.splits import stratified_speaker_split, stratified_split

    path = check_manifest_layout(cfg)
    rows, columns, position = read_table(path)
    if "sample_id" not in columns or not {"video", "audio", "text"} & set(columns):
        raise LayoutError(f"{path}: needs a sample_id column and at least one of video, audio, text; "
                          f"columns are {columns}")
    if ("dialogue_id" in columns) != ("turn" in columns):
        raise LayoutError(f"{path}: dialogue_id and turn go together (context is built from earlier turns)")
    labels, root, first = LabelMap(cfg.class_names), path.parent, 1 if position == "row" else 2
    records: list[dict] = []
    quarantined: list[Quarantined] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        where = f"{path}:{i + first}"
        try:
            record = _record(row, root, cfg, labels, seen, require_labels, label_map_origin)
        except ValueError as err:
            quarantined.append(Quarantined(where, str(err)))
            continue
        if "context" in columns:
            try:
                record["context"] = dialogue_context(list(parse_context(row.get("context", ""), 100_000)),
                                                     cfg.text.context_turns)
            except ValueError as err:
                quarantined.append(Quarantined(where, f"context: {err}"))
                continue
        seen.add(record["sample_id"])
        records.append(record | {"source": where})
    if "dialogue_id" in columns and "context" not in columns:
        add_dialogue_context(records, cfg.text.context_turns)
    for record in records:
        record.setdefault("context", "")
    info = {"ignored_columns": [c for c in columns if c not in COLUMNS]}
    if "split" in columns or not require_labels:
        info["splits"] = {"source": "the split column" if "split" in columns else "none (prediction)"}
        return records, quarantined, info
    speakers = [r["speaker"] for r in records]
    emotions = [r["emotion"] for r in records]
    if records and all(speakers):
        split_of = stratified_speaker_split(speakers, emotions, cfg.split, cfg.seed)
        for r in records:
            r["split"] = split_of[r["speaker"]]
        method = "drawn: stratified by label, speaker-disjoint"
    else:
        for r, split in zip(records, stratified_split(emotions, cfg.split, cfg.seed)):
            r["split"] = split
        method = "drawn: stratified by label (not every row names a speaker)"
    info["splits"] = {"source": method, "seed": cfg.seed, "ratios": cfg.split.model_dump()}
    return records, quarantined, info


def _record(row: dict, root: Path, cfg: ManifestDataset, labels: LabelMap, seen: set[str],
            require_labels: bool, label_map_origin: str) -> dict:
    """One row -> a sample record; ``ValueError`` says why it cannot be one."""
    sample_id = row.get("sample_id", "")
    if not sample_id:
        raise ValueError("empty sample_id")
    if sample_id in seen:
        raise ValueError(f"duplicate sample_id {sample_id!r}")
    media = {}
    for column in ("video", "audio"):
        value = row.get(column, "")
        media[column] = None
        if value:
            file = root / value
            if not file.is_file():
                raise ValueError(f"missing file {column}={value!r} (looked for {file})")
            media[column] = str(file)
    text = row.get("text", "")
    if not (media["video"] or media["audio"] or text):
        raise ValueError("no input: video, audio and text are all empty")
    raw_label = row.get("label", "")
    if raw_label and raw_label not in cfg.label_map:
        raise ValueError(unknown_label(raw_label, cfg.label_map, label_map_origin))
    if not raw_label and require_labels:
        raise ValueError("no label (training data needs one per row)")
    emotion = cfg.label_map[raw_label] if raw_label else ""
    raw_split = row.get("split", "").lower()
    if raw_split and raw_split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {row['split']!r}; expected one of {sorted(SPLIT_NAMES)}")
    if "split" in row and not raw_split and require_labels:
        raise ValueError("empty split (the table has a split column)")
    age = row.get("age", "")
    try:
        age_value = float(age) if age else None
        dialogue_id, turn = _integer(row.get("dialogue_id", "")), _integer(row.get("turn", ""))
    except ValueError:
        raise ValueError(f"age={age!r}, dialogue_id={row.get('dialogue_id')!r}, turn={row.get('turn')!r}: "
                         f"expected numbers") from None
    return {
        "sample_id": sample_id,
        "split": SPLIT_NAMES.get(raw_split, "predict" if not require_labels else None),
        "emotion": emotion,
        "label": labels.id_of(emotion) if emotion else -1,
        "text": text,
        "speaker": row.get("speaker", ""),
        "gender": row.get("gender", "") or None,
        "age": age_value,
        "dialogue_id": dialogue_id,
        "utterance_id": turn,
        "video_path": media["video"],
        # as in MELD's layout: without its own audio file, a video's sound track
        "audio_path": media["audio"] or media["video"],
    }


def _integer(value: str) -> int | None:
    """"7", or "7.0" (a JSONL or Parquet column with gaps reads as floats) -> 7; "" -> None."""
    if not value:
        return None
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)

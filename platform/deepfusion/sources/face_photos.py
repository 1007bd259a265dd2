"""Labelled face photos described by a ``MANIFEST.csv`` (``path,label[,...]``).

Labels reach the emotions through an explicit ``label_map``; a label it does not name
(``contempt``) and a missing file are quarantined with the reason, never guessed.
"""

from __future__ import annotations

from pathlib import Path

from deepfusion.labels import EMOTIONS, LabelMap
from deepfusion.sources import LayoutError, Quarantined, csv_manifest_rows

REQUIRED_COLUMNS = ("path", "label")


def scan_face_photos(manifest: Path, label_map: dict[str, str]) -> tuple[list[dict], list[Quarantined]]:
    manifest = Path(manifest)
    if not manifest.is_file():
        raise LayoutError(f"face photo manifest not found: {manifest}")
    labels = LabelMap(EMOTIONS)
    records, quarantined = [], []
    for where, row in csv_manifest_rows(manifest, REQUIRED_COLUMNS, quarantined):
        raw = row["label"].strip()
        if raw not in label_map:
            quarantined.append(Quarantined(where, f"label {raw!r} is not in label_map {sorted(label_map)}"))
            continue
        path = manifest.parent / row["path"].strip()
        if not path.is_file():
            quarantined.append(Quarantined(str(path), "missing file"))
            continue
        emotion = label_map[raw]
        records.append({"sample_id": row["path"].strip(), "path": str(path), "emotion": emotion,
                        "label": labels.id_of(emotion), "source": where})
    return records, quarantined

"""Readers of on-disk dataset layouts into plain sample records (no decoding, no Ray).

A scan returns ``(records, quarantined)``: records are dicts ready for Ray Data; every
input that cannot become a sample (unknown label, malformed row, missing file) is a
``Quarantined`` entry with its reason, so nothing is dropped without a trace. A layout
that is wrong as a whole (missing root, csv or column) raises ``LayoutError`` at once.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


class LayoutError(ValueError):
    """The dataset's layout itself is wrong; the message names the path."""


@dataclass(frozen=True)
class Quarantined:
    source: str  # a file path, or "file.csv:LINE" for a csv row
    reason: str
    stage: str = "scan"  # "scan" (layout/metadata) or "decode" (media)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def unknown_label(raw: str, label_map: dict[str, str], origin: str = "label_map") -> str:
    """Why a row's label is quarantined: the label, and the map it is not in (named by
    ``origin``: the dataset's ``label_map``, a checkpoint's, ``--label-map``)."""
    known = ", ".join(f"{k} -> {v}" for k, v in label_map.items())
    return f"unknown label {raw!r}: not in {origin} ({known})"


def csv_manifest_rows(manifest: Path, required: tuple[str, ...],
                      quarantined: list[Quarantined]) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` for each well-formed row of a csv manifest (``where`` is
    ``file.csv:LINE``). A missing required column is a ``LayoutError``; a row with the
    wrong number of fields goes to ``quarantined``."""
    with open(manifest, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{manifest}: missing column(s) {missing}; header is {reader.fieldnames}")
        for row in reader:
            where = f"{manifest}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                quarantined.append(Quarantined(where, "malformed row: wrong number of fields"))
                continue
            yield where, row

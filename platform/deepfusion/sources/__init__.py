"""Readers of on-disk dataset layouts into plain sample records (no decoding, no Ray).

A scan returns ``(records, quarantined)``: records are dicts ready for Ray Data; every
input that cannot become a sample (unknown label, malformed row, missing file) is a
``Quarantined`` entry with its reason, so nothing is dropped without a trace. A layout
that is wrong as a whole (missing root, csv or column) raises ``LayoutError`` at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class LayoutError(ValueError):
    """The dataset's layout itself is wrong; the message names the path."""


@dataclass(frozen=True)
class Quarantined:
    source: str  # a file path, or "file.csv:LINE" for a csv row
    reason: str
    stage: str = "scan"  # "scan" (layout/metadata) or "decode" (media)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

"""Class lists and explicit maps from a dataset's labels onto them.

A dataset declares its classes (``classes: [...]``, or the ordered targets of its
``label_map``); the constants here are only the defaults of the layouts that have one
(MELD's seven emotions, the paper's three textile classes). Class order is part of a
model's contract: a checkpoint trained with one order and fused with another silently
scrambles predictions. Every label id in the platform comes from a ``LabelMap`` made from
a dataset's declared classes, never from ``sorted(set(...))`` of whatever a dataset holds.
"""

from __future__ import annotations

from dataclasses import dataclass

# MELD's seven emotions, in MELD's own (alphabetical) order.
EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

TEXTILE_CLASSES: tuple[str, ...] = ("clothes_dump", "textile_dye", "textile_billboard")

# RAVDESS/TESS name their emotions differently; "calm" has no MELD counterpart and is
# folded into "neutral" (documented in datasets/speech.md). Its targets first appear in
# ``EMOTIONS``' order, so the classes it declares are MELD's seven in MELD's order.
SPEECH_TO_EMOTION: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fearful": "fear",
    "happy": "joy",
    "neutral": "neutral",
    "calm": "neutral",
    "sad": "sadness",
    "surprised": "surprise",
}

# Face-expression photo labels (muxspace/facial_expressions and most FER corpora) onto the
# emotions; "contempt" has no MELD counterpart and is left out (quarantined), not guessed.
FACE_TO_EMOTION: dict[str, str] = {
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "joy",
    "neutral": "neutral",
    "sadness": "sadness",
    "surprise": "surprise",
}

# The FER2013 classifier's outputs (its class order) onto the emotions: the same seven.
FER2013_TO_EMOTION: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}


def ordered_targets(label_map: dict[str, str]) -> tuple[str, ...]:
    """A label map's targets, each once, in the order they first appear: the classes a
    dataset declares by its ``label_map`` alone."""
    return tuple(dict.fromkeys(label_map.values()))


@dataclass(frozen=True)
class LabelMap:
    """An ordered list of class names; ids are positions in it."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate class names in label map: {list(self.names)}")

    def id_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown label {name!r}; expected one of {list(self.names)}") from None

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

"""Enforcing ``MediaLimits`` while decoding: header caps and a wall-clock deadline."""

from __future__ import annotations

import time

from deepfusion.config import MediaLimits
from deepfusion.media import DecodeTimeout, MediaLimitExceeded

DEFAULT_LIMITS = MediaLimits()


class Deadline:
    """``MediaLimits.decode_timeout_s`` for one file: decoders call ``check`` per frame or
    chunk, so a slow file stops within one frame of the limit and frees its worker."""

    def __init__(self, seconds: float, path: str):
        self.seconds, self.path = seconds, path
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise DecodeTimeout(f"{self.path}: decoding took longer than {self.seconds:g} s "
                                f"(limits.decode_timeout_s)")


def over_limit(path: str, what: str, value: float, limit_name: str, limit: float) -> MediaLimitExceeded:
    """The error for a file whose ``what`` (e.g. "duration 700 s") is over ``limits.<limit_name>``."""
    return MediaLimitExceeded(f"{path}: {what} {_number(value)} is over the limit of {_number(limit)} "
                              f"(limits.{limit_name})", limit_name)


def _number(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() else f"{value:g}"

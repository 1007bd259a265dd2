"""Where an artifact is: a local folder (an absolute ``pathlib.Path``) or a storage URI
(``s3://bucket/prefix``, ``gs://...``, any ``pyarrow.fs`` scheme), named and joined the same
way. Plain Python, so configs can hold locations; reading and writing them is
``deepfusion.storage``."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath

Location = Path | str


def is_uri(value) -> bool:
    """``scheme://...`` other than ``file://`` (a local path)."""
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


def location(value, base: Path | None = None) -> Location:
    """A config value as a location: URIs as given (without a trailing slash), local paths
    made absolute against ``base`` (default: the current folder)."""
    if isinstance(value, str) and value.startswith("file://"):
        value = value[len("file://"):]
    if is_uri(value):
        scheme, rest = value.split("://", 1)
        return f"{scheme.lower()}://{rest.rstrip('/')}"
    path = Path(value)
    return path if path.is_absolute() else Path(base or Path.cwd()) / path


def join(where: Location, *parts: str) -> Location:
    if is_uri(where):
        return "/".join([where.rstrip("/"), *(str(p).strip("/") for p in parts)])
    return Path(where).joinpath(*parts)


def name(where: Location) -> str:
    return PurePosixPath(_key(where)).name if is_uri(where) else Path(where).name


def parent(where: Location) -> Location:
    if is_uri(where):
        return where.rsplit("/", 1)[0]
    return Path(where).parent


def _key(uri: str) -> str:
    return uri.split("://", 1)[1]


def relative(target: Location, base: Location) -> str | None:
    """``target`` relative to the folder ``base`` when both are in one place (the same local
    file system, or the same bucket of one store), so the two can move together; else None."""
    if is_uri(target) != is_uri(base):
        return None
    if not is_uri(target):
        return os.path.relpath(Path(target).resolve(), Path(base).resolve())
    (t_scheme, t_key), (b_scheme, b_key) = target.split("://", 1), base.split("://", 1)
    if t_scheme != b_scheme or t_key.split("/", 1)[0] != b_key.split("/", 1)[0]:
        return None
    return posixpath.relpath(t_key, b_key)


def canonical(where: Location) -> str:
    """One spelling per place, to compare locations: a URI as given, a path resolved."""
    return where.rstrip("/") if is_uri(where) else str(Path(where).resolve())

"""Where an artifact is: a local folder (an absolute ``pathlib.Path``) or a storage URI
(``s3://bucket/prefix``, ``gs://...``, any ``pyarrow.fs`` scheme), named and joined the same
way. Plain Python, so configs can hold locations; reading and writing them is
``deepfusion.storage``."""

from __future__ import annotations

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


def display(where: Location) -> str:
    return where if is_uri(where) else str(where)

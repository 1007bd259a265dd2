"""Where artifacts live: a local folder or a storage URI (``s3://``, ``gs://``, any
``pyarrow.fs`` scheme), read and written the same way.

A *location* is a ``pathlib.Path`` (an absolute local path) or a URI string. Ray Data,
Train and Tune are handed the location itself: their workers, on any node, read and write
the store directly, with the credentials of the node they run on (``AWS_*`` environment
variables, an instance role, ``GOOGLE_APPLICATION_CREDENTIALS``; for an S3-compatible
store such as MinIO, ``AWS_ENDPOINT_URL``), exactly as ``pyarrow.fs`` resolves them.

What the platform's own code reads as files (a checkpoint's weights, a logit cache, an
Optuna journal) goes through a node-local *mirror* of the URI, under
``$DEEPFUSION_STORAGE_CACHE`` (default ``~/.cache/deepfusion/storage/<scheme>/<bucket>/<key>``):
``materialize`` brings a URI's files there (only those whose size or age differ), and
``push`` sends a local folder's files to a URI. Because the mirror keeps the URI's layout,
a path relative to one artifact (a fusion card's backbones) names the same artifact in the
store and in the mirror; ``remote_of`` maps a mirrored path back to its URI.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from pathlib import Path

import pyarrow.fs as pafs

from deepfusion.locations import Location, canonical, is_uri, join, location, name, parent, relative

__all__ = ["Location", "StorageError", "canonical", "check_reachable", "exists", "files", "is_dir",
           "is_file", "is_uri", "join", "location", "location_in", "materialize", "mirror_path", "name", "parent",
           "push", "read_bytes", "read_text", "relative", "remote_of", "remove", "resolve", "write_bytes",
           "write_text"]


CHECK_TIMEOUT_S = float(os.environ.get("DEEPFUSION_STORAGE_CHECK_TIMEOUT_S", "30"))


class StorageError(ValueError):
    """A storage URI that cannot be used (unknown scheme, no credentials, unreachable
    endpoint, missing bucket): the message names the config key and the URI."""


@functools.cache
def _filesystem(scheme_and_bucket: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(scheme_and_bucket)[0]


def resolve(where: Location) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow.fs`` file system and the path in it (what Ray's ``storage_filesystem``
    and ``read_parquet(filesystem=)`` take)."""
    if not is_uri(where):
        return pafs.LocalFileSystem(), str(Path(where))
    scheme, rest = where.split("://", 1)
    bucket = rest.split("/", 1)[0]
    try:
        return _filesystem(f"{scheme}://{bucket}"), rest
    except (ValueError, OSError) as err:
        raise StorageError(f"{where}: not a storage URI this machine can open ({err})") from None


_SCHEMES = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs", "abfs": "abfs"}


def location_in(filesystem: pafs.FileSystem, path: str) -> Location:
    """A path in a ``pyarrow.fs`` file system (a Ray checkpoint's ``.filesystem`` and
    ``.path``) as a location: a local path, or a URI of the store's scheme."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(path)
    scheme = _SCHEMES.get(filesystem.type_name)
    if scheme is None:
        raise StorageError(f"{path}: on a {filesystem.type_name} file system this version cannot name")
    return f"{scheme}://{path}"


def _info(where: Location) -> pafs.FileInfo:
    fs, path = resolve(where)
    return fs.get_file_info(path)


def exists(where: Location) -> bool:
    return _info(where).type != pafs.FileType.NotFound


def is_file(where: Location) -> bool:
    return _info(where).type == pafs.FileType.File


def is_dir(where: Location) -> bool:
    """A folder; on an object store, a prefix with at least one object under it."""
    if not is_uri(where):
        return Path(where).is_dir()
    fs, path = resolve(where)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        return True
    return bool(fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True)))


def read_bytes(where: Location) -> bytes:
    """A file's bytes; ``FileNotFoundError`` naming it when there is none."""
    if not is_uri(where):
        return Path(where).read_bytes()
    fs, path = resolve(where)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} not found") from None
    except OSError as err:
        if "not found" in str(err).lower() or "NoSuchKey" in str(err):
            raise FileNotFoundError(f"{where} not found") from None
        raise


def read_text(where: Location) -> str:
    return read_bytes(where).decode()


def write_bytes(where: Location, data: bytes) -> None:
    """Write a whole file so that a reader never sees half of it: locally via a sibling
    ``.partial`` file and a rename, on an object store by one upload (objects appear whole)."""
    if not is_uri(where):
        path = Path(where)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(path.name + ".partial")
        staging.write_bytes(data)
        staging.replace(path)
        return
    fs, path = resolve(where)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(where: Location, text: str) -> None:
    write_bytes(where, text.encode())


def files(where: Location) -> dict[str, tuple[int, int]]:
    """Every file under a folder: relative path -> (size, mtime in ns; 0 where the store
    keeps none). Empty when there is no such folder."""
    fs, path = resolve(where)
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            rel = info.path[len(path.rstrip("/")) + 1:]
            found[rel] = (info.size, info.mtime_ns or 0)
    return found


def remove(where: Location) -> None:
    """Delete a file or a folder and everything under it (nothing when absent)."""
    if not is_uri(where):
        path = Path(where)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return
    fs, path = resolve(where)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif files(where) or info.type == pafs.FileType.Directory:
        fs.delete_dir(path)


# -- node-local mirrors of URIs ------------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("DEEPFUSION_STORAGE_CACHE") or Path.home() / ".cache" / "deepfusion" / "storage")


def mirror_path(uri: str) -> Path:
    """The local folder that mirrors ``uri`` on this node."""
    scheme, rest = uri.split("://", 1)
    return cache_root() / scheme / rest


def remote_of(path: Path) -> str | None:
    """The URI a mirrored local path stands for; None for any other path."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(cache_root())
    except ValueError:
        return None
    scheme, *rest = rel.parts
    return f"{scheme}://{'/'.join(rest)}" if rest else None


_pull_lock = threading.Lock()


def materialize(where: Location) -> Path:
    """A local folder (or file) holding what ``where`` holds: a local path as it is; a URI
    mirrored on this node, fetching only files whose size or age changed. A URI with
    nothing under it raises ``FileNotFoundError`` naming it."""
    if not is_uri(where):
        return Path(where)
    local = mirror_path(where)
    fs, path = resolve(where)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        _fetch(fs, path, local, info.size, info.mtime_ns)
        return local
    remote = files(where)
    if not remote:
        raise FileNotFoundError(f"{where} not found (no files under it)")
    with _pull_lock:
        for rel, (size, mtime_ns) in remote.items():
            _fetch(fs, f"{path.rstrip('/')}/{rel}", local / rel, size, mtime_ns)
        mirrored = {p.relative_to(local).as_posix() for p in local.rglob("*")
                    if p.is_file() and not p.name.endswith(".partial")}
        for stale in mirrored - set(remote):  # deleted in the store since the last pull
            (local / stale).unlink(missing_ok=True)
    return local


def _fetch(fs: pafs.FileSystem, path: str, target: Path, size: int, mtime_ns: int | None) -> None:
    """Fetch one file unless the local copy has its size and was made after it."""
    if target.is_file() and target.stat().st_size == size and (
            not mtime_ns or target.stat().st_mtime_ns >= mtime_ns):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with fs.open_input_stream(path) as source, open(staging, "wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    staging.replace(target)


def push(local: Path, where: str, *, delete: bool = False) -> None:
    """Send a local folder's files to the storage URI ``where``: those it lacks or holds
    older copies of. ``delete``: also remove files under ``where`` that ``local`` does not have."""
    local = Path(local)
    fs, path = resolve(where)
    have = files(where)
    mine = {p.relative_to(local).as_posix(): p for p in local.rglob("*")
            if p.is_file() and not p.name.endswith(".partial")}
    for rel, source in mine.items():
        size, mtime_ns = have.get(rel, (None, 0))
        # unchanged: the same size, and not written since the store's copy was made
        if size == source.stat().st_size and mtime_ns and source.stat().st_mtime_ns <= mtime_ns:
            continue
        with open(source, "rb") as handle, fs.open_output_stream(f"{path}/{rel}") as sink:
            shutil.copyfileobj(handle, sink, 1 << 20)
    if delete:
        for rel in set(have) - set(mine):
            fs.delete_file(f"{path}/{rel}")


def check_reachable(where: Location, key: str) -> None:
    """Fail before any work when ``where`` (the value of config key ``key``) cannot be
    used: an unknown scheme, missing credentials, an unreachable endpoint, a missing bucket."""
    if not is_uri(where):
        return
    scheme, rest = where.split("://", 1)
    bucket = rest.split("/", 1)[0]
    hint = {"s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or give the nodes an instance role), "
                  "and AWS_ENDPOINT_URL for an S3-compatible store such as MinIO",
            "gs": "set GOOGLE_APPLICATION_CREDENTIALS or run on nodes with a service account"}.get(
        scheme, "see pyarrow.fs for this scheme's settings")
    answer: dict = {}

    def ask() -> None:  # a daemon thread: a store that never answers does not keep the process alive
        try:
            answer["info"] = resolve(where)[0].get_file_info(bucket)
        except (OSError, ValueError) as err:
            answer["error"] = err

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(CHECK_TIMEOUT_S)
    if asking.is_alive():
        raise StorageError(f"{key}: cannot use {where}: no answer from the store in {CHECK_TIMEOUT_S:.0f} s "
                           f"(credentials being looked for, or an endpoint that does not answer); {hint}")
    if "error" in answer:
        raise StorageError(f"{key}: cannot use {where}: {_first_line(answer['error'])}; {hint}")
    info = answer["info"]
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{key}: cannot use {where}: bucket {bucket!r} does not exist "
                           f"(create it first, e.g. `aws s3 mb {scheme}://{bucket}`)")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__

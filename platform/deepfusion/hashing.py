"""The one content-hash helper: sha256 of bytes, files, named sets of files, JSON values
and (by stat, without reading) whole folders.

Every cache key, checkpoint hash, manifest fingerprint and freshness record of the
platform is made here, so two places never hash the same thing two ways.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Bytes in memory (a manifest read from a storage URI)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """A file's bytes, read in blocks (model weights run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(folder: Path, names: tuple[str, ...]) -> str:
    """Named files of a folder, each prefixed by its name: a checkpoint's content hash.
    A missing file raises ``FileNotFoundError`` naming it."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_json(value) -> str:
    """A JSON-able value, keys sorted (so dict order never changes a key)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sha256_of(value) -> str:
    """A (small) file's bytes for a ``Path``, else the JSON value."""
    return sha256_file(value) if isinstance(value, Path) else sha256_json(value)


def tree_fingerprint(root: Path) -> dict:
    """Every file's relative path, size and mtime under ``root`` (a stat, no reads)."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        st = path.stat()
        digest.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        count += 1
    return {"root": str(Path(root).resolve()), "files": count, "sha256": digest.hexdigest()}


def seed_from(*parts) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and machines)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF

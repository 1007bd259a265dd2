"""What a file is, from its first bytes (its "magic"), not from its name or a declared type.

Decoders refuse a file whose bytes are not of their kind (OpenCV would read a JPEG as a
one-frame video), and Serve checks an upload's declared content type against it.
"""

from __future__ import annotations

import os

# Containers OpenCV/FFmpeg read frames from (mp4 is also MOV and M4A; matroska also WebM);
# PyAV reads their sound tracks.
VIDEO_FORMATS = frozenset({"mp4", "matroska", "avi", "flv"})
SOUND_FILE_FORMATS = frozenset({"wav", "flac", "ogg"})  # read by libsndfile
AUDIO_STREAM_FORMATS = frozenset({"mp3", "aac"})  # bare audio streams, read by PyAV
AUDIO_FORMATS = SOUND_FILE_FORMATS | AUDIO_STREAM_FORMATS | VIDEO_FORMATS  # any of them has a sound track
IMAGE_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF"}

HEAD_BYTES = 16


def sniff(head: bytes) -> str | None:
    """The format of a file starting with ``head`` (its first 16 bytes), or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF":
        return {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}.get(head[8:12])
    if head[:4] == b"RF64" and head[8:12] == b"WAVE":
        return "wav"
    # ISO base media (mp4, mov, m4a): a box size, then the box type.
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"FLV":
        return "flv"
    if head[:3] == b"ID3":
        return "mp3"  # an ID3 tag, then MPEG audio frames
    if head[:1] == b"\xff" and len(head) > 1 and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame sync
        return "aac" if head[1] & 0x06 == 0 else "mp3"  # layer bits 00: ADTS (AAC); else MPEG layer I-III
    if head[:4] == b"OggS":
        return "ogg"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def sniff_file(path: str | os.PathLike) -> str | None:
    with open(path, "rb") as handle:
        return sniff(handle.read(HEAD_BYTES))

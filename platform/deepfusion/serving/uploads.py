"""Uploaded files, before any decoding: the declared content type must be one the route
accepts and must match the file's bytes (``media.formats``); a file is copied to disk in
chunks and cut off at ``serve.limits.max_upload_mb`` (an image, small, is read once).

Video and audio take every container and codec ingestion decodes: MP4/MOV, MKV/WebM,
AVI and FLV video (their sound track is the audio when none is sent), WAV, FLAC, OGG,
MP3, AAC and M4A audio. ``application/octet-stream`` (what many clients send for a file
of unknown type) is accepted too: the bytes alone then say what the file is."""

from pathlib import Path

from fastapi import UploadFile

from deepfusion.config.serving import RequestLimits
from deepfusion.media.formats import AUDIO_FORMATS, HEAD_BYTES, IMAGE_FORMATS, VIDEO_FORMATS, sniff
from deepfusion.serving.answers import bad_request

UNTYPED = "application/octet-stream"
# Declared content type -> the formats (by magic bytes, ``media.formats``) it may hold.
VIDEO_TYPES = {
    "video/mp4": {"mp4"}, "video/quicktime": {"mp4"}, "video/x-m4v": {"mp4"},
    "video/x-matroska": {"matroska"}, "video/webm": {"matroska"},
    "video/x-msvideo": {"avi"}, "video/avi": {"avi"}, "video/msvideo": {"avi"},
    "video/x-flv": {"flv"}, "video/flv": {"flv"},
    UNTYPED: set(VIDEO_FORMATS),
}
AUDIO_TYPES = {
    **dict.fromkeys(("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"), {"wav"}),
    **dict.fromkeys(("audio/flac", "audio/x-flac"), {"flac"}),
    **dict.fromkeys(("audio/ogg", "audio/vorbis", "audio/opus"), {"ogg"}),
    **dict.fromkeys(("audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg-3"), {"mp3"}),
    **dict.fromkeys(("audio/mp4", "audio/m4a", "audio/x-m4a"), {"mp4"}),
    **dict.fromkeys(("audio/aac", "audio/x-aac", "audio/aacp"), {"aac"}),
    "audio/webm": {"matroska"},
    UNTYPED: set(AUDIO_FORMATS),
}
CHUNK_BYTES = 1024 * 1024


def image_types(formats: tuple[str, ...]) -> dict[str, set[str]]:
    """The image content types for ``limits.media.image_formats`` (PIL's format names)."""
    return {f"image/{kind}": {kind} for kind, name in IMAGE_FORMATS.items() if name in formats}


def check_type(upload: UploadFile, field: str, types: dict[str, set[str]]) -> None:
    if upload.content_type not in types:
        raise bad_request(415, field, f"content type {upload.content_type!r}; expected one of {sorted(types)}")


def check_magic(head: bytes, upload: UploadFile, field: str, types: dict[str, set[str]]) -> None:
    kind = sniff(head)
    if kind not in types[upload.content_type]:
        raise bad_request(415, field, f"declared {upload.content_type}, but the file's bytes are "
                                      f"{kind or 'of no known format'}")


def too_big(field: str, limits: RequestLimits):
    return bad_request(413, field, f"larger than the {limits.max_upload_mb:g} MB limit",
                       limit="serve.limits.max_upload_mb")


async def read_upload(upload: UploadFile, field: str, types: dict[str, set[str]], limits: RequestLimits) -> bytes:
    """A small upload (an image) as bytes: read once, at most the limit plus one byte."""
    check_type(upload, field, types)
    data = await upload.read(limits.upload_bytes + 1)
    if len(data) > limits.upload_bytes:
        raise too_big(field, limits)
    if not data:
        raise bad_request(422, field, "empty file")
    check_magic(data[:HEAD_BYTES], upload, field, types)
    return data


async def save_upload(upload: UploadFile | None, field: str, types: dict[str, set[str]], path: Path,
                      limits: RequestLimits) -> str | None:
    """An upload copied to ``path`` chunk by chunk: never whole in memory, cut off at the limit."""
    if upload is None:
        return None
    check_type(upload, field, types)
    size, head = 0, b""
    with open(path, "wb") as out:
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            if size > limits.upload_bytes:
                raise too_big(field, limits)
            head = head or chunk[:HEAD_BYTES]
            out.write(chunk)
    if size == 0:
        raise bad_request(422, field, "empty file")
    check_magic(head, upload, field, types)
    return str(path)

"""Folders of new media for prediction: clips paired by file stem, or images.

    clips/x.mp4  clips/x.wav  clips/x.txt   -> one sample "x": video, audio, transcript
    photos/a.jpg, photos/sub/b.png          -> samples "a.jpg", "sub/b.png" (no label)
    photos/<class>/c.jpg                    -> labeled, when every sub-folder is a class

Files of any other type are quarantined with the reason, as are stems with two videos.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from deepfusion.sources import LayoutError, Quarantined

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac")
TEXT_SUFFIXES = (".txt",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise LayoutError(f"folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def scan_media_folder(root: Path) -> tuple[list[dict], list[Quarantined]]:
    """Emotion samples of a folder, paired by stem (relative path without suffix)."""
    root = Path(root)
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    quarantined: list[Quarantined] = []
    for file in _files(root):
        suffix = file.suffix.lower()
        kind = ("video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES
                else "text" if suffix in TEXT_SUFFIXES else None)
        if kind is None:
            quarantined.append(Quarantined(str(file), f"unsupported file type {file.suffix!r}; clips are "
                                           f"{', '.join(VIDEO_SUFFIXES + AUDIO_SUFFIXES + TEXT_SUFFIXES)}"))
            continue
        groups[file.relative_to(root).with_suffix("").as_posix()][kind].append(file)
    records = []
    for stem, files in sorted(groups.items()):
        doubled = [kind for kind, paths in files.items() if len(paths) > 1]
        if doubled:
            quarantined += [Quarantined(str(p), f"two {doubled[0]} files for sample {stem!r}")
                            for p in files[doubled[0]]]
            continue
        [video], [audio], [text_file] = (files.get(k) or [None] for k in ("video", "audio", "text"))
        text = ""
        if text_file is not None:
            try:
                text = text_file.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                quarantined.append(Quarantined(str(text_file), "not UTF-8 text"))
                continue
        if not (video or audio or text):
            quarantined.append(Quarantined(str(text_file), "empty transcript and no media"))
            continue
        records.append({
            "sample_id": stem, "split": "predict", "emotion": "", "label": -1, "text": text, "speaker": "",
            "gender": None, "age": None, "dialogue_id": None, "utterance_id": None, "context": "",
            "video_path": str(video) if video else None,
            "audio_path": str(audio) if audio else (str(video) if video else None),
            "source": str(video or audio or text_file),
        })
    return records, quarantined


def scan_image_files(root: Path, label_map: dict[str, str]) -> tuple[list[dict], list[Quarantined]]:
    """Image samples of a folder: labeled by sub-folder when every sub-folder is a label of
    ``label_map`` (folder name -> class: the image-folder layout), else every image below
    it, unlabeled."""
    root = Path(root)
    files = _files(root)
    folders = {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
    labeled = bool(folders) and folders <= set(label_map)
    records, quarantined = [], []
    for file in files:
        relative = file.relative_to(root)
        if labeled and len(relative.parts) == 1:
            continue  # beside the class folders: a licence or a manifest, not a sample
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            quarantined.append(Quarantined(str(file), f"unsupported file type {file.suffix!r}; images are "
                                           f"{', '.join(IMAGE_SUFFIXES)}"))
            continue
        records.append({"sample_id": relative.as_posix(), "path": str(file),
                        "true_class": label_map[relative.parts[0]] if labeled else None})
    return records, quarantined

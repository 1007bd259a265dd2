"""``root/<class>/*.{jpg,png}``: the image-folder layout (the textile task's, or any photo classes)."""

from __future__ import annotations

from pathlib import Path

from deepfusion.config import ImageFolderDataset
from deepfusion.sources import LayoutError, Quarantined


def image_classes(cfg: ImageFolderDataset) -> tuple[str, ...]:
    """The dataset's classes in the model's output order: the declared list, or the
    folders under ``root`` sorted by name."""
    if cfg.classes is not None:
        return tuple(cfg.classes)
    root = Path(cfg.root)
    found = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))) \
        if root.is_dir() else ()
    if len(found) < 2:
        raise LayoutError(f"{root}: found {len(found)} class folder(s) {list(found)}; an image-folder dataset "
                          f"needs one folder per class, at least two (or declare them: classes: [...])")
    return found


def check_image_folder_layout(cfg: ImageFolderDataset) -> Path:
    """The root and a folder per class exist; returns the root."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise LayoutError(f"image folder root not found: {root}")
    classes = image_classes(cfg)
    missing = [c for c in classes if not (root / c).is_dir()]
    if missing:
        raise LayoutError(
            f"{root}: missing class folder(s) {missing}; expected {root}/<class>/ for each of "
            f"{list(classes)}"
        )
    return root


def scan_image_folder(cfg: ImageFolderDataset) -> tuple[dict[str, list[str]], list[Quarantined]]:
    """Return ``{class: [image paths]}`` and the quarantined entries.

    Files directly under ``root`` (manifests, licences) are not samples and are ignored.
    A sub-folder that is not a configured class holds samples of an unknown label: each
    of its files is quarantined. So is a file with an unsupported extension.
    """
    root = check_image_folder_layout(cfg)
    classes = image_classes(cfg)
    extensions = {e.lower() for e in cfg.extensions}
    paths_by_class: dict[str, list[str]] = {c: [] for c in classes}
    quarantined: list[Quarantined] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if folder.name not in paths_by_class:
            quarantined += [Quarantined(str(f), f"unknown label {folder.name!r} (not in classes "
                                        f"{list(classes)})") for f in files]
            continue
        for f in files:
            if f.suffix.lower() in extensions:
                paths_by_class[folder.name].append(str(f))
            else:
                quarantined.append(Quarantined(str(f), f"unsupported file type {f.suffix!r}"))
    return paths_by_class, quarantined

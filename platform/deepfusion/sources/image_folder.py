"""``root/<class>/*.{jpg,png}``: the textile task's image-folder layout."""

from __future__ import annotations

from pathlib import Path

from deepfusion.config import ImageFolderDataset
from deepfusion.sources import LayoutError, Quarantined


def check_image_folder_layout(cfg: ImageFolderDataset) -> Path:
    """The root and a folder per configured class exist (nothing is listed); returns the root."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise LayoutError(f"image folder root not found: {root}")
    missing = [c for c in cfg.classes if not (root / c).is_dir()]
    if missing:
        raise LayoutError(
            f"{root}: missing class folder(s) {missing}; expected {root}/<class>/ for each of "
            f"{list(cfg.classes)}"
        )
    return root


def scan_image_folder(cfg: ImageFolderDataset) -> tuple[dict[str, list[str]], list[Quarantined]]:
    """Return ``{class: [image paths]}`` and the quarantined entries.

    Files directly under ``root`` (manifests, licences) are not samples and are ignored.
    A sub-folder that is not a configured class holds samples of an unknown label: each
    of its files is quarantined. So is a file with an unsupported extension.
    """
    root = check_image_folder_layout(cfg)
    extensions = {e.lower() for e in cfg.extensions}
    paths_by_class: dict[str, list[str]] = {c: [] for c in cfg.classes}
    quarantined: list[Quarantined] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if folder.name not in paths_by_class:
            quarantined += [Quarantined(str(f), f"unknown label {folder.name!r} (not in classes "
                                        f"{list(cfg.classes)})") for f in files]
            continue
        for f in files:
            if f.suffix.lower() in extensions:
                paths_by_class[folder.name].append(str(f))
            else:
                quarantined.append(Quarantined(str(f), f"unsupported file type {f.suffix!r}"))
    return paths_by_class, quarantined

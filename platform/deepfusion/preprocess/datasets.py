"""The preprocess entry point: each configured dataset -> its shards, manifest and quarantine."""

from __future__ import annotations

import time
from dataclasses import dataclass

from deepfusion import storage
from deepfusion.artifacts.shards import EMOTION_SCHEMA, IMAGE_SCHEMA, read_manifest
from deepfusion.config import (
    DatasetConfig,
    ImageFolderDataset,
    ManifestDataset,
    MeldDataset,
    PreprocessConfig,
    SpeechDataset,
)
from deepfusion.preprocess.emotion import build_emotion_shards
from deepfusion.preprocess.images import build_image_shards
from deepfusion.preprocess.writer import (
    dataset_freshness,
    is_up_to_date,
    publish,
    staging_dir,
    write_manifest,
    write_quarantine,
)


@dataclass(frozen=True)
class PreprocessResult:
    name: str
    out_dir: storage.Location
    skipped: bool  # True: inputs and config unchanged, nothing was redone
    manifest: dict


def check_layout(dataset: DatasetConfig) -> None:
    """Refuse a dataset whose layout is wrong as a whole (missing root, csv, class or media
    folder, table) with the ``LayoutError`` its scan would raise, reading no file: what a job
    checks before it starts Ray."""
    from deepfusion.sources.image_folder import check_image_folder_layout
    from deepfusion.sources.manifest import check_manifest_layout
    from deepfusion.sources.meld import check_meld_layout
    from deepfusion.sources.speech import check_speech_layout

    checks = {ImageFolderDataset: check_image_folder_layout, MeldDataset: check_meld_layout,
              SpeechDataset: check_speech_layout, ManifestDataset: check_manifest_layout}
    checks[type(dataset)](dataset)


def dataset_modalities(dataset: DatasetConfig) -> set[str]:
    """What a dataset's samples can carry (``image``, or ``video`` / ``audio`` / ``text``),
    known before it is preprocessed: from its layout, or a manifest table's non-empty
    columns (a video's own sound track is audio). What a pipeline checks its models against."""
    if isinstance(dataset, ImageFolderDataset):
        return {"image"}
    if isinstance(dataset, SpeechDataset):
        return {"audio", "text"}
    if isinstance(dataset, MeldDataset):
        return {"text"} if dataset.media_dirs is None else {"video", "audio", "text"}
    from deepfusion.sources.manifest import check_manifest_layout, read_table

    rows, columns, _ = read_table(check_manifest_layout(dataset))
    have = {c for c in ("video", "audio", "text") if c in columns and any(row.get(c) for row in rows)}
    return have | ({"audio"} if "video" in have else set())


def preprocess(cfg: PreprocessConfig, force: bool = False) -> list[PreprocessResult]:
    """Preprocess every dataset of ``cfg`` into ``cfg.output_dir/<name>/`` (Ray must be up)."""
    results = []
    for dataset in cfg.datasets:
        out_dir = storage.join(cfg.output_dir, dataset.name)
        freshness = dataset_freshness(dataset)
        if not force and freshness and is_up_to_date(out_dir, freshness):
            results.append(PreprocessResult(dataset.name, out_dir, True, read_manifest(out_dir)))
            continue
        started = time.perf_counter()
        staging = staging_dir(out_dir)
        try:
            if isinstance(dataset, ImageFolderDataset):
                kind, schema = "image_folder", IMAGE_SCHEMA
                counts, shards, quarantined, extra = build_image_shards(dataset, cfg.data, staging)
            else:
                kind, schema = dataset.kind, EMOTION_SCHEMA
                counts, shards, quarantined, extra = build_emotion_shards(dataset, cfg.data, staging)
            write_quarantine(staging, quarantined)
            manifest = write_manifest(
                staging, dataset_config=dataset, kind=kind, schema=schema,
                freshness=freshness, counts=counts, shards=shards, quarantined=quarantined,
                extra=extra | {"wall_s": round(time.perf_counter() - started, 2)},
            )
        except BaseException:
            if staging != out_dir:
                storage.remove(staging)  # the previous output stays as it was
            raise
        publish(staging, out_dir)
        results.append(PreprocessResult(dataset.name, out_dir, False, manifest))
    return results

"""Image-folder dataset -> balanced, stratified, resized Parquet shards (Ray Data)."""

from __future__ import annotations

from pathlib import Path

import ray.data

from deepfusion.artifacts.shards import IMAGE_SCHEMA
from deepfusion.config import DataResources, ImageFolderDataset
from deepfusion.labels import LabelMap
from deepfusion.preprocess.image_rows import ImageRowRenderer, probe_images
from deepfusion.preprocess.quarantine import collect, remote_quarantine_log
from deepfusion.preprocess.writer import write_shards
from deepfusion.ray_runtime import reading_local_files
from deepfusion.sources import Quarantined
from deepfusion.sources.image_folder import scan_image_folder
from deepfusion.splits import exact_split_counts, plan_balanced_split


def build_image_shards(cfg: ImageFolderDataset, data: DataResources, staging: Path):
    """Scan, probe, split, augment and write; returns (counts, shards, quarantined, extra)."""
    paths_by_class, quarantined = scan_image_folder(cfg)
    classes = tuple(paths_by_class)
    items = [{"path": p, "label_name": c} for c, paths in paths_by_class.items() for p in paths]

    # 1. Decode every original once, in parallel, before any split is drawn.
    probed = (
        ray.data.from_items(items)
        .map_batches(probe_images, batch_format="pandas", batch_size=data.batch_size, fn_kwargs={"limits": cfg.limits},
                     num_cpus=data.num_cpus, compute=ray.data.TaskPoolStrategy(size=data.concurrency),
                     **reading_local_files(data))
        .to_pandas()
    )
    bad = probed[probed["error"].notna()]
    quarantined += [Quarantined(p, e, stage="decode") for p, e in zip(bad["path"], bad["error"])]
    usable = probed[probed["error"].isna()]
    usable_by_class = {c: sorted(usable.loc[usable["label_name"] == c, "path"]) for c in classes}

    # 2. Split the originals, then plan augmented copies for train only.
    plan, unused = plan_balanced_split(usable_by_class, cfg.target_per_class, cfg.split, cfg.seed)
    root = Path(cfg.root)
    planned = [
        {"path": p.path, "relpath": str(Path(p.path).relative_to(root)), "label_name": p.label_name,
         "split": p.split, "copy_index": p.copy_index}
        for p in plan
    ]

    # 3. Resize (and augment) in parallel and write.
    quarantine_log = remote_quarantine_log()
    labels = LabelMap(classes)
    rendered = ray.data.from_items(planned).map_batches(
        ImageRowRenderer, batch_format="pandas", batch_size=data.batch_size,
        fn_constructor_kwargs={"dataset_name": cfg.name, "labels": labels,
                               "image_size": cfg.image_size, "augment": cfg.augment,
                               "seed": cfg.seed, "quarantine": quarantine_log, "limits": cfg.limits},
        num_cpus=data.num_cpus, compute=ray.data.ActorPoolStrategy(size=data.concurrency),
        **reading_local_files(data),
    )
    counts, shards = write_shards(rendered, IMAGE_SCHEMA, staging, "label_name", data.rows_per_shard, data.num_cpus)
    originals = {c: len(paths) for c, paths in usable_by_class.items()}
    extra = {
        "label_map": labels.to_dict(),
        "image_shape": [cfg.image_size, cfg.image_size, 3],
        "usable_originals": originals,
        "augmented_copies": {c: sum(1 for p in plan if p.label_name == c and p.copy_index) for c in classes},
        "unused_originals": unused,
        "split_counts_per_class": exact_split_counts(cfg.target_per_class, cfg.split),
    }
    return counts, shards, quarantined + collect(quarantine_log), extra

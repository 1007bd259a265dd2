"""Image-folder samples -> ``IMAGE_SCHEMA`` rows: probe, then resize (+ augment), as Ray Data UDFs."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from deepfusion.augment import augment_image, build_augmentation, copy_seed
from deepfusion.config import AugmentConfig
from deepfusion.ingest.schema import IMAGE_SCHEMA, with_error
from deepfusion.labels import LabelMap
from deepfusion.preprocessing import MediaError
from deepfusion.preprocessing.image import decode_image, load_image

_OUTPUT_SCHEMA = with_error(IMAGE_SCHEMA)


def probe_images(batch: pd.DataFrame) -> pd.DataFrame:
    """Fully decode each file once; ``error`` says why one cannot be used.

    Runs before the split is drawn, so a corrupt file never leaves a split short.
    """
    errors = []
    for path in batch["path"]:
        try:
            decode_image(path)
            errors.append(None)
        except MediaError as err:
            errors.append(str(err))
    return batch.assign(error=errors)


class ImageRowRenderer:
    """Resize each planned image; augmented copies (``copy_index > 0``) are also transformed."""

    def __init__(self, dataset_name: str, labels: LabelMap, image_size: int,
                 augment: AugmentConfig, seed: int):
        self.dataset_name, self.labels, self.size, self.seed = dataset_name, labels, image_size, seed
        self.transform = build_augmentation(augment, image_size)

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        rows = [self._row(r) for r in batch.to_dict("records")]
        return pa.Table.from_pylist(rows, schema=_OUTPUT_SCHEMA)

    def _row(self, record: dict) -> dict:
        path, copy_index = record["path"], int(record["copy_index"])
        suffix = f"#aug{copy_index}" if copy_index else ""
        row = {
            "sample_id": f"{self.dataset_name}/{record['relpath']}{suffix}",
            "split": record["split"],
            "label": self.labels.id_of(record["label_name"]),
            "label_name": record["label_name"],
            "source": path,
            "copy_index": copy_index,
            "image": b"",
            "height": self.size,
            "width": self.size,
            "error": None,
        }
        try:
            image = load_image(path, self.size)
        except MediaError as err:
            return row | {"error": str(err)}
        if copy_index:
            image = augment_image(image, self.transform, copy_seed(self.seed, path, copy_index))
        row["image"] = image.tobytes()
        return row

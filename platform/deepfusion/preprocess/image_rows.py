"""Image-folder samples -> ``IMAGE_SCHEMA`` rows: probe, then resize (+ augment), as Ray Data UDFs."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from deepfusion.artifacts.shards import IMAGE_SCHEMA
from deepfusion.augment import augment_image, build_augmentation, copy_seed
from deepfusion.config import AugmentConfig, MediaLimits
from deepfusion.labels import LabelMap
from deepfusion.media.image import decode_image, load_image
from deepfusion.media.limits import DEFAULT_LIMITS
from deepfusion.preprocess.quarantine import decode_failure, report
from deepfusion.sources import Quarantined


def probe_images(batch: pd.DataFrame, limits: MediaLimits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Fully decode each file once; ``error`` says why one cannot be used (corrupt, over
    ``limits``, or any decoder failure).

    Runs before the split is drawn, so a corrupt file never leaves a split short.
    """
    errors = []
    for path in batch["path"]:
        try:
            decode_image(path, limits)
            errors.append(None)
        except Exception as err:  # noqa: BLE001 - any decoder failure is this file's, not the job's
            errors.append(decode_failure(err))
    return batch.assign(error=errors)


class ImageRowRenderer:
    """Resize each planned image; augmented copies (``copy_index > 0``) are also transformed.

    Files were probed before the split, so a failure here means the file changed since;
    it is reported to ``quarantine`` like any other reject.
    """

    def __init__(self, dataset_name: str, labels: LabelMap, image_size: int,
                 augment: AugmentConfig, seed: int, quarantine, limits: MediaLimits = DEFAULT_LIMITS):
        self.dataset_name, self.labels, self.size, self.seed = dataset_name, labels, image_size, seed
        self.limits = limits
        self.transform = build_augmentation(augment, image_size)
        self.quarantine = quarantine

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        rows, rejected = [], []
        for record in batch.to_dict("records"):
            try:
                rows.append(self._row(record))
            except Exception as err:  # noqa: BLE001 - any decoder failure is this sample's, not the job's
                rejected.append(Quarantined(record["path"], decode_failure(err), stage="decode"))
        report(self.quarantine, rejected)
        return pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)

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
        }
        image = load_image(path, self.size, self.limits)
        if copy_index:
            # Seeded by the path inside the dataset, so a copy of the corpus elsewhere (another
            # clone, a cluster node) augments to the same pixels.
            image = augment_image(image, self.transform, copy_seed(self.seed, record["relpath"], copy_index))
        row["image"] = image.tobytes()
        return row


class ImageDecoder:
    """Images to predict on (``sample_id``, ``path``, ``true_class``) -> resized rows, as
    ingestion resized the training set; a file that cannot be used is reported to
    ``quarantine`` with the reason."""

    def __init__(self, image_size: int, quarantine, limits: MediaLimits = DEFAULT_LIMITS):
        self.size, self.quarantine, self.limits = image_size, quarantine, limits

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows, rejected = [], []
        for record in batch.to_dict("records"):
            try:
                image = load_image(record["path"], self.size, self.limits)
            except Exception as err:  # noqa: BLE001 - any decoder failure is this sample's, not the job's
                rejected.append(Quarantined(record["path"], decode_failure(err), stage="decode"))
                continue
            rows.append({"sample_id": record["sample_id"], "true_class": record["true_class"],
                         "source": record["path"], "image": image.tobytes(), "height": self.size,
                         "width": self.size})
        report(self.quarantine, rejected)
        return pd.DataFrame(rows, columns=["sample_id", "true_class", "source", "image", "height", "width"])

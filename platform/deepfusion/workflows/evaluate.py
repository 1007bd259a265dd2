"""A trained model on labeled data it has never seen (``jobs.evaluate``).

Any layout batch prediction reads (a manifest, a MELD csv, a speech corpus, an image
folder with class sub-folders) goes the way training data went: the layout's reader
(same checks, same quarantine), the ingestion decoders with the preprocessing settings
and speaker ids recorded in the checkpoint's card, the model; then the metrics every
run's test split gets. Evaluation is batch prediction that insists on labels.
"""

from __future__ import annotations

from pathlib import Path

from deepfusion import storage
from deepfusion.config import ConfigError, PredictSection
from deepfusion.workflows.predict import Prediction, predict


def default_out_dir(checkpoint: storage.Location, data: Path) -> storage.Location:
    """``evaluation/<checkpoint>/<data>`` beside the checkpoint (in its store, for one on a
    URI): a run's ``best/`` and an averaged checkpoint beside it never share a folder."""
    checkpoint = storage.location(checkpoint)
    if not storage.is_uri(checkpoint):
        checkpoint = Path(checkpoint).resolve()
    return storage.join(storage.parent(checkpoint), "evaluation", storage.name(checkpoint), Path(data).stem)


def evaluate(checkpoint: Path, data: Path, out_dir: Path | None = None, *, media_dir: Path | None = None,
             cfg: PredictSection = PredictSection(), label_map: dict[str, str] | None = None,
             label_map_origin: str = "--label-map") -> Prediction:
    """Predict ``checkpoint`` over ``data`` into ``out_dir`` (default: ``default_out_dir``)
    and score it (Ray must be up). The data's labels are mapped onto the model's classes
    with the label map of its card, or ``label_map``. The predictions stay in ``out_dir``
    (a rerun reuses those of unchanged rows)."""
    out_dir = out_dir if out_dir is not None else default_out_dir(checkpoint, data)
    result = predict(checkpoint, data, out_dir, media_dir=media_dir, cfg=cfg, label_map=label_map,
                     label_map_origin=label_map_origin)
    if result.evaluation is None:
        where = f", see {result.quarantine_path}" if result.quarantine_path else ""
        raise ConfigError(f"--data: no labeled sample could be predicted in {data} ({result.total} samples, "
                          f"{len(result.quarantined)} quarantined{where}); evaluation needs labels that "
                          f"map onto the model's classes (--label-map; jobs.predict for unlabeled data)")
    return result

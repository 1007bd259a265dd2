"""A trained model on labeled data it has never seen (``jobs.evaluate``).

Any layout batch prediction reads (a manifest, a MELD csv, a speech corpus, an image
folder with class sub-folders) goes the way training data went: the layout's reader
(same checks, same quarantine), the ingestion decoders with the preprocessing settings
and speaker ids recorded in the checkpoint's card, the model; then the metrics every
run's test split gets. Evaluation is batch prediction that insists on labels.
"""

from __future__ import annotations

from pathlib import Path

from deepfusion.config import ConfigError, PredictSection
from deepfusion.workflows.predict import Prediction, predict


def evaluate(checkpoint: Path, data: Path, out_dir: Path, *, media_dir: Path | None = None,
             cfg: PredictSection = PredictSection()) -> Prediction:
    """Predict ``checkpoint`` over ``data`` into ``out_dir`` and score it (Ray must be up).
    The predictions stay in ``out_dir`` (a rerun reuses them)."""
    result = predict(checkpoint, data, out_dir, media_dir=media_dir, cfg=cfg)
    if result.evaluation is None:
        where = f", see {result.quarantine_path}" if result.quarantine_path else ""
        raise ConfigError(f"--data: no labeled sample could be predicted in {data} ({result.total} samples, "
                          f"{len(result.quarantined)} quarantined{where}); evaluation needs labels "
                          f"(use jobs.predict for unlabeled data)")
    return result

"""openSMILE acoustic features of a decoded clip: eGeMAPS or ComParE, functionals and
low-level descriptors (LLDs).

The ``opensmile`` package bundles the SMILExtract library (no system install) and its
standard configurations; this module only picks the set, runs it on the clip the audio
decoder produced (mono float32 at the shards' sample rate) and flattens the result into
the shard row's columns. One ``Smile`` per feature set and level per process: building
one parses its configuration (~50 ms), running it on a 4 s clip takes about as long.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from deepfusion.config.preprocess import OPENSMILE_SETS, OpenSmileConfig, functionals_dim, lld_dim


def opensmile_summary(cfg: OpenSmileConfig) -> dict:
    """What a dataset's manifest says of its features: set, sizes, normalisation."""
    return {"feature_set": cfg.feature_set, "functionals": functionals_dim(cfg.feature_set),
            "lld": lld_dim(cfg.feature_set) if cfg.lld else None, "normalize": cfg.normalize}


@cache
def smile(feature_set: str, level: str):
    """The process's extractor for one set (``egemaps``/``compare``) and level
    (``functionals``/``lld``)."""
    import opensmile

    levels = {"functionals": opensmile.FeatureLevel.Functionals,
              "lld": opensmile.FeatureLevel.LowLevelDescriptors}
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, OPENSMILE_SETS[feature_set][0]),
                           feature_level=levels[level])


def extract(samples: np.ndarray, sample_rate: int, cfg: OpenSmileConfig) -> dict:
    """A clip's features as shard columns: ``audio_functionals`` (one vector),
    ``audio_lld`` (frames x descriptors, row-major, flattened) and ``audio_lld_dim``."""
    signal = np.ascontiguousarray(samples, dtype=np.float32)
    functionals = smile(cfg.feature_set, "functionals").process_signal(signal, sample_rate).to_numpy()
    columns = {"audio_functionals": functionals[0].astype(np.float32), "audio_lld": None, "audio_lld_dim": None}
    if cfg.lld:
        lld = smile(cfg.feature_set, "lld").process_signal(signal, sample_rate).to_numpy(dtype=np.float32)
        columns["audio_lld"], columns["audio_lld_dim"] = lld.reshape(-1), lld.shape[1]
    return columns

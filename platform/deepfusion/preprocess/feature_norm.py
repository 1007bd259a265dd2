"""Per-speaker (or per-corpus) z-normalisation of openSMILE features: a Ray Data step
over decoded rows.

Speaker-independent emotion recognition has to tell a voice's emotion from the voice
itself: a high-pitched speaker is not always surprised. Standardising each feature over
each speaker's own clips (every split; labels are never read) removes that speaker's
offsets and scale before any model sees them. The statistics need every clip of a
speaker, so this is an all-to-all step (Ray Data's ``groupby().map_groups()``) between
decoding and writing, used by preprocessing and by batch prediction alike.

Speakers with fewer than ``min_speaker_clips`` clips (one clip's own statistics would
zero it out) are pooled and normalised as one group; rows without features pass through.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfusion.config.preprocess import OpenSmileConfig

GROUP = "_norm_group"  # the grouping column, dropped again before rows move on
POOLED = "\x00pooled"  # the group of speakers with too few clips (no speaker is named so)
_MIN_STD = 1e-6  # a feature constant over a speaker's clips is centred, not scaled


def normalization_groups(records: list[dict], cfg: OpenSmileConfig) -> dict[str, str]:
    """``{speaker: group}``. ``normalize: speaker``: the speaker itself, or ``POOLED`` when
    it has too few clips; ``corpus``: the speaker's corpus (records without one: one group)."""
    with_audio = [r for r in records if r.get("audio_path")]
    if cfg.normalize == "corpus":
        return {r["speaker"]: f"corpus:{r.get('corpus') or ''}" for r in with_audio}
    clips = Counter(r["speaker"] for r in with_audio)
    return {speaker: speaker if count >= cfg.min_speaker_clips else POOLED for speaker, count in clips.items()}


def normalize_per_group(rows, groups: dict[str, str], schema: pa.Schema, keep: set[str] | None = None):
    """``rows`` (a Ray Dataset of ``schema`` rows) with ``audio_functionals`` and
    ``audio_lld`` standardised per group (``normalization_groups``). Speakers missing from ``groups`` are
    pooled. ``keep``: only these sample ids come out (the statistics still use every row:
    a resumed batch prediction normalises exactly as a whole run does)."""
    keyed = rows.add_column(GROUP, lambda batch: batch["speaker"].map(lambda s: groups.get(s, POOLED)),
                            batch_format="pandas")
    normalized = keyed.groupby(GROUP).map_groups(_standardize_group, fn_kwargs={"schema": schema},
                                                 batch_format="pyarrow")
    if keep is None:
        return normalized
    wanted = pa.array(sorted(keep), type=pa.string())
    return normalized.map_batches(lambda t: t.filter(pc.is_in(t["sample_id"], value_set=wanted)),
                                  batch_format="pyarrow")


def _standardize_group(group: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = {"audio_functionals": _standardize(group.column("audio_functionals").to_pylist(), None)}
    dims = group.column("audio_lld_dim").to_pylist()
    columns["audio_lld"] = _standardize(group.column("audio_lld").to_pylist(), dims)
    table = group.drop_columns([GROUP])
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), schema.field(name),
                                 pa.array(values, type=schema.field(name).type))
    return table.select(schema.names).cast(schema)


def _standardize(rows: list, dims: list | None) -> list:
    """Each present row as (row - mean) / std over the group (frames of every clip for
    LLDs: ``dims`` gives each row's descriptor count); None stays None."""
    present = [i for i, row in enumerate(rows) if row is not None]
    if not present:
        return rows
    arrays = [np.asarray(rows[i], dtype=np.float64).reshape(-1, dims[i]) if dims else
              np.asarray(rows[i], dtype=np.float64)[None] for i in present]
    stacked = np.concatenate(arrays)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    std = np.where(std > _MIN_STD, std, 1.0)
    out = list(rows)
    for i, array in zip(present, arrays):
        out[i] = ((array - mean) / std).astype(np.float32).reshape(-1)
    return out

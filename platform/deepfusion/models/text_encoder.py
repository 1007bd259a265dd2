"""BERT-family text encoder (transformers ``AutoModel``): token states and their mask."""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.config.architectures import TextEncoderConfig
from deepfusion.pretrained import ModelWeightsUnavailable, from_pretrained, resolve_text_model

OFFLINE_HINT = "Offline, use text_encoder.name: offline (the packaged all-MiniLM-L6-v2) or a local folder."


def _known_config(name: str):
    """Architectures buildable without any download (random weights)."""
    from transformers import AutoConfig, BertConfig

    if name in ("bert-base-uncased", "google-bert/bert-base-uncased"):
        return BertConfig()  # its defaults are bert-base-uncased's architecture
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except OSError:
        raise ModelWeightsUnavailable(
            f"no local config for text encoder {name!r}. {OFFLINE_HINT}"
        ) from None


def load_text_backbone(cfg: TextEncoderConfig) -> nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per model load floods the training logs
    name = resolve_text_model(cfg.name)
    if cfg.load_weights:
        model = from_pretrained(AutoModel, name, "text encoder", OFFLINE_HINT)
    else:
        model = AutoModel.from_config(_known_config(name))
    # The pooler is unused (we pool token states ourselves); drop it so DDP sees no idle weights.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


class TextEncoder(nn.Module):
    """``input_ids [B, L]`` -> token states ``[B, L, H]`` and a bool mask of real tokens."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.model = load_text_backbone(cfg)
        self.hidden_size = self.model.config.hidden_size
        self.frozen = cfg.freeze
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()  # no dropout in a frozen encoder
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``states``: this frozen encoder's output for ``input_ids``, computed before; it is
        returned as it is instead of encoding again."""
        if states is not None:
            if not self.frozen:
                raise ValueError("precomputed text states are only valid for a frozen text encoder")
            return states, attention_mask.bool()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return states, attention_mask.bool()


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid steps of ``[B, S, H]`` (mask ``[B, S]``); 0 where none is valid."""
    weights = mask.to(sequence.dtype).unsqueeze(-1)
    return (sequence * weights).sum(1) / weights.sum(1).clamp(min=1.0)

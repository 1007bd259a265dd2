"""A frozen text encoder's token states, computed once per sample in a training run.

A frozen encoder (``text_encoder.freeze``, as the ``cpu-small`` presets have it) gives an
utterance the same token states in every epoch and in both passes (training and
validation), so the training loop encodes each sample the first time it meets it and
reuses the states afterwards: every later epoch skips the encoder. The states reach the
model as ``EmotionInputs.text_states``; a model given them does not run its text encoder
(``models.text_encoder.TextEncoder``). Evaluation, batch prediction and Serve encode as
before, with the same encoder.

Memory: one float32 vector per token per sample (MiniLM: 1.5 KiB a token), held by the
worker that saw the sample; a 64-token utterance is 96 KiB, the 10k MELD training
utterances about 1 GiB at that length.
"""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.models.inputs import EmotionInputs


class TextStateCache:
    """``attach(inputs, sample_ids)`` sets ``inputs.text_states``, encoding only the samples
    not seen before. ``encoder``: the model's frozen ``TextEncoder`` (which refuses states
    when it is not frozen)."""

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder
        self.states: dict[str, torch.Tensor] = {}  # sample id -> [tokens, H], on the CPU

    def __len__(self) -> int:
        return len(self.states)

    def attach(self, inputs: EmotionInputs, sample_ids) -> EmotionInputs:
        ids, mask = inputs.input_ids, inputs.attention_mask
        lengths = mask.sum(dim=1).tolist()
        keys = [str(s) for s in sample_ids]
        missing = [i for i, key in enumerate(keys) if key not in self.states]
        if missing:
            rows = torch.tensor(missing, device=ids.device)
            width = int(max(lengths[i] for i in missing))
            with torch.no_grad():
                states, _ = self.encoder(ids[rows, :width], mask[rows, :width])
            for j, i in enumerate(missing):
                self.states[keys[i]] = states[j, :lengths[i]].float().cpu()
        batch = torch.zeros(len(keys), ids.shape[1], self.encoder.hidden_size)
        for i, key in enumerate(keys):
            batch[i, :lengths[i]] = self.states[key]
        inputs.text_states = batch.to(ids.device, non_blocking=True)
        return inputs


def text_state_cache(model: nn.Module, model_cfg) -> TextStateCache | None:
    """The cache for ``model`` when it reads text through a frozen encoder; else None."""
    module = getattr(model, "module", model)  # under DDP, the wrapped model
    encoder = getattr(module, "text_encoder", None)
    if encoder is None or not getattr(model_cfg, "use_text", False) or not getattr(encoder, "frozen", False):
        return None
    return TextStateCache(encoder)

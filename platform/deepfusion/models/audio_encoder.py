"""Audio encoders: Wav2Vec2 (the methodology's), a log-mel front end (both on 16 kHz
waveforms) and an openSMILE descriptor front end (on features extracted in preprocessing).

Each maps a padded batch (waveform ``[B, N]`` or descriptors ``[B, T, D]``) with true
lengths ``[B]`` to frame states ``[B, S, H]`` and a bool mask of the frames that cover
real audio.
"""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.config.architectures import AudioEncoderConfig
from deepfusion.config.preprocess import lld_dim
from deepfusion.models.standardize import FeatureStandardizer
from deepfusion.pretrained import from_pretrained

SAMPLE_RATE = 16000
OFFLINE_HINT = ("Offline, use preset cpu-small (a small Wav2Vec2 from its config), "
                "audio_encoder.load_weights: false, audio_encoder.kind: logmel, or a local folder.")


def normalize_waveform(waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each clip's real samples (Wav2Vec2FeatureExtractor's
    ``do_normalize``); padding stays 0."""
    mask = (torch.arange(waveform.shape[1], device=waveform.device)[None] < lengths[:, None]).to(waveform.dtype)
    count = mask.sum(1, keepdim=True).clamp(min=1.0)
    mean = (waveform * mask).sum(1, keepdim=True) / count
    var = (((waveform - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (waveform - mean) / torch.sqrt(var + 1e-7) * mask


class Wav2Vec2AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        if cfg.load_weights:
            self.model = from_pretrained(Wav2Vec2Model, cfg.name, "audio encoder", OFFLINE_HINT)
        else:
            size = cfg.size
            self.model = Wav2Vec2Model(Wav2Vec2Config(
                hidden_size=size.hidden_size, num_hidden_layers=size.num_hidden_layers,
                num_attention_heads=size.num_attention_heads, intermediate_size=size.intermediate_size,
                conv_dim=list(size.conv_dim), num_conv_pos_embeddings=size.num_conv_pos_embeddings,
                feat_extract_norm=size.feat_extract_norm,
            ))
        # LayerDrop skips layers at random: DDP needs every trainable weight in every step.
        self.model.config.layerdrop = 0.0
        # Only pretrained convolutions are worth freezing; random ones must learn.
        if cfg.freeze_feature_encoder and cfg.load_weights:
            self.model.freeze_feature_encoder()
        self.hidden_size = self.model.config.hidden_size
        # Group-norm models (wav2vec2-base) must not get an attention mask; layer-norm ones do.
        self.pass_attention_mask = self.model.config.feat_extract_norm == "layer"

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waveform = normalize_waveform(waveform, lengths)
        frames = self.model._get_feat_extract_output_lengths(lengths)
        if self.pass_attention_mask:
            sample_mask = torch.arange(waveform.shape[1], device=waveform.device)[None] < lengths[:, None]
            states = self.model(waveform, attention_mask=sample_mask.long()).last_hidden_state
        else:
            # Group-norm models see padding as signal: encode each clip at its own length,
            # so a clip's features never depend on the batch it came in (train = serve).
            states = waveform.new_zeros(waveform.shape[0], int(frames.max()), self.hidden_size)
            for i, length in enumerate(lengths.tolist()):
                clip = self.model(waveform[i:i + 1, :length]).last_hidden_state[0]
                states[i, :clip.shape[0]] = clip
        mask = torch.arange(states.shape[1], device=states.device)[None] < frames[:, None]
        return states, mask


class LogMelAudioEncoder(nn.Module):
    """Log-mel spectrogram (librosa's filterbank, torch STFT) + two 1-D convolutions."""

    n_fft = 400  # 25 ms windows
    hop = 160  # 10 ms hops

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        import librosa

        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=self.n_fft, n_mels=cfg.n_mels)
        self.register_buffer("mel_filters", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        channels = cfg.logmel_channels
        self.convs = nn.Sequential(
            nn.Conv1d(cfg.n_mels, channels, kernel_size=5, padding=2), nn.GELU(),
            nn.Conv1d(channels, channels, kernel_size=5, stride=2, padding=2), nn.GELU(),
        )
        self.hidden_size = channels
        self.freq_mask, self.time_mask = cfg.freq_mask, cfg.time_mask

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Clip by clip: the STFT's edge padding and the convolutions' context would
        # otherwise see the batch's zero padding, and a clip's features would depend on
        # its neighbours (the logit cache and Serve batch differently from training).
        clips = [self._encode(waveform[i:i + 1, :length]) for i, length in enumerate(lengths.tolist())]
        states = waveform.new_zeros(len(clips), max(c.shape[0] for c in clips), self.hidden_size)
        for i, clip in enumerate(clips):
            states[i, :clip.shape[0]] = clip
        frames = torch.tensor([c.shape[0] for c in clips], device=states.device)
        mask = torch.arange(states.shape[1], device=states.device)[None] < frames[:, None]
        return states, mask

    def _encode(self, clip: torch.Tensor) -> torch.Tensor:
        """One clip ``[1, N]`` -> frame states ``[ceil((N // hop + 1) / 2), hidden]``."""
        spec = torch.stft(clip.float(), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True).abs() ** 2
        log_mel = torch.log(self.mel_filters @ spec + 1e-6)  # [1, n_mels, T]
        mean = log_mel.mean(-1, keepdim=True)
        std = torch.sqrt(((log_mel - mean) ** 2).mean(-1, keepdim=True) + 1e-5)
        features = (log_mel - mean) / std
        if self.training:
            features = self._spec_augment(features)
        return self.convs(features).transpose(1, 2)[0]

    def _spec_augment(self, features: torch.Tensor) -> torch.Tensor:
        """Zero two random mel bands and two random time spans per clip."""
        batch, bins, frames = features.shape
        keep = torch.ones_like(features, dtype=torch.bool)
        for size, length, axis in ((self.freq_mask, bins, 1), (self.time_mask, frames, 2)):
            if not size:
                continue
            positions = torch.arange(length, device=features.device)
            for _ in range(2):
                width = torch.randint(0, size + 1, (batch, 1), device=features.device)
                start = (torch.rand(batch, 1, device=features.device) * (length - width).clamp(min=1)).long()
                band = (positions[None] >= start) & (positions[None] < start + width)  # [B, length]
                keep &= ~(band[:, :, None] if axis == 1 else band[:, None, :])
        return features * keep


class DescriptorAudioEncoder(nn.Module):
    """openSMILE low-level descriptors ``[B, T, D]`` (one row per 10 ms frame, extracted
    in preprocessing) -> frame states: standardised with the training data's running
    statistics over real frames, then two 1-D convolutions (the second halves the rate)."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.dim = dim = lld_dim(cfg.kind)
        channels = cfg.lld_channels
        self.standardize = FeatureStandardizer(dim)
        self.conv1 = nn.Sequential(nn.Conv1d(dim, channels, kernel_size=5, padding=2), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv1d(channels, channels, kernel_size=5, stride=2, padding=2), nn.GELU())
        self.hidden_size = channels

    def forward(self, descriptors: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lengths`` 0: a clip without audio (one masked-in zero step comes out)."""
        if descriptors.shape[-1] != self.dim:  # a batch without any clip carries no width
            descriptors = descriptors.new_zeros(*descriptors.shape[:2], self.dim)
        valid = torch.arange(descriptors.shape[1], device=descriptors.device)[None] < lengths[:, None]
        # Statistics over real frames only: padding is neither counted nor changed.
        standardized = torch.zeros_like(descriptors)
        if valid.any():
            standardized[valid] = self.standardize(descriptors[valid])
        # Zeros past each clip's end between the convolutions: what a clip sees there is
        # the convolution's own zero padding, so its states never depend on its batch.
        hidden = self.conv1(standardized.transpose(1, 2)) * valid[:, None, :]
        states = self.conv2(hidden).transpose(1, 2)
        frames = torch.div(lengths + 1, 2, rounding_mode="floor").clamp(min=1)
        mask = torch.arange(states.shape[1], device=states.device)[None] < frames[:, None]
        return states * mask[..., None], mask


def build_audio_encoder(cfg: AudioEncoderConfig) -> nn.Module:
    if cfg.kind == "wav2vec2":
        return Wav2Vec2AudioEncoder(cfg)
    return LogMelAudioEncoder(cfg) if cfg.kind == "logmel" else DescriptorAudioEncoder(cfg)

"""MIMAMO Net: per-frame CNN (a ResNet, or the FER mini-Xception on faces) + spatial
attention, a temporal Transformer over the frames, fusion with the utterance's BERT
encoding, speaker metadata -> 7 emotion logits."""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.config.architectures import MimamoConfig
from deepfusion.models.attention import SpatialAttention
from deepfusion.models.face_encoder import FaceFrameTrunk
from deepfusion.models.image_backbone import ResNetTrunk
from deepfusion.models.inputs import EmotionInputs
from deepfusion.models.speaker import SpeakerEncoder
from deepfusion.models.text_encoder import TextEncoder, masked_mean


class MimamoNet(nn.Module):
    """The methodology's Algorithm 2. A sample without video (or text) uses a learned
    stand-in vector for that modality, chosen by its mask."""

    def __init__(self, cfg: MimamoConfig):
        super().__init__()
        self.config = cfg
        hidden = cfg.hidden_dim
        if cfg.frame_encoder == "fer_mini_xception":
            self.frame_backbone = FaceFrameTrunk(cfg.face_weights, cfg.freeze_frame_encoder)
        else:
            self.frame_backbone = ResNetTrunk(cfg.backbone)
            if cfg.freeze_frame_encoder:
                self.frame_backbone.requires_grad_(False)
        self.spatial_attention = SpatialAttention(cfg.attention_kernel)
        self.frame_projection = nn.Linear(self.frame_backbone.out_channels, hidden)
        self.frame_position = nn.Parameter(torch.zeros(1, cfg.num_frames, hidden))
        self.temporal_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(hidden, cfg.num_heads, dim_feedforward=2 * hidden,
                                       dropout=cfg.dropout, batch_first=True, norm_first=True),
            num_layers=cfg.temporal_layers, enable_nested_tensor=False,
        )
        self.missing_video = nn.Parameter(torch.zeros(hidden))
        if cfg.use_text:
            self.text_encoder = TextEncoder(cfg.text_encoder)
            self.text_projection = nn.Linear(self.text_encoder.hidden_size, hidden)
            self.missing_text = nn.Parameter(torch.zeros(hidden))
        self.fusion = nn.Sequential(nn.Linear((2 if cfg.use_text else 1) * hidden, hidden),
                                    nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        self.speaker_encoder = SpeakerEncoder(cfg.speaker)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout),
                                        nn.Linear(hidden + cfg.speaker.dim, cfg.num_classes))

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        batch, num_frames = frames.shape[:2]
        maps = self.spatial_attention(self.frame_backbone(frames.flatten(0, 1)))
        per_frame = self.frame_projection(maps.mean(dim=(2, 3))).view(batch, num_frames, -1)
        return self.temporal_encoder(per_frame + self.frame_position[:, :num_frames]).mean(dim=1)

    def forward(self, inputs: EmotionInputs) -> torch.Tensor:
        video = self.encode_video(inputs.frames)
        parts = [torch.where(inputs.has_video[:, None], video, self.missing_video)]
        if self.config.use_text:
            states, mask = self.text_encoder(inputs.input_ids, inputs.attention_mask, inputs.text_states)
            text = self.text_projection(masked_mean(states, mask))
            parts.append(torch.where(inputs.has_text[:, None], text, self.missing_text))
        fused = self.fusion(torch.cat(parts, dim=-1))
        speaker = self.speaker_encoder(inputs.speaker_id, inputs.gender, inputs.age)
        return self.classifier(torch.cat([fused, speaker], dim=-1))

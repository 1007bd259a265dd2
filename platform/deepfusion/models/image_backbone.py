"""torchvision ResNet trunks: the convolutional part, before average pooling and fc."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torchvision.models import get_weight
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from deepfusion.config.architectures import ImageBackboneConfig
from deepfusion.pretrained import ModelWeightsUnavailable

# name -> (block, layers, torchvision weights enum); resnet10 has no published weights.
RESNETS = {
    "resnet10": (BasicBlock, [1, 1, 1, 1], None),
    "resnet18": (BasicBlock, [2, 2, 2, 2], "ResNet18_Weights"),
    "resnet34": (BasicBlock, [3, 4, 6, 3], "ResNet34_Weights"),
    "resnet50": (Bottleneck, [3, 4, 6, 3], "ResNet50_Weights"),
}

# ImageNet statistics: every ResNet here (pretrained or not) sees inputs standardised alike.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetTrunk(nn.Module):
    """``[N, 3, H, W]`` floats in [0, 1] -> ``[N, C, H/32, W/32]`` feature maps."""

    def __init__(self, cfg: ImageBackboneConfig):
        super().__init__()
        block, layers, weights_enum = RESNETS[cfg.arch]
        resnet = ResNet(block, layers)
        if cfg.weights:
            resnet.load_state_dict(_load_state_dict(cfg, weights_enum))
        self.out_channels = 512 * block.expansion
        self.layers = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4,
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers((images - self.mean) / self.std)


def _load_state_dict(cfg: ImageBackboneConfig, weights_enum: str | None) -> dict:
    path = Path(cfg.weights)
    if path.suffix in (".pth", ".pt", ".safetensors"):
        if not path.is_file():
            raise ModelWeightsUnavailable(f"backbone weights file not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    if weights_enum is None:
        raise ModelWeightsUnavailable(
            f"{cfg.arch} has no published weights; set backbone.weights to a local file or null"
        )
    try:
        weights = get_weight(f"{weights_enum}.{cfg.weights}")
    except (ValueError, KeyError, AttributeError):
        raise ModelWeightsUnavailable(
            f"unknown weights {cfg.weights!r} for {cfg.arch}; torchvision has "
            f"{weights_enum}.IMAGENET1K_V1/V2, or give a local .pth/.safetensors file"
        ) from None
    try:
        return weights.get_state_dict(progress=False)
    except (URLError, OSError) as err:
        raise ModelWeightsUnavailable(
            f"cannot download {weights_enum}.{cfg.weights} ({err}); offline, put the file in "
            f"$TORCH_HOME/hub/checkpoints, set backbone.weights to a local .pth, or use "
            f"preset cpu-small (random init)"
        ) from None

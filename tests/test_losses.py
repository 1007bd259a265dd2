"""Training losses and optimizer groups: focal loss, class weights, the encoder learning rate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from deepfusion.config import ConfigError, ExperimentConfig, validate_config
from deepfusion.config.architectures import MultimodalLSTMConfig
from deepfusion.config.train import OptimConfig
from deepfusion.models import build_model
from deepfusion.models.losses import build_loss, focal_loss
from deepfusion.training.optimization import build_optimizer


def test_focal_loss_matches_a_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p_t = math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(-1.0))  # 0.8438...
    alpha, gamma = 0.5, 2.0
    expected = -alpha * (1 - p_t) ** gamma * math.log(p_t)
    assert math.isclose(float(focal_loss(logits, torch.tensor([0]), alpha, gamma)), expected, rel_tol=1e-6)


def test_focal_loss_is_cross_entropy_at_gamma_zero():
    torch.manual_seed(0)
    logits, targets = torch.randn(32, 7, requires_grad=True), torch.randint(0, 7, (32,))
    focal = focal_loss(logits, targets, alpha=1.0, gamma=0.0)
    assert torch.allclose(focal, F.cross_entropy(logits, targets), atol=1e-6)
    (grad,) = torch.autograd.grad(focal, logits)
    assert torch.isfinite(grad).all()
    # and down-weights easy samples for gamma > 0
    assert float(focal_loss(logits, targets, gamma=2.0)) < float(focal)
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, targets, reduction="avg")


def test_class_weighted_focal_loss_at_gamma_zero_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(64, 7), torch.randint(0, 7, (64,))
    weights = torch.rand(7) + 0.1
    focal = focal_loss(logits, targets, gamma=0.0, class_weights=weights)
    assert torch.allclose(focal, F.cross_entropy(logits, targets, weight=weights), atol=1e-6)
    # per sample: each scaled by its class's weight
    per_sample = focal_loss(logits, targets, gamma=2.0, class_weights=weights, reduction="none")
    unweighted = focal_loss(logits, targets, gamma=2.0, reduction="none")
    assert torch.allclose(per_sample, unweighted * weights[targets], atol=1e-6)


@pytest.mark.parametrize("loss, weighting", [("cross_entropy", False), ("cross_entropy", True),
                                             ("focal", False), ("focal", True)])
def test_the_train_config_picks_the_loss_and_its_class_weights(loss, weighting):
    torch.manual_seed(0)
    logits, targets = torch.randn(64, 7), torch.randint(0, 7, (64,))
    class_weights = [0.5, 3.0, 2.0, 1.0, 0.3, 1.5, 1.2]
    cfg = OptimConfig(loss=loss, class_weighting=weighting, focal_gamma=2.0)
    weights = torch.tensor(class_weights) if weighting else None
    expected = (focal_loss(logits, targets, gamma=2.0, class_weights=weights) if loss == "focal"
                else F.cross_entropy(logits, targets, weight=weights))
    actual = build_loss(cfg, class_weights, torch.device("cpu"))(logits, targets)
    assert torch.allclose(actual, expected, atol=1e-6)


def test_label_smoothing_with_focal_loss_is_refused():
    with pytest.raises(ConfigError, match="label_smoothing"):
        validate_config(ExperimentConfig, {"train": {
            "model": {"kind": "textile", "preset": "cpu-small"}, "data": "x", "run": {"name": "r"},
            "optim": {"loss": "focal", "label_smoothing": 0.1}}})


def test_encoder_lr_puts_the_pretrained_encoder_in_its_own_group():
    cfg = MultimodalLSTMConfig(preset="cpu-small", use_audio=False,
                               text_encoder={"name": "offline", "freeze": False, "load_weights": False})
    model = build_model(cfg)
    optimizer = build_optimizer(OptimConfig(optimizer="adamw", lr=1e-3, encoder_lr=2e-5), model)
    head, encoder = optimizer.param_groups
    assert (head["name"], head["lr"], encoder["name"], encoder["lr"]) == ("head", 1e-3, "encoder", 2e-5)
    encoder_ids = {id(p) for p in model.text_encoder.parameters()}
    assert {id(p) for p in encoder["params"]} == encoder_ids
    assert not encoder_ids & {id(p) for p in head["params"]}
    assert len(head["params"]) + len(encoder["params"]) == len(list(model.parameters()))
    # without encoder_lr one group; a frozen encoder is left out of the optimizer entirely
    assert len(build_optimizer(OptimConfig(), model).param_groups) == 1
    frozen = build_model(cfg.model_copy(update={"text_encoder": cfg.text_encoder.model_copy(update={"freeze": True})}))
    (only,) = build_optimizer(OptimConfig(encoder_lr=2e-5), frozen).param_groups
    assert only["name"] == "head"
    assert not {id(p) for p in frozen.text_encoder.parameters()} & {id(p) for p in only["params"]}

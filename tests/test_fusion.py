"""Fusion models, focal loss and fitting on logits (no Ray needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepfusion.artifacts.checkpoint import CheckpointCard, load_fusion, save_fusion
from deepfusion.config import ConfigError, FusionConfig, FusionTraining, SearchSpace, validate_config
from deepfusion.fusion.fit import _sample_weights, fit_fusion
from deepfusion.fusion.logit_cache import SplitLogits
from deepfusion.models.fusion import EnhancedLateFusion, LateFusion, explain
from deepfusion.models.losses import focal_loss

EMOTIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_enhanced_late_fusion_has_exactly_nine_trainable_parameters():
    assert trainable(EnhancedLateFusion(num_classes=7)) == 9  # w1, w2 and a 7-d bias
    assert trainable(LateFusion()) == 2


def test_fusion_weights_sum_to_one_at_every_step():
    torch.manual_seed(0)
    model = EnhancedLateFusion(7, video_weight=0.58)
    assert torch.allclose(model.fusion_weights(), torch.tensor([0.58, 0.42]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5)
    for _ in range(20):
        loss = model(torch.randn(8, 7), torch.randn(8, 7)).pow(3).mean()  # any loss at all
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        w = model.fusion_weights().detach()
        assert math.isclose(float(w.sum()), 1.0, abs_tol=1e-6) and bool((w > 0).all())
    assert not torch.allclose(model.fusion_weights(), torch.tensor([0.58, 0.42]))


def test_fused_logits_follow_the_formula_in_eval_mode():
    model = EnhancedLateFusion(7, video_weight=0.7).eval()
    with torch.no_grad():
        model.bias.copy_(torch.arange(7.0))
    video, audio_text = torch.randn(3, 7), torch.randn(3, 7)
    expected = 0.7 * video + 0.3 * audio_text + torch.arange(7.0)
    assert torch.allclose(model(video, audio_text), expected, atol=1e-6)


def test_one_pass_accumulation_equals_step_by_step_accumulation():
    """The vectorised accumulation in fit_fusion gives the gradient of 4 sequential micro-batches."""
    torch.manual_seed(0)
    video, audio_text, labels = torch.randn(14, 7), torch.randn(14, 7), torch.randint(0, 7, (14,))
    batch, steps = 4, 4  # micro-batches of 4, 4, 4 and a last one of 2
    sequential = EnhancedLateFusion(7, dropout=0.0)
    one_pass = EnhancedLateFusion(7, dropout=0.0)
    for start in range(0, 14, batch):
        part = slice(start, start + batch)
        (focal_loss(sequential(video[part], audio_text[part]), labels[part]) / steps).backward()
    per_sample = focal_loss(one_pass(video, audio_text), labels, reduction="none")
    (per_sample * _sample_weights(14, batch, steps)).sum().backward()
    for a, b in zip(sequential.parameters(), one_pass.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def informative_logits(rows: int, informative: str, seed: int) -> SplitLogits:
    """Logits where one modality carries the label and the other is noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, rows)
    signal = rng.normal(0, 1, (rows, 7)).astype(np.float32)
    signal[np.arange(rows), labels] += 3.0
    noise = rng.normal(0, 1, (rows, 7)).astype(np.float32)
    video, audio_text = (signal, noise) if informative == "video" else (noise, signal)
    ones = np.ones(rows, dtype=bool)
    return SplitLogits([f"s{i}" for i in range(rows)], labels, video, audio_text,
                       {"has_video": ones, "has_audio": ones, "has_text": ones})


@pytest.mark.parametrize("informative", ["video", "audio_text"])
def test_fusion_learns_to_weight_up_the_informative_modality(informative):
    train, val = informative_logits(400, informative, 0), informative_logits(150, informative, 1)
    hp = FusionTraining(lr=0.05, batch_size=8, video_weight=0.5, max_epochs=30, patience=30)
    fit = fit_fusion("enhanced_late_fusion", train, val, hp, EMOTIONS)
    w_video, w_audio_text = fit.fusion_weights
    weight_of_informative = w_video if informative == "video" else w_audio_text
    assert weight_of_informative > 0.75, fit.fusion_weights
    assert fit.best["val_accuracy"] > 0.8
    assert len(fit.history) == 30 and fit.best_epoch >= 1


def test_early_stopping_keeps_the_best_epoch():
    train, val = informative_logits(200, "video", 0), informative_logits(60, "video", 1)
    hp = FusionTraining(lr=1e-5, batch_size=4, patience=2, max_epochs=100)
    fit = fit_fusion("enhanced_late_fusion", train, val, hp, EMOTIONS)
    assert len(fit.history) < 100, "a learning rate this small cannot keep improving validation"
    assert len(fit.history) - fit.best_epoch == 2  # stopped exactly `patience` epochs after the best
    assert fit.best == max(fit.history, key=lambda r: r["val_weighted_f1"])


def test_explain_returns_the_seeds_output_format():
    model = EnhancedLateFusion(7, video_weight=0.9)
    video = torch.full((2, 7), -5.0)
    video[:, 3] = 5.0  # joy
    audio_text = torch.zeros(2, 7)
    audio_text[:, 5] = 1.0  # sadness
    out = explain(model, video, audio_text, EMOTIONS)
    assert model.training, "explain leaves the model's mode as it found it"
    assert len(out) == 2
    first = out[0]
    assert first["emotion"] == "joy" and 0 < first["confidence"] <= 1
    assert first["individual_predictions"] == {"video": "joy", "audio_text": "sadness"}
    assert math.isclose(sum(first["fusion_weights"]), 1.0, abs_tol=1e-5)
    assert math.isclose(first["fusion_weights"][0], 0.9, abs_tol=1e-5)
    assert math.isclose(sum(first["probabilities"].values()), 1.0, abs_tol=1e-5)


def test_fusion_checkpoint_round_trip(tmp_path):
    model = EnhancedLateFusion(7, video_weight=0.3).eval()
    with torch.no_grad():
        model.bias.normal_()
    card = CheckpointCard(kind="enhanced_late_fusion", label_names=EMOTIONS,
                      hyperparameters=FusionTraining(video_weight=0.3).model_dump(), backbones={},
                      metrics={}, fusion_weights=[0.3, 0.7])
    save_fusion(tmp_path / "ckpt", model, card)
    loaded, loaded_card = load_fusion(tmp_path / "ckpt")
    video, audio_text = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.equal(loaded(video, audio_text), model(video, audio_text))
    assert loaded_card == card
    with pytest.raises(ConfigError, match="not a deepfusion checkpoint.*jobs.tune_fusion"):
        load_fusion(tmp_path / "missing")


def test_search_space_ranges_are_validated():
    with pytest.raises(ConfigError, match="lr: the range .* is empty"):
        validate_config(SearchSpace, {"lr": [1e-3, 1e-5]})
    with pytest.raises(ConfigError, match="video_weight"):
        validate_config(SearchSpace, {"video_weight": [0.0, 0.8]})
    assert validate_config(SearchSpace, {}).batch_size == (4, 6, 8)


def _split(n: int, seed: int = 0) -> SplitLogits:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(7), int(np.ceil(n / 7)))[:n]
    return SplitLogits(sample_ids=[f"s{i:03d}" for i in range(n)], labels=labels,
                       video=rng.standard_normal((n, 7)).astype(np.float32),
                       audio_text=rng.standard_normal((n, 7)).astype(np.float32),
                       masks={"has_video": np.ones(n, bool), "has_audio": np.ones(n, bool),
                              "has_text": np.ones(n, bool)})


def test_each_fit_source_gives_disjoint_fit_and_select_rows():
    from deepfusion.fusion.fit_data import concat, fit_splits, subset

    logits = {"train": _split(70, 1), "val": _split(35, 2), "test": _split(21, 3)}
    cfg = validate_config(FusionConfig, {"data": "work/d", "video_checkpoint": "work/v",
                                         "audio_text_checkpoint": "work/a", "fit_data": {"source": "out_of_fold"}})
    train = fit_splits(cfg.model_copy(update={"fit_data": cfg.fit_data.model_copy(update={"source": "train"})}),
                       logits)
    assert train.fit is logits["train"] and train.select is logits["val"]

    validation = cfg.model_copy(update={"fit_data": cfg.fit_data.model_copy(
        update={"source": "validation", "holdout": 0.4, "seed": 5})})
    splits = fit_splits(validation, logits)
    fit_ids, select_ids = set(splits.fit.sample_ids), set(splits.select.sample_ids)
    assert not fit_ids & select_ids and fit_ids | select_ids == set(logits["val"].sample_ids)
    assert len(select_ids) == 14  # 40 % of each class of 5 rows: 2
    for label in range(7):  # stratified: every class on both sides
        assert (splits.fit.labels == label).sum() == 3 and (splits.select.labels == label).sum() == 2
    row = logits["val"].sample_ids.index(splits.select.sample_ids[0])
    assert np.array_equal(splits.select.video[0], logits["val"].video[row])  # rows stay whole
    again = fit_splits(validation, logits)
    assert again.select.sample_ids == splits.select.sample_ids  # seeded
    other = fit_splits(validation.model_copy(update={"fit_data": validation.fit_data.model_copy(
        update={"seed": 6})}), logits)
    assert other.select.sample_ids != splits.select.sample_ids

    with pytest.raises(ValueError, match="no out-of-fold logits"):
        fit_splits(cfg, logits)
    halves = [subset(logits["train"], np.arange(1, 70, 2)), subset(logits["train"], np.arange(0, 70, 2))]
    joined = concat(halves)
    assert joined.sample_ids == logits["train"].sample_ids and np.array_equal(joined.video, logits["train"].video)
    oof = fit_splits(cfg, logits, out_of_fold=joined)
    assert oof.fit is joined and oof.select is logits["val"]
    with pytest.raises(ValueError, match="do not cover"):
        fit_splits(cfg, logits, out_of_fold=halves[0])

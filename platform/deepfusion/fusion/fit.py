"""Fitting a fusion model on cached logits: focal loss, AdamW, accumulation, early stopping.

One fit is one Tune trial, so it is written for speed on tiny tensors: the whole split
lives on the device, and the ``grad_accumulation`` micro-batches of one optimizer step
go through the model in one pass, each sample's loss weighted by 1 / (its micro-batch's
size x steps). That is the gradient of accumulating the micro-batches one by one with
``loss / steps``, exactly (dropout masks are independent per element either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deepfusion.config.fusion import FusionTraining
from deepfusion.evaluation.metrics import classification_metrics, confusion_from_predictions
from deepfusion.fusion.logit_cache import SplitLogits
from deepfusion.models.fusion import LateFusion, build_fusion
from deepfusion.models.losses import focal_loss


@dataclass
class FusionFit:
    model: LateFusion  # with the best epoch's weights, in eval mode
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    best: dict = field(default_factory=dict)  # the best epoch's row

    @property
    def fusion_weights(self) -> list[float]:
        return [float(w) for w in self.model.fusion_weights().detach()]


def evaluate(model: LateFusion, logits: SplitLogits, label_names: list[str], device="cpu") -> dict:
    """Accuracy, weighted/macro and per-class F1 of ``model`` on one split (eval mode)."""
    model.eval()
    with torch.inference_mode():
        fused = model(torch.tensor(logits.video, device=device), torch.tensor(logits.audio_text, device=device))
    predictions = fused.argmax(dim=-1).cpu().numpy()
    return classification_metrics(confusion_from_predictions(logits.labels, predictions, len(label_names)),
                                  label_names)


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """The same metrics for a single backbone's logits (the report's MIMAMO / LSTM rows)."""
    return classification_metrics(confusion_from_predictions(labels, logits.argmax(axis=1), len(label_names)),
                                  label_names)


def _sample_weights(num_rows: int, batch_size: int, steps: int) -> torch.Tensor:
    """1 / (micro-batch size x accumulation steps) for each position in an epoch's order."""
    micro = torch.arange(num_rows) // batch_size
    sizes = torch.bincount(micro)
    return 1.0 / (sizes[micro].float() * steps)


def fit_fusion(kind: str, train: SplitLogits, val: SplitLogits, hp: FusionTraining, label_names: list[str],
               *, seed: int = 0, device: str = "cpu") -> FusionFit:
    """Train ``kind`` (late_fusion | enhanced_late_fusion) on ``train``; keep the epoch with
    the best validation weighted F1; stop after ``hp.patience`` epochs without one."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"fusion needs train and val logits; got {len(train)} train and {len(val)} val rows")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_fusion(kind, len(label_names), hp.video_weight, hp.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    # The methodology's "learning rate scheduling": halve the rate when validation stalls.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                           patience=max(1, hp.patience // 2))
    use_amp = hp.amp and torch.device(device).type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    video = torch.tensor(train.video, device=device)
    audio_text = torch.tensor(train.audio_text, device=device)
    labels = torch.tensor(train.labels, device=device)
    weights = _sample_weights(len(train), hp.batch_size, hp.grad_accumulation).to(device)
    step_rows = hp.batch_size * hp.grad_accumulation

    fit = FusionFit(model)
    best_state, since_best = None, 0
    for epoch in range(1, hp.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, len(train), step_rows):
            index = order[start:start + step_rows]
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                fused = model(video[index], audio_text[index])
            per_sample = focal_loss(fused, labels[index], hp.focal_alpha, hp.focal_gamma, reduction="none")
            loss = (per_sample * weights[start:start + step_rows]).sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += per_sample.detach().sum()
        metrics = evaluate(model, val, label_names, device)
        score = metrics["weighted_f1"]
        row = {"epoch": epoch, "train_loss": float(loss_sum) / len(train), "val_accuracy": metrics["accuracy"],
               "val_weighted_f1": score, "val_macro_f1": metrics["macro_f1"],
               "video_weight": float(model.fusion_weights().detach()[0]), "lr": optimizer.param_groups[0]["lr"]}
        fit.history.append(row)
        scheduler.step(score)
        if best_state is None or score > fit.best["val_weighted_f1"]:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            fit.best, fit.best_epoch, since_best = row, epoch, 0
        else:
            since_best += 1
            if since_best >= hp.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return fit

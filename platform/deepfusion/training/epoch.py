"""One pass of a model over batches of shard rows: the training and evaluation step.

Plain PyTorch, no Ray: the Ray Train workers run it over their Ray Data shards, and the
benchmarks run the very same step over in-memory batches (``bench/train_throughput.py``
on CPU, ``bench/gpu.py`` on a GPU with AMP). ``shard`` is anything with Ray's
``iter_batches(batch_size=..., batch_format="numpy", ...)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepfusion.artifacts.batches import model_batch_inputs
from deepfusion.models.losses import rdrop_loss
from deepfusion.training.batching import length_grouped


def run_epoch(module, shard, *, model_cfg, loss_fn, device, amp, num_classes, batch_size,
              optimizer=None, scaler=None, grad_clip=None, scheduler=None, shuffle_buffer_rows=0,
              group_by_length=0, rng=None, augment=None, grad_accumulation=1, rdrop_alpha=0.0, text_states=None):
    """One pass over ``shard``; trains when ``optimizer`` is given. -> (confusion, loss sum, rows).

    ``batch_size`` rows go through the model at a time; in training the gradients of
    ``grad_accumulation`` such batches add up (each loss divided by that count) before one
    optimizer step, and a last, shorter group steps too. ``augment``: a function of the
    model inputs (an image batch) applied before the forward pass, in training only.
    ``rdrop_alpha`` > 0: each training batch goes through the model twice and the loss is
    ``models.losses.rdrop_loss`` of the two (metrics count the first pass). ``text_states``:
    a ``training.text_states.TextStateCache`` that hands the model its frozen text encoder's
    states (rows need ``sample_id``).
    """
    training = optimizer is not None
    module.train(training)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    # Summed on the device: a float() per step would wait for the GPU every step.
    loss_sum, rows = torch.zeros((), dtype=torch.float64, device=device), 0
    shuffle = training and shuffle_buffer_rows > 0
    batches = shard.iter_batches(batch_size=batch_size * max(1, group_by_length), batch_format="numpy",
                                 prefetch_batches=2, local_shuffle_buffer_size=shuffle_buffer_rows if shuffle else None,
                                 local_shuffle_seed=int(rng.integers(2**31)) if shuffle and rng is not None else None)
    if group_by_length:
        batches = length_grouped(batches, batch_size, rng if training else None)
    pending = 0  # micro-batches whose gradients wait for the optimizer step
    for batch in batches:
        inputs = model_batch_inputs(model_cfg, batch)
        if training and augment is not None:
            inputs = augment(inputs)
        inputs = inputs.to(device)
        if text_states is not None:
            inputs = text_states.attach(inputs, batch["sample_id"])
        labels = torch.as_tensor(np.asarray(batch["label"], dtype=np.int64), device=device)
        with torch.set_grad_enabled(training), torch.autocast("cuda", torch.float16, enabled=amp):
            logits = module(inputs)
            if training and rdrop_alpha:
                loss = rdrop_loss(loss_fn, logits, module(inputs), labels, rdrop_alpha)
            else:
                loss = loss_fn(logits.float(), labels)
        if training:
            if pending == 0:
                optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss / grad_accumulation).backward()
            pending += 1
            if pending == grad_accumulation:
                _step(module, optimizer, scaler, grad_clip, scheduler)
                pending = 0
        loss_sum += loss.detach().double() * len(labels)
        rows += len(labels)
        confusion += torch.bincount(labels * num_classes + logits.argmax(1), minlength=num_classes ** 2)
    if training and pending:
        _step(module, optimizer, scaler, grad_clip, scheduler)
    return confusion.view(num_classes, num_classes), float(loss_sum), rows


def _step(module, optimizer, scaler, grad_clip, scheduler) -> None:
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()

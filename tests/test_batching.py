"""Length-grouped batches: every row once, similar lengths together, a new order each epoch."""

from __future__ import annotations

import numpy as np

from deepfusion.training.batching import length_grouped


def token_batches(lengths: list[int], size: int):
    rows = np.empty(len(lengths), dtype=object)
    rows[:] = [np.ones(n, dtype=np.int32) for n in lengths]
    ids = np.arange(len(lengths))
    for start in range(0, len(lengths), size):
        yield {"sample_id": ids[start:start + size], "input_ids": rows[start:start + size]}


def test_each_row_once_in_batches_of_similar_length_in_a_seeded_order():
    lengths = list(np.random.default_rng(0).integers(1, 90, size=330))
    batches = list(length_grouped(token_batches(lengths, 32 * 4), 32, np.random.default_rng(1)))
    seen = np.concatenate([b["sample_id"] for b in batches])
    assert sorted(seen) == list(range(330))  # nothing lost, nothing twice
    assert sorted(len(b["sample_id"]) for b in batches) == [10] + [32] * 10  # 128 + 128 + 74 rows
    padded = sum(len(b["sample_id"]) * max(len(r) for r in b["input_ids"]) for b in batches)
    random_padded = sum(len(c) * max(lengths[i] for i in c) for c in np.array_split(np.arange(330), 11))
    assert padded < 0.75 * random_padded, (padded, random_padded, sum(lengths))
    for b in batches:  # rows keep their columns together
        assert [len(r) for r in b["input_ids"]] == [lengths[i] for i in b["sample_id"]]
    # not shortest-first while training: the order is shuffled, and by the seed
    firsts = [max(len(r) for r in b["input_ids"]) for b in batches]
    assert firsts != sorted(firsts)
    again = list(length_grouped(token_batches(lengths, 32 * 4), 32, np.random.default_rng(1)))
    assert all(np.array_equal(a["sample_id"], b["sample_id"]) for a, b in zip(batches, again))


def test_evaluation_order_and_batches_without_a_length_column():
    lengths = [5, 1, 3, 2, 4, 6]
    (first, second) = length_grouped(token_batches(lengths, 6), 3, None)
    assert list(first["sample_id"]) == [1, 3, 2] and list(second["sample_id"]) == [4, 0, 5]
    plain = {"sample_id": np.arange(5), "label": np.arange(5) % 2}
    cut = list(length_grouped(iter([plain]), 2, np.random.default_rng(0)))
    assert sorted(np.concatenate([c["sample_id"] for c in cut])) == [0, 1, 2, 3, 4]


class _Rows:
    """Batches of in-memory shard rows, as Ray Data's ``iter_batches`` yields them."""

    def __init__(self, columns: dict):
        self.columns = columns

    def iter_batches(self, batch_size: int, **_):
        rows = len(self.columns["label"])
        for start in range(0, rows, batch_size):
            yield {c: v[start:start + batch_size] for c, v in self.columns.items()}


def _text_rows(rows: int) -> dict:
    """Shard columns of ``rows`` text-only utterances (random token ids, random labels)."""
    rng = np.random.default_rng(0)
    return {"label": rng.integers(0, 7, rows), "speaker_id": np.zeros(rows, dtype=np.int64),
            "gender": np.array(["female"] * rows, dtype=object), "age": np.array([None] * rows, dtype=object),
            "has_text": np.ones(rows, dtype=bool),
            "input_ids": np.array([np.concatenate([[101], rng.integers(2000, 9000, 10), [102]]).astype(np.int32)
                                   for _ in range(rows)], dtype=object)}


def test_rdrop_trains_on_two_dropout_passes_and_their_symmetric_kl():
    """optim.rdrop_alpha: the training loss of a batch is the mean cross-entropy of two
    forward passes plus alpha/4 * (KL(p1||p2) + KL(p2||p1)), recomputed here in NumPy from
    the same two passes (same seed, same dropout draws); evaluation passes once."""
    import torch

    from deepfusion.artifacts.batches import model_batch_inputs
    from deepfusion.config import MultimodalLSTMConfig
    from deepfusion.models import build_model
    from deepfusion.training.epoch import run_epoch

    columns = _text_rows(8)
    cfg = MultimodalLSTMConfig(preset="cpu-small", use_audio=False, dropout=0.3, speaker={"unknown_dropout": 0.0})
    alpha = 4.0

    class Counted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, inputs):
            self.calls += 1
            return self.inner(inputs)

    torch.manual_seed(0)
    model = Counted(build_model(cfg))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(1)
    _, loss_sum, rows = run_epoch(model, _Rows(columns), model_cfg=cfg, loss_fn=torch.nn.CrossEntropyLoss(),
                                  device=torch.device("cpu"), amp=False, num_classes=7, batch_size=8,
                                  optimizer=optimizer, scaler=torch.amp.GradScaler("cuda", enabled=False),
                                  rdrop_alpha=alpha)
    assert (rows, model.calls) == (8, 2)

    torch.manual_seed(0)
    again = build_model(cfg).train()
    inputs = model_batch_inputs(cfg, columns)
    torch.manual_seed(1)
    with torch.no_grad():
        first, second = (again(inputs).double().numpy() for _ in range(2))
    assert not np.allclose(first, second)  # dropout drew different masks

    def log_softmax(x):
        return x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))

    log_p, log_q = log_softmax(first), log_softmax(second)
    labels = columns["label"]
    cross_entropy = -(log_p[np.arange(8), labels].mean() + log_q[np.arange(8), labels].mean()) / 2
    kl = (np.exp(log_p) * (log_p - log_q)).sum(1).mean() + (np.exp(log_q) * (log_q - log_p)).sum(1).mean()
    assert kl > 1e-4
    np.testing.assert_allclose(loss_sum / rows, cross_entropy + alpha / 4 * kl, rtol=1e-4)

    model.calls = 0
    run_epoch(model, _Rows(columns), model_cfg=cfg, loss_fn=torch.nn.CrossEntropyLoss(), device=torch.device("cpu"),
              amp=False, num_classes=7, batch_size=8)
    assert model.calls == 1


def test_gradient_accumulation_takes_the_step_of_the_whole_batch():
    """8 rows as one batch, or as micro-batches of 4 and 2 whose gradients add up: the same
    parameters after the step (a model without dropout or BatchNorm); a last short group
    of micro-batches steps too."""
    import torch

    from deepfusion.config import MultimodalLSTMConfig
    from deepfusion.models import build_model
    from deepfusion.training.epoch import run_epoch

    columns = _text_rows(8)
    cfg = MultimodalLSTMConfig(preset="cpu-small", use_audio=False, dropout=0.0, speaker={"unknown_dropout": 0.0})

    class Steps:
        count = 0

        def step(self):
            self.count += 1

    def train(micro: int, accumulation: int) -> tuple[list[torch.Tensor], int]:
        torch.manual_seed(0)
        model = build_model(cfg)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        steps = Steps()
        run_epoch(model, _Rows(columns), model_cfg=cfg, loss_fn=torch.nn.CrossEntropyLoss(),
                  device=torch.device("cpu"), amp=False, num_classes=7, batch_size=micro, optimizer=optimizer,
                  scaler=torch.amp.GradScaler("cuda", enabled=False), scheduler=steps,
                  grad_accumulation=accumulation)
        return [p.detach().clone() for p in model.parameters() if p.requires_grad], steps.count

    whole, one_step = train(8, 1)
    for micro, accumulation in ((4, 2), (2, 4)):
        params, count = train(micro, accumulation)
        assert count == one_step == 1
        for a, b in zip(params, whole):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _, count = train(2, 3)  # 4 micro-batches: a group of 3, then the last one alone
    assert count == 2
    moved, _ = train(8, 1)
    torch.manual_seed(0)
    start = [p for p in build_model(cfg).parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(moved, start))  # the step did change the model


def test_a_frozen_text_encoder_encodes_each_sample_once_and_the_model_sees_the_same_states():
    """train.cache_text_states: the first epoch encodes each sample once (with its batch);
    later epochs and the validation pass reuse the states; a model given them computes the
    logits it computes from the token ids; a trainable encoder is never cached."""
    import pytest
    import torch

    from deepfusion.artifacts.batches import model_batch_inputs
    from deepfusion.config import MultimodalLSTMConfig
    from deepfusion.models import build_model
    from deepfusion.training.epoch import run_epoch
    from deepfusion.training.text_states import text_state_cache

    rng = np.random.default_rng(1)
    columns = _text_rows(10)
    columns["sample_id"] = np.array([f"demo/train/dia{i}_utt0" for i in range(10)], dtype=object)
    columns["input_ids"] = np.array([np.concatenate([[101], rng.integers(2000, 9000, n), [102]]).astype(np.int32)
                                     for n in rng.integers(1, 20, 10)], dtype=object)  # lengths differ
    cfg = MultimodalLSTMConfig(preset="cpu-small", use_audio=False)
    torch.manual_seed(0)
    model = build_model(cfg)
    encoded = []  # rows of every call of the transformer itself
    model.text_encoder.model.register_forward_hook(
        lambda module, args, kwargs, out: encoded.append(len(kwargs["input_ids"])), with_kwargs=True)
    cache = text_state_cache(model, cfg)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    epoch = dict(model_cfg=cfg, loss_fn=torch.nn.CrossEntropyLoss(), device=torch.device("cpu"), amp=False,
                 num_classes=7, batch_size=4, text_states=cache)
    train = dict(optimizer=optimizer, scaler=torch.amp.GradScaler("cuda", enabled=False))
    run_epoch(model, _Rows(columns), **epoch, **train)
    assert sum(encoded) == 10 and len(encoded) == 3 and len(cache) == 10
    encoded.clear()
    run_epoch(model, _Rows(columns), **epoch, **train)  # a second epoch
    run_epoch(model, _Rows(columns), **epoch)  # validation
    assert encoded == [] and len(cache) == 10

    model.eval()
    with torch.no_grad():
        live = model(model_batch_inputs(cfg, columns))
        cached = model(cache.attach(model_batch_inputs(cfg, columns), columns["sample_id"]))
    assert encoded == [10] and len(cache) == 10  # only the live pass ran the encoder
    torch.testing.assert_close(cached, live, atol=1e-5, rtol=1e-5)

    trainable = MultimodalLSTMConfig(preset="cpu-small", use_audio=False, text_encoder={"freeze": False})
    tuned = build_model(trainable)
    assert text_state_cache(tuned, trainable) is None
    inputs = model_batch_inputs(trainable, columns)
    with pytest.raises(ValueError, match="frozen"):
        tuned.text_encoder(inputs.input_ids, inputs.attention_mask, torch.zeros(10, 1, 384))

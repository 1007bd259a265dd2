"""The backbones as plain modules: presets, shapes, parameter counts, masks, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfusion.artifacts.batches import emotion_inputs
from deepfusion.config import (
    ConfigError,
    MimamoConfig,
    MultimodalLSTMConfig,
    TextileNetConfig,
    validate_config,
)
from deepfusion.evaluation.metrics import classification_metrics, confusion_from_predictions
from deepfusion.models import build_model
from deepfusion.models.attention import SpatialAttention
from deepfusion.models.inputs import EmotionInputs
from deepfusion.pretrained import ModelWeightsUnavailable

# Published architecture sizes, built from configs alone (no download).
RESNET50_TRUNK = 23_508_032  # torchvision resnet50: 25,557,032 minus the 2048x1000 fc
BERT_BASE_NO_POOLER = 108_891_648  # bert-base-uncased 109,482,240 minus its 768x768 pooler
WAV2VEC2_BASE = 94_371_712  # facebook/wav2vec2-base (Wav2Vec2Model)


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paper(cls, **extra):
    data = {"preset": "paper", **extra}
    if cls is not MultimodalLSTMConfig:
        data["backbone"] = {"weights": None}
    if cls is not TextileNetConfig:
        data["text_encoder"] = {"load_weights": False}
    if cls is MultimodalLSTMConfig:
        data["audio_encoder"] = {"load_weights": False}
    return validate_config(cls, data)


def emotion_batch(size: int = 3, frame_size: int = 64, tokens: int = 12, samples: int = 24000) -> EmotionInputs:
    generator = torch.Generator().manual_seed(0)
    return EmotionInputs(
        speaker_id=torch.tensor([0, 2, 99][:size]), gender=torch.tensor([0, 1, 2][:size]),
        age=torch.tensor([float("nan"), 31.0, 45.0][:size]),
        input_ids=torch.randint(1000, 2000, (size, tokens), generator=generator),
        attention_mask=torch.ones(size, tokens, dtype=torch.long),
        has_text=torch.tensor([True, False, True][:size]),
        frames=torch.rand(size, 8, 3, frame_size, frame_size, generator=generator),
        has_video=torch.tensor([True, True, False][:size]),
        audio=torch.randn(size, samples, generator=generator),
        audio_lengths=torch.tensor([samples, samples // 2, samples // 3][:size]),
        has_audio=torch.tensor([True, False, True][:size]),
    )


def test_paper_textile_is_resnet50_with_attention_and_two_fc_layers():
    model = build_model(paper(TextileNetConfig)).eval()
    assert params(model.backbone) == RESNET50_TRUNK
    assert params(model.spatial_attention) == 2 * 7 * 7 + 1
    assert params(model.classifier) == 2048 * 512 + 512 + 512 * 3 + 3
    with torch.no_grad():
        images = torch.rand(2, 3, 224, 224)
        assert model.features(images).shape == (2, 2048)
        assert model(images).shape == (2, 3)


def test_paper_mimamo_shapes_and_sizes():
    model = build_model(paper(MimamoConfig, speaker={"num_speakers": 5})).eval()
    cfg = model.config
    assert (cfg.hidden_dim, cfg.num_heads, cfg.num_frames) == (512, 8, 8)
    assert params(model.frame_backbone) == RESNET50_TRUNK
    assert params(model.text_encoder) == BERT_BASE_NO_POOLER
    assert params(model.speaker_encoder.project) == (32 + 8 + 2) * 64 + 64
    with torch.no_grad():
        assert model(emotion_batch(size=2, frame_size=224)).shape == (2, 7)


def test_paper_multimodal_lstm_shapes_and_sizes():
    model = build_model(paper(MultimodalLSTMConfig)).eval()
    assert params(model.text_encoder) == BERT_BASE_NO_POOLER
    assert params(model.audio_encoder) == WAV2VEC2_BASE
    # 768-d text and audio: no projections; 8 heads; BiLSTM(768 + 64 -> 256 x 2); LayerNorm(512)
    assert isinstance(model.text_projection, torch.nn.Identity)
    assert model.cross_attention.num_heads == 8 and model.cross_attention.embed_dim == 768
    assert params(model.lstm) == 2 * 4 * 256 * (768 + 64 + 256 + 2)
    assert model.lstm.bidirectional and model.norm.normalized_shape == (512,)
    with torch.no_grad():
        assert model(emotion_batch(size=2)).shape == (2, 7)


@pytest.mark.parametrize("cls, overrides", [
    (TextileNetConfig, {}),
    (MimamoConfig, {}),
    (MultimodalLSTMConfig, {}),
    (MultimodalLSTMConfig, {"audio_encoder": {"kind": "logmel"}}),
    (MultimodalLSTMConfig, {"use_text": False}),
    (MultimodalLSTMConfig, {"use_audio": False}),
    (MultimodalLSTMConfig, {"pooling": "mean_std"}),
])
def test_cpu_small_forward_backward(cls, overrides):
    model = build_model(validate_config(cls, {"preset": "cpu-small", **overrides}))
    inputs = torch.rand(4, 3, 64, 64) if cls is TextileNetConfig else emotion_batch()
    logits = model(inputs)
    assert logits.shape == (len(inputs), 3 if cls is TextileNetConfig else 7)
    assert torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable), "every trainable weight gets a gradient"


def test_cpu_small_sizes_and_frozen_offline_text_encoder():
    lstm = build_model(validate_config(MultimodalLSTMConfig, {"preset": "cpu-small"}))
    assert lstm.text_encoder.hidden_size == 384 and lstm.text_encoder.frozen  # all-MiniLM-L6-v2
    assert not any(p.requires_grad for p in lstm.text_encoder.parameters())
    assert lstm.audio_encoder.hidden_size == 256
    lstm.train()
    assert not lstm.text_encoder.model.training, "a frozen encoder never runs dropout"
    mimamo = build_model(validate_config(MimamoConfig, {"preset": "cpu-small"}))
    assert params(mimamo.frame_backbone) < params(build_model(paper(TextileNetConfig)).backbone) / 4


@pytest.mark.parametrize("cls", [MimamoConfig, MultimodalLSTMConfig])
def test_masked_modalities_do_not_reach_the_logits(cls):
    """What a mask switches off may hold anything: the prediction stays the same."""
    model = build_model(validate_config(cls, {"preset": "cpu-small"})).eval()
    inputs = emotion_batch()
    changed = emotion_batch()
    changed.input_ids[1] = torch.randint(2000, 3000, changed.input_ids[1].shape)  # row 1: no text
    changed.audio[1] = torch.randn_like(changed.audio[1]) * 5  # row 1: no audio
    changed.frames[2] = torch.rand_like(changed.frames[2])  # row 2: no video
    with torch.no_grad():
        before, after = model(inputs), model(changed)
    torch.testing.assert_close(before[1:], after[1:])
    text_changed = emotion_batch()
    text_changed.input_ids[0] = torch.randint(2000, 3000, text_changed.input_ids[0].shape)  # row 0 has text
    with torch.no_grad():
        assert not torch.allclose(before[0], model(text_changed)[0]), "an unmasked modality does count"


def test_spatial_attention_is_a_map_in_unit_interval():
    attention = SpatialAttention(7)
    features = torch.randn(2, 16, 9, 9)
    attention_map = attention.attention_map(features)
    assert attention_map.shape == (2, 1, 9, 9)
    assert (attention_map >= 0).all() and (attention_map <= 1).all()
    torch.testing.assert_close(attention(features), features * attention_map)


def test_presets_fill_what_is_not_given_and_reject_unknown_names():
    cfg = validate_config(MultimodalLSTMConfig, {"preset": "cpu-small", "lstm_hidden": 64,
                                                 "audio_encoder": {"kind": "logmel"}})
    assert cfg.lstm_hidden == 64 and cfg.model_dim == 256  # given value wins, preset fills the rest
    assert cfg.audio_encoder.kind == "logmel" and not cfg.audio_encoder.load_weights
    assert validate_config(MultimodalLSTMConfig, {}).text_encoder.name == "bert-base-uncased"
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        validate_config(MimamoConfig, {"preset": "huge"})
    with pytest.raises(ConfigError, match="use_audio and use_text are both false"):
        validate_config(MultimodalLSTMConfig, {"use_audio": False, "use_text": False})


def test_paper_weights_offline_fail_with_a_message_naming_what_works(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelWeightsUnavailable, match="bert-base-uncased.*text_encoder.name: offline"):
        build_model(validate_config(MultimodalLSTMConfig, {"preset": "paper"}))
    with pytest.raises(ModelWeightsUnavailable, match="facebook/wav2vec2-base.*cpu-small"):
        build_model(validate_config(MultimodalLSTMConfig, {"preset": "paper", "use_text": False}))
    with pytest.raises(ModelWeightsUnavailable, match="not found: /nowhere/resnet.pth"):
        build_model(validate_config(TextileNetConfig, {"backbone": {"weights": "/nowhere/resnet.pth"}}))


def test_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 4, 300))  # class 4 rarely predicted
    metrics = classification_metrics(confusion_from_predictions(labels, predictions, 5), list("abcde"))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(labels, predictions, average="weighted", zero_division=0))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro", zero_division=0))
    per_class = f1_score(labels, predictions, average=None, zero_division=0)
    assert [metrics["per_class"][c]["f1"] for c in "abcde"] == pytest.approx(per_class)


def test_emotion_inputs_pad_and_mask_ragged_rows():
    batch = {
        "speaker_id": np.array([1, 0]), "gender": np.array(["F", None], dtype=object),
        "age": np.array([30.0, None], dtype=object),
        "input_ids": np.array([np.array([101, 7, 102], dtype=np.int32), np.array([], dtype=np.int32)], dtype=object),
        "has_text": np.array([True, False]),
        "audio": np.array([np.ones(20000, np.float32), None], dtype=object), "has_audio": np.array([True, False]),
    }
    inputs = emotion_inputs(batch, text=True, video=False, audio=True)
    assert inputs.input_ids.tolist() == [[101, 7, 102], [0, 0, 0]]
    assert inputs.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]  # never an all-masked row
    assert inputs.audio.shape == (2, 20000) and inputs.audio_lengths.tolist() == [20000, 8000]
    assert inputs.audio[1].abs().sum() == 0 and inputs.frames is None
    assert inputs.gender.tolist() == [1, 0] and torch.isnan(inputs.age[1])


def one_row(inputs: EmotionInputs, i: int) -> EmotionInputs:
    """Row ``i`` alone, its audio cut to its own length: no padding from other rows."""
    fields = {name: getattr(inputs, name)[i:i + 1] for name in inputs.__dataclass_fields__
              if getattr(inputs, name) is not None}
    fields["audio"] = fields["audio"][:, :int(inputs.audio_lengths[i])]
    if inputs.audio_lld is not None:
        fields["audio_lld"] = fields["audio_lld"][:, :int(inputs.audio_lld_lengths[i])]
    return EmotionInputs(**fields)


@pytest.mark.parametrize("cls, overrides", [
    (MimamoConfig, {}),
    (MultimodalLSTMConfig, {}),  # small wav2vec2 with layer norm + attention mask
    (MultimodalLSTMConfig, {"audio_encoder": {"size": {"feat_extract_norm": "group"}}}),  # wav2vec2-base's kind
    (MultimodalLSTMConfig, {"audio_encoder": {"kind": "logmel"}}),
    (MultimodalLSTMConfig, {"audio_encoder": {"kind": "egemaps"}}),  # openSMILE descriptors
], ids=["mimamo", "lstm-wav2vec2-layer", "lstm-wav2vec2-group", "lstm-logmel", "lstm-egemaps"])
def test_a_sample_gets_the_same_logits_alone_or_in_a_padded_batch(cls, overrides):
    """Serving batches requests and the logit cache batches rows: a sample's prediction
    must not depend on its neighbours' lengths."""
    model = build_model(validate_config(cls, {"preset": "cpu-small", **overrides})).eval()
    inputs = emotion_batch()
    inputs.has_audio[:] = True  # every row's audio counts, at lengths 24000, 12000, 8000
    # descriptor frames (25 per 10 ms) of 3 clips, 40 / 17 / 9 frames long, zero-padded
    inputs.audio_lld_lengths = torch.tensor([40, 17, 9])
    real = torch.arange(40)[None, :, None] < inputs.audio_lld_lengths[:, None, None]
    inputs.audio_lld = torch.randn(3, 40, 25) * real
    with torch.no_grad():
        batched = model(inputs)
        alone = torch.cat([model(one_row(inputs, i)) for i in range(3)])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)

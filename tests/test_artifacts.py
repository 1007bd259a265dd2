"""The on-disk formats and the rules around them: one checkpoint card, one freshness rule,
one model registry."""

from __future__ import annotations

import json

import pytest
import torch

from deepfusion.artifacts.batches import IMAGE_COLUMNS, model_columns
from deepfusion.artifacts.checkpoint import (
    CARD,
    CheckpointCard,
    CheckpointError,
    checkpoint_hash,
    load_fusion,
    load_model,
    read_card,
    save_checkpoint,
    save_fusion,
)
from deepfusion.artifacts.freshness import RUN_CONFIG, claim_run_dir, content_key, freshness_record, is_current
from deepfusion.config import ConfigError
from deepfusion.config.architectures import MultimodalLSTMConfig, SpeechMLPConfig, TextileNetConfig
from deepfusion.labels import EMOTIONS, TEXTILE_CLASSES
from deepfusion.models import MODELS, build_model, model_inputs, model_spec
from deepfusion.models.fusion import EnhancedLateFusion, build_fusion
from deepfusion.models.registry import FUSION_MODELS


def test_the_registry_builds_every_kind_with_its_declared_class_inputs_and_presets():
    assert set(MODELS) == {"textile", "mimamo", "multimodal_lstm", "speech_mlp"}
    for kind, spec in MODELS.items():
        assert spec.presets == ("paper", "cpu-small")
        cfg = spec.config(kind=kind, preset="cpu-small")
        assert type(build_model(cfg)).__name__ == spec.builder.split(":")[1]
        assert model_inputs(cfg) == spec.inputs(cfg)
    textile = TextileNetConfig(kind="textile", preset="cpu-small")
    assert model_columns(textile) == list(IMAGE_COLUMNS)
    # openSMILE readers take their feature columns, never the waveform
    assert model_columns(SpeechMLPConfig()) == ["speaker_id", "gender", "age", "audio_functionals", "has_audio"]
    lstm = MultimodalLSTMConfig(preset="cpu-small", use_text=False, audio_encoder={"kind": "compare"})
    assert model_columns(lstm)[-3:] == ["audio_lld", "audio_lld_dim", "has_audio"]
    assert "audio" not in model_columns(lstm)
    assert model_spec("multimodal_lstm").datasets == ("meld", "speech", "manifest")
    with pytest.raises(ValueError, match=r"unknown model kind 'gpt'; expected one of \['mimamo', "):
        model_spec("gpt")
    for kind in FUSION_MODELS:
        assert build_fusion(kind, 7, 0.6, 0.1).fusion_weights()[0].item() == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown fusion kind 'sum'"):
        build_fusion("sum", 7, 0.5)


def test_backbone_and_fusion_checkpoints_share_one_card_and_one_hash(tmp_path):
    cfg = TextileNetConfig(kind="textile", preset="cpu-small")
    model = build_model(cfg)
    backbone = save_checkpoint(tmp_path / "textile", model, model_config=cfg, label_names=list(TEXTILE_CLASSES),
                               data_info={"dataset": "t"}, train_config={"epochs": 1}, training_state={"epoch": 1})
    fusion = save_fusion(tmp_path / "fusion", EnhancedLateFusion(7, 0.4), CheckpointCard(
        kind="enhanced_late_fusion", label_names=list(EMOTIONS), hyperparameters={"video_weight": 0.4},
        backbones={"video_checkpoint": {"path": "v", "sha256": "x"}}, fusion_weights=[0.4, 0.6]))
    cards = {name: json.loads((folder / CARD).read_text()) for name, folder in (("b", backbone), ("f", fusion))}
    assert cards["b"].keys() == cards["f"].keys()  # one schema
    assert cards["b"]["kind"] == "textile" and cards["f"]["kind"] == "enhanced_late_fusion"

    card = read_card(backbone)
    assert card.model_config == cfg and card.label_names == list(TEXTILE_CLASSES) and card.preset == "cpu-small"
    assert card.content_hash == checkpoint_hash(backbone)
    loaded, _ = load_model(backbone)
    images = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.equal(loaded(images), model(images))
    fused, fusion_card = load_fusion(fusion)
    assert fusion_card.fusion_weights == [0.4, 0.6] and fusion_card.content_hash == checkpoint_hash(fusion)
    assert fused.fusion_weights()[0].item() == pytest.approx(0.4)

    # The hash covers the card: relabelling a checkpoint changes it.
    before = checkpoint_hash(backbone)
    (backbone / CARD).write_text(json.dumps({**cards["b"], "label_names": list(reversed(TEXTILE_CLASSES))}))
    assert checkpoint_hash(backbone) != before
    # One error type, naming the folder, for every kind of "not a checkpoint".
    with pytest.raises(CheckpointError, match="holds a enhanced_late_fusion model, not a backbone"):
        load_model(fusion)
    with pytest.raises(CheckpointError, match="holds a textile backbone, not a fusion model"):
        load_fusion(backbone)
    with pytest.raises(CheckpointError, match=r"not a deepfusion checkpoint \(missing model.safetensors, card.json\)"):
        read_card(tmp_path)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="written by an earlier version of deepfusion"):
        checkpoint_hash(tmp_path / "old")
    assert issubclass(CheckpointError, ConfigError)


def test_one_freshness_rule_for_run_folders(tmp_path):
    config = {"model": {"kind": "textile"}, "seed": 0}
    assert content_key(config, {"data": "abc"}) == content_key(dict(reversed(config.items())), {"data": "abc"})
    assert content_key(config, {"data": "abc"}) != content_key(config, {"data": "abd"})
    record = freshness_record(config, {"data": "abc"})
    assert is_current(record, config, {"data": "abc"}) and not is_current(record, {**config, "seed": 1})

    run = tmp_path / "run"
    assert claim_run_dir(run, config, what="run", fresh=False) is False  # a new run
    assert json.loads((run / RUN_CONFIG).read_text()) == freshness_record(config)
    assert claim_run_dir(run, config, what="run", fresh=False) is True  # resumed
    with pytest.raises(ConfigError, match="run 'run' .* was started with a different seed; .*--fresh"):
        claim_run_dir(run, {**config, "seed": 1}, what="run", fresh=False)
    assert claim_run_dir(run, {**config, "seed": 1}, what="run", fresh=True) is False
    # A folder recorded before records carried their key still resumes.
    (run / RUN_CONFIG).write_text(json.dumps(config))
    assert claim_run_dir(run, config, what="run", fresh=False) is True


class _RunsCode:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_damaged_or_planted_checkpoint_files_are_refused_naming_the_file(tmp_path):
    import shutil

    from deepfusion.artifacts.checkpoint import TRAINING_STATE, WEIGHTS, load_training_state

    cfg = TextileNetConfig(kind="textile", preset="cpu-small")
    good = save_checkpoint(tmp_path / "good", build_model(cfg), model_config=cfg, label_names=list(TEXTILE_CLASSES),
                           data_info={}, train_config={}, training_state={"epoch": 3, "history": [{"loss": 0.5}]})
    assert load_training_state(good)["epoch"] == 3
    fusion = save_fusion(tmp_path / "fusion", EnhancedLateFusion(7, 0.4), CheckpointCard(
        kind="enhanced_late_fusion", label_names=list(EMOTIONS), hyperparameters={"video_weight": 0.4}))

    def damaged(source, name: str, damage) -> object:
        folder = tmp_path / f"{source.name}-{name}-{damage.__name__}"
        shutil.copytree(source, folder)
        damage(folder / name)
        return folder

    def truncate(path):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def garble(path):
        path.write_bytes(b"\x00garbage" * 64)

    for damage in (truncate, garble):
        for source, load in ((good, load_model), (fusion, load_fusion)):
            for name in (WEIGHTS, CARD):
                folder = damaged(source, name, damage)
                with pytest.raises(CheckpointError) as err:
                    load(folder)
                assert str(folder / name) in str(err.value), (name, damage.__name__, str(err.value))
        folder = damaged(good, TRAINING_STATE, damage)
        with pytest.raises(CheckpointError, match=TRAINING_STATE):
            load_training_state(folder)

    # A training state that would run code when unpickled is refused, and runs nothing.
    marker = tmp_path / "planted-code-ran"
    torch.save({"epoch": 1, "optimizer": _RunsCode(marker)}, good / TRAINING_STATE)
    with pytest.raises(CheckpointError, match=f"{TRAINING_STATE}: refused"):
        load_training_state(good)
    assert not marker.exists()


def test_averaged_checkpoint_is_the_mean_of_its_members_and_names_them(tmp_path):
    """jobs.average_checkpoints: floating weights are the element-wise mean, integer buffers
    the last member's; the result loads like any checkpoint and its card names the members.
    Checkpoints of another model, other classes, or --out among them are refused."""
    from deepfusion.artifacts.averaging import average_checkpoints

    cfg = TextileNetConfig(kind="textile", preset="cpu-small")
    folders, states = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(cfg)
        for module in model.modules():  # distinct BatchNorm statistics and step counts
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.num_batches_tracked.fill_(10 + seed)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        folders.append(save_checkpoint(tmp_path / f"epoch{seed}", model, model_config=cfg,
                                       label_names=list(TEXTILE_CLASSES), data_info={"dataset": "t"},
                                       train_config={"epochs": 2}, training_state={"epoch": seed}))
    card = average_checkpoints(folders, tmp_path / "averaged")
    averaged, loaded_card = load_model(tmp_path / "averaged")
    assert loaded_card.content_hash == card.content_hash and card.metrics == {}
    assert card.averaged_from == [{"path": str(f.resolve()), "sha256": read_card(f).content_hash} for f in folders]
    assert json.loads((tmp_path / "averaged" / "train_config.json").read_text()) == {"epochs": 2}
    weights = averaged.state_dict()
    for name, first in states[0].items():
        if first.is_floating_point():
            torch.testing.assert_close(weights[name], (first + states[1][name]) / 2)
        else:
            assert torch.equal(weights[name], states[1][name])
    assert any(not torch.equal(weights[n], states[0][n]) for n in states[0] if states[0][n].is_floating_point())
    reference = build_model(cfg).eval()
    reference.load_state_dict({n: (a + states[1][n]) / 2 if a.is_floating_point() else states[1][n]
                               for n, a in states[0].items()})
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(averaged(images), reference(images))

    relabelled = save_checkpoint(tmp_path / "other", build_model(cfg), model_config=cfg,
                                 label_names=list(reversed(TEXTILE_CLASSES)), data_info={"dataset": "t"},
                                 train_config={}, training_state={})
    with pytest.raises(CheckpointError, match=r"other: a different label set from .*epoch0"):
        average_checkpoints([folders[0], relabelled], tmp_path / "x")
    with pytest.raises(CheckpointError, match="is one of the checkpoints being averaged"):
        average_checkpoints(folders, folders[1])
    with pytest.raises(CheckpointError, match="at least 2 checkpoints, got 1"):
        average_checkpoints(folders[:1], tmp_path / "x")

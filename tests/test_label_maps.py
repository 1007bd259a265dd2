"""One label map: class order travels with every checkpoint and a mismatch is refused
wherever two of them meet (batch evaluation, the logit cache, serving); no model input
can come from the label."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import save_backbone

from deepfusion.artifacts.checkpoint import CARD
from deepfusion.config import ConfigError, FusionConfig, TrainConfig, validate_config
from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig, TextileNetConfig
from deepfusion.labels import EMOTIONS

# anger and disgust swapped: a model trained this way predicts "anger" at index 1
SWAPPED = [EMOTIONS[1], EMOTIONS[0], *EMOTIONS[2:]]


@pytest.fixture(scope="module")
def meld(demo_shards, tmp_path_factory) -> dict:
    from deepfusion.artifacts.dataset import ShardDataset

    root = tmp_path_factory.mktemp("label_maps")
    data = ShardDataset.open(demo_shards["meld"])
    video = save_backbone(root / "mimamo", data, MimamoConfig(kind="mimamo", preset="cpu-small"), 0)
    audio_text = save_backbone(root / "lstm", data, MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 1)
    return {"root": root, "data": data, "video": video, "audio_text": audio_text}


def with_labels(checkpoint: Path, names: list[str], target: Path) -> Path:
    """A copy of ``checkpoint`` claiming another class order (as a model trained on a
    dataset with another order would)."""
    shutil.copytree(checkpoint, target)
    card = json.loads((target / CARD).read_text())
    (target / CARD).write_text(json.dumps({**card, "label_names": names}))
    return target


def test_batch_evaluation_refuses_a_checkpoint_with_another_class_order(meld, tmp_path):
    from deepfusion.config import DataResources
    from deepfusion.evaluation.predict import evaluate_split

    swapped = with_labels(meld["audio_text"], SWAPPED, tmp_path / "swapped")
    with pytest.raises(ConfigError, match=r"label maps differ: checkpoint .*swapped has \['disgust', 'anger'"):
        evaluate_split(swapped, meld["data"], "test", DataResources())


def test_the_logit_cache_refuses_a_backbone_with_another_class_order(meld, tmp_path):
    from deepfusion.fusion.logit_cache import open_or_build

    swapped = with_labels(meld["video"], SWAPPED, tmp_path / "swapped")
    cfg = validate_config(FusionConfig, {"data": str(meld["data"].path), "video_checkpoint": str(swapped),
                                         "audio_text_checkpoint": str(meld["audio_text"]),
                                         "cache_dir": str(tmp_path / "cache")})
    with pytest.raises(ConfigError, match=r"fusion.video_checkpoint: the checkpoint's labels \['disgust', 'anger'.*"
                                          r"scrambled"):
        open_or_build(cfg)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-built


def test_serving_refuses_a_fusion_model_with_another_class_order(meld):
    from deepfusion.artifacts.checkpoint import CheckpointCard, read_card, save_fusion
    from deepfusion.inference.emotion import FusionModel, check_servable
    from deepfusion.models.fusion import EnhancedLateFusion

    video, audio_text = read_card(meld["video"]), read_card(meld["audio_text"])
    folder = meld["root"] / "fusion_swapped"
    save_fusion(folder, EnhancedLateFusion(7, video_weight=0.5), CheckpointCard(
        kind="enhanced_late_fusion", label_names=SWAPPED, hyperparameters={"video_weight": 0.5},
        backbones={"video_checkpoint": {"path": str(video.path), "sha256": video.content_hash},
                   "audio_text_checkpoint": {"path": str(audio_text.path), "sha256": audio_text.content_hash}},
        metrics={}, fusion_weights=[0.5, 0.5]))
    with pytest.raises(ConfigError, match=r"serve: label maps differ .* fusion \['disgust', 'anger'.*scrambled"):
        check_servable(FusionModel(folder).card, video, audio_text)


MODEL_CONFIGS = [TextileNetConfig(kind="textile", preset="cpu-small"),
                 MimamoConfig(kind="mimamo", preset="cpu-small")] + [
    MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small", use_text=text, use_audio=audio)
    for text, audio in itertools.product((True, False), repeat=2) if text or audio]


@pytest.mark.parametrize("model_cfg", MODEL_CONFIGS, ids=lambda c: f"{c.kind}-{getattr(c, 'use_text', '')}-"
                                                                 f"{getattr(c, 'use_audio', '')}")
def test_no_model_reads_the_label_or_anything_derived_from_it(model_cfg):
    from deepfusion.artifacts.batches import model_columns

    columns = set(model_columns(model_cfg))
    assert not columns & {"label", "emotion", "sentiment", "Sentiment", "intensity", "source", "sample_id"}, columns


def test_a_model_cannot_be_configured_to_read_the_label_column(meld):
    for key in ("columns", "inputs", "input_columns", "extra_inputs"):
        with pytest.raises(ConfigError, match=rf"model\.multimodal_lstm\.{key}: Extra inputs are not permitted"):
            validate_config(TrainConfig, {"model": {"kind": "multimodal_lstm", key: ["label"]},
                                          "data": str(meld["data"].path)}, source="train")


def test_model_inputs_do_not_change_when_only_the_label_does(meld):
    """The same shard rows with every label replaced give bit-identical model inputs."""
    from deepfusion.artifacts.batches import model_batch_inputs

    table = pq.read_table(meld["data"].path / "split=train")
    batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    relabelled = dict(batch, label=(batch["label"] + 3) % 7, emotion=np.full(len(batch["label"]), "joy"))
    for model_cfg in MODEL_CONFIGS[1:]:
        model_cfg = meld["data"].resolve_model_config(model_cfg)
        a, b = model_batch_inputs(model_cfg, batch), model_batch_inputs(model_cfg, relabelled)
        for field, value in vars(a).items():
            if isinstance(value, torch.Tensor):  # unknown ages are NaN in both
                torch.testing.assert_close(value, getattr(b, field), rtol=0, atol=0, equal_nan=True,
                                           msg=f"{model_cfg.kind}.{field}")


def test_label_map_option_reads_inline_pairs_and_files_and_names_what_is_wrong(tmp_path):
    from deepfusion.workflows.predict_inputs import input_labels, read_label_map

    assert read_label_map("hap=happy, ang = angry") == ({"hap": "happy", "ang": "angry"}, "--label-map")
    (tmp_path / "map.yaml").write_text("hap: happy\nang: angry\n")
    assert read_label_map(str(tmp_path / "map.yaml")) == ({"hap": "happy", "ang": "angry"},
                                                         f"--label-map {tmp_path / 'map.yaml'}")
    (tmp_path / "map.json").write_text('{"neu": "neutral"}')
    assert read_label_map(str(tmp_path / "map.json"))[0] == {"neu": "neutral"}
    for bad, message in (("hap", "expected a .json/.yaml file or label=class"), (str(tmp_path / "no.json"),
                                                                                 "no.json not found")):
        with pytest.raises(ConfigError, match=message):
            read_label_map(bad)
    # the card's map, the class names themselves too; a map onto other classes is refused
    labels = input_labels(["angry", "happy"], {"preprocess_config": {"label_map": {"ang": "angry", "hap": "happy"}}})
    assert labels.label_map == {"ang": "angry", "hap": "happy", "angry": "angry", "happy": "happy"}
    assert input_labels(["angry", "happy"], {}).origin == "the checkpoint's classes"
    with pytest.raises(ConfigError, match=r"--label-map: maps onto \['joy'\], which are not the model's classes"):
        input_labels(["angry", "happy"], {}, {"hap": "joy"})

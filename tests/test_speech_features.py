"""openSMILE features on REAL speech clips (RAVDESS, ../shared/data/speech): what the shards
hold is what openSMILE itself computes from the file, per-speaker normalisation is exactly
(x - speaker mean) / speaker std, and batch prediction normalises as preprocessing did."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import preprocess_config, read_shards, save_backbone

from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.config import ConfigError, SpeechMLPConfig, validate_config
from deepfusion.config.architectures import MultimodalLSTMConfig

SPLITS = ("train", "val", "test")


def _rows(out_dir: Path) -> list[dict]:
    return [row for split in SPLITS for row in read_shards(out_dir, split)]


@pytest.fixture(scope="module")
def speech_features(shared_data, tmp_path_factory, ray_local):
    """Shards of 11 RAVDESS clips at their own 48 kHz: 3 speakers with 3 clips and 2 with
    one each (those two are pooled), raw and per-speaker normalised."""
    from deepfusion.preprocess.datasets import preprocess

    root = tmp_path_factory.mktemp("speech_features")
    with open(shared_data / "speech" / "MANIFEST.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["corpus"] == "RAVDESS"]
    by_speaker = defaultdict(list)
    for row in rows:
        by_speaker[row["speaker"]].append(row)
    speakers = sorted(s for s in by_speaker if len(by_speaker[s]) >= 3)
    chosen = [r for s in speakers[:3] for r in by_speaker[s][:3]] + [by_speaker[s][0] for s in speakers[3:5]]
    manifest = root / "MANIFEST.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "speaker", "gender"])
        writer.writeheader()
        for row in chosen:
            writer.writerow({"path": str(shared_data / "speech" / row["path"]), "label": row["label"],
                             "speaker": row["speaker"], "gender": row["gender"]})
    audio = {"sample_rate": 48000, "max_seconds": 10.0, "opensmile": {"feature_set": "egemaps", "lld": True}}
    dataset = {"kind": "speech", "root": str(root), "audio": audio}
    # "norm" is fold 0 of a 2-fold speaker cross-validation (the fold-view test derives fold 1)
    shards = tmp_path_factory.mktemp("speech_features_shards")  # outside the corpus folder it fingerprints
    cfg = preprocess_config(shards, dataset | {"name": "raw"},
                            dataset | {"name": "norm", "audio": audio | {"opensmile": audio["opensmile"] |
                                                                         {"normalize": "speaker"}},
                                       "split": {"train": 0.5, "val": 0.3, "test": 0.2},
                                       "folds": {"count": 2, "test": 0}})
    preprocess(cfg)
    return {"root": root, "manifest": manifest, "clips": chosen, "pooled": sorted(speakers[3:5]),
            "raw": shards / "raw", "norm": shards / "norm", "norm_config": cfg.datasets[1]}


def _file_of(row: dict) -> str:
    """The clip a row came from: its sample id is ``<dataset>/<manifest path>``."""
    return row["sample_id"].split("/", 1)[1]


def test_shard_features_equal_a_direct_opensmile_call_on_the_file(speech_features):
    import opensmile

    rows = _rows(speech_features["raw"])
    assert len(rows) == 11
    functionals = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    descriptors = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)
    for row in rows:
        # openSMILE reading the wav itself (audiofile), at its own rate: nothing of ours in between
        expected = functionals.process_file(_file_of(row)).to_numpy()[0]
        assert len(row["audio_functionals"]) == 88
        np.testing.assert_allclose(row["audio_functionals"], expected, rtol=1e-5, atol=1e-6)
        lld = descriptors.process_file(_file_of(row)).to_numpy()
        assert row["audio_lld_dim"] == 25 and lld.shape[0] > 100 and len(row["audio_lld"]) == lld.size
        np.testing.assert_allclose(np.reshape(row["audio_lld"], lld.shape), lld, rtol=1e-5, atol=1e-6)
    manifest = ShardDataset.open(speech_features["raw"]).manifest
    assert manifest["opensmile"] == {"feature_set": "egemaps", "functionals": 88, "lld": 25, "normalize": "none"}


def test_per_speaker_normalisation_is_the_speakers_own_z_score(speech_features):
    raw = {_file_of(r): r for r in _rows(speech_features["raw"])}
    norm = {_file_of(r): r for r in _rows(speech_features["norm"])}
    assert raw.keys() == norm.keys()
    pooled = set(speech_features["pooled"])
    groups = defaultdict(list)
    for clip, row in raw.items():
        groups["pooled" if row["speaker"] in pooled else row["speaker"]].append(clip)
    assert sorted(len(g) for g in groups.values()) == [2, 3, 3, 3]  # the 1-clip speakers form one group
    for clips in groups.values():
        x = np.array([raw[c]["audio_functionals"] for c in clips], dtype=np.float64)
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 1e-6, std, 1.0)
        for c, expected in zip(clips, (x - mean) / std):
            np.testing.assert_allclose(norm[c]["audio_functionals"], expected, rtol=1e-4, atol=1e-5)
        # descriptors: statistics over every frame of the group's clips
        frames = [np.reshape(raw[c]["audio_lld"], (-1, 25)).astype(np.float64) for c in clips]
        stacked = np.concatenate(frames)
        lld_mean, lld_std = stacked.mean(0), np.where(stacked.std(0) > 1e-6, stacked.std(0), 1.0)
        got = np.concatenate([np.reshape(norm[c]["audio_lld"], (-1, 25)) for c in clips])
        np.testing.assert_allclose(got, (stacked - lld_mean) / lld_std, rtol=1e-4, atol=1e-4)
    summary = ShardDataset.open(speech_features["norm"]).manifest["opensmile"]
    assert summary["normalize"] == "speaker" and summary["pooled_speakers"] == speech_features["pooled"]
    assert summary["groups"] == 4


def test_models_are_checked_against_the_features_the_shards_hold(speech_features):
    data = ShardDataset.open(speech_features["norm"])
    mlp = data.resolve_model_config(SpeechMLPConfig(features="egemaps"))
    assert mlp.features == "egemaps"
    lstm = validate_config(MultimodalLSTMConfig, {"preset": "cpu-small", "use_text": False,
                                                  "audio_encoder": {"kind": "egemaps"}})
    assert data.resolve_model_config(lstm).speaker.num_speakers == len(data.manifest["speakers"])
    with pytest.raises(ConfigError, match=r"train.model.features: compare functionals, but .* holds egemaps features"):
        data.resolve_model_config(SpeechMLPConfig(features="compare"))


def test_batch_prediction_normalises_per_speaker_as_preprocessing_did(speech_features, tmp_path):
    """A model on per-speaker normalised features, predicted over the corpus with jobs.predict's
    workflow: the same probabilities as the model on the preprocessed shards; a label the
    label map does not know is quarantined and counted; Serve refuses the model."""
    import torch

    from deepfusion.artifacts.batches import model_batch_inputs
    from deepfusion.artifacts.checkpoint import load_model, read_card
    from deepfusion.inference.emotion import EmotionDecoder, EmotionRequest, per_request_refusal
    from deepfusion.workflows.evaluate import evaluate

    data = ShardDataset.open(speech_features["norm"])
    checkpoint = save_backbone(tmp_path / "mlp", data, SpeechMLPConfig(features="egemaps", hidden=(16,)), seed=0)
    manifest = tmp_path / "corpus" / "MANIFEST.csv"
    manifest.parent.mkdir()
    lines = speech_features["manifest"].read_text().splitlines()
    # one clip of another corpus' label set: nothing maps "boredom" onto the emotions
    extra = lines[1].split(",")
    manifest.write_text("\n".join([*lines, ",".join([extra[0], "boredom", *extra[2:]])]) + "\n")

    result = evaluate(checkpoint, manifest, tmp_path / "eval")
    assert [q.reason for q in result.quarantined] == [
        "unknown label 'boredom': not in the label map of the checkpoint's card (angry -> anger, disgust -> "
        "disgust, fearful -> fear, happy -> joy, neutral -> neutral, calm -> neutral, sad -> sadness, "
        "surprised -> surprise, anger -> anger, fear -> fear, joy -> joy, sadness -> sadness, surprise -> "
        "surprise)"]
    table = result.table()
    assert len(table) == 11 and result.evaluation.metrics["num_samples"] == 11

    model, _ = load_model(checkpoint)
    rows = _rows(speech_features["norm"])
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    with torch.no_grad():
        shard_probs = model(model_batch_inputs(model.config, batch)).softmax(-1).numpy()
    predicted = {_file_of(row): row for row in table.to_dict("records")}
    for row, probs in zip(rows, shard_probs):
        got = predicted[_file_of(row)]
        np.testing.assert_allclose([got[f"prob_{n}"] for n in data.label_names], probs, rtol=1e-4, atol=1e-5)

    with pytest.raises(ConfigError, match="normalised per speaker .* one request cannot be"):
        EmotionDecoder(read_card(checkpoint).data_info).row(EmotionRequest(audio_path=_file_of(rows[0])))
    assert per_request_refusal(read_card(checkpoint).data_info) is not None
    assert per_request_refusal(ShardDataset.open(speech_features["raw"]).checkpoint_info()) is None


def test_an_ensemble_averages_its_members_probabilities(speech_features, tmp_path, capsys):
    """Two models evaluated on the same corpus -> `deepfusion ensemble` (in this process): the
    mean of their probabilities, with metrics; members that predicted different inputs are
    refused."""
    from helpers import run_cli

    from deepfusion.workflows.evaluate import evaluate
    from deepfusion.workflows.predict import read_predictions

    data = ShardDataset.open(speech_features["raw"])
    outs = []
    for seed in (0, 1):
        checkpoint = save_backbone(tmp_path / f"mlp{seed}", data, SpeechMLPConfig(features="egemaps"), seed=seed)
        outs.append(tmp_path / f"eval{seed}")
        evaluate(checkpoint, speech_features["manifest"], outs[-1])
    code, stdout, stderr = run_cli(["ensemble", "--predictions", *map(str, outs), "--out",
                                    str(tmp_path / "ensemble")], capsys)
    assert code == 0, stderr[-2000:]
    assert "ensemble of 2 over 11 samples" in stdout and stdout.count("  member ") == 2
    members = [read_predictions(o) for o in outs]
    table = pd.read_csv(tmp_path / "ensemble" / "predictions.csv")
    probs = [c for c in table.columns if c.startswith("prob_")]
    assert len(probs) == 7
    mean = (members[0][probs].to_numpy() + members[1][probs].to_numpy()) / 2
    np.testing.assert_allclose(table[probs].to_numpy(), mean, rtol=1e-9)
    assert (table["prediction"] == [p[len("prob_"):] for p in table[probs].idxmax(axis=1)]).all()
    metrics = next((tmp_path / "ensemble").glob("*_metrics.json"))
    assert json.loads(metrics.read_text())["num_samples"] == 11

    # logit adjustment on one member: its probabilities over the training prior, renormalised
    code, stdout, stderr = run_cli(["ensemble", "--predictions", str(outs[0]), "--logit-adjustment", "1",
                                    "--out", str(tmp_path / "adjusted")], capsys)
    assert code == 0 and "logit adjustment tau=1" in stdout, stderr[-2000:]
    counts = data.manifest["counts"]["train"]
    prior = np.array([counts.get(p[len("prob_"):], 0) + 1 for p in probs], dtype=float)  # add-one
    prior /= prior.sum()
    expected = members[0][probs].to_numpy() / prior
    expected /= expected.sum(axis=1, keepdims=True)
    got = pd.read_csv(tmp_path / "adjusted" / "predictions.csv")[probs].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    record = json.loads((tmp_path / "adjusted" / "ensemble.json").read_text())
    assert record["logit_adjustment"] == 1.0 and sum(record["training_prior"].values()) == pytest.approx(1.0, abs=1e-5)

    other = tmp_path / "other.csv"
    lines = speech_features["manifest"].read_text().splitlines()
    other.write_text("\n".join(lines[:4]) + "\n")
    evaluate(tmp_path / "mlp0", other, tmp_path / "eval_other")
    code, _, stderr = run_cli(["ensemble", "--predictions", str(outs[0]), str(tmp_path / "eval_other"),
                               "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "not the same input" in stderr, stderr[-2000:]


def test_a_fold_written_from_another_folds_shards_equals_the_fold_preprocessed(speech_features, tmp_path):
    """Cross-validation decodes a corpus once: fold 1 written from fold 0's shards holds the
    rows, ids, splits and speaker ids that Ray Data preprocessing of fold 1 gives, and is
    then found up to date."""
    from deepfusion.preprocess.datasets import preprocess
    from deepfusion.preprocess.fold_views import write_fold_view

    fold0 = speech_features["norm_config"]
    fold1 = fold0.model_copy(update={"name": "norm_fold1", "folds": fold0.folds.model_copy(update={"test": 1})})
    (preprocessed,) = preprocess(preprocess_config(tmp_path / "preprocessed", fold1.model_dump(mode="json")))
    with pytest.raises(ValueError, match="norm_fold1: its settings differ from norm's beyond the fold"):
        write_fold_view(speech_features["norm"], fold0, fold1.model_copy(update={"seed": 7}), tmp_path / "x", 2)

    out = tmp_path / "view" / "norm_fold1"
    manifest, written = write_fold_view(speech_features["norm"], fold0, fold1, out, 2)
    assert written
    want = {r["sample_id"]: r for r in _rows(preprocessed.out_dir)}
    got = {r["sample_id"]: r for r in _rows(out)}
    assert set(got) == set(want) and len(got) == 11
    assert {r["split"] for r in got.values()} == {"train", "val", "test"}
    assert sorted(r["split"] for r in got.values()) != sorted(r["split"] for r in _rows(speech_features["norm"]))
    for sample_id, row in got.items():
        for column, value in want[sample_id].items():
            if isinstance(value, (list, np.ndarray)):
                np.testing.assert_array_equal(row[column], value, err_msg=f"{sample_id} {column}")
            else:
                assert row[column] == value or (value != value and row[column] != row[column]), (sample_id, column)
    for key in ("counts", "totals", "speakers", "quarantined", "freshness", "preprocess_config", "opensmile"):
        assert manifest[key] == preprocessed.manifest[key], key
    assert manifest["derived_from"]["dataset"] == "norm"
    # written once: the same call again finds it up to date, as preprocessing of that fold would
    again, written = write_fold_view(speech_features["norm"], fold0, fold1, out, 2)
    assert not written and again == manifest
    (skipped,) = preprocess(preprocess_config(tmp_path / "view", fold1.model_dump(mode="json")))
    assert skipped.skipped

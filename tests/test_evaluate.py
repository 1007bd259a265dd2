"""jobs.evaluate: a trained model on labeled data it has never seen (a MELD csv here;
tests/test_predict.py has the other layouts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli, save_backbone

from deepfusion.config import ConfigError
from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig


@pytest.fixture(scope="module")
def trained(demo_shards, tmp_path_factory) -> dict:
    """The demo MELD corpus preprocessed as training would see it (the session's shards), and
    a Multimodal LSTM and a MIMAMO Net checkpoint of that data."""
    from deepfusion.artifacts.dataset import ShardDataset

    root = tmp_path_factory.mktemp("evaluate")
    data = ShardDataset.open(demo_shards["meld"])
    lstm = save_backbone(root / "lstm", data, MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 0)
    # video only: on a csv without --media it would see nothing
    mimamo = save_backbone(root / "mimamo", data, MimamoConfig(kind="mimamo", preset="cpu-small", use_text=False), 1)
    return {"data": data, "lstm": lstm, "mimamo": mimamo}


def test_a_csv_evaluates_exactly_as_the_same_rows_preprocessed_for_training(trained, demo_corpus, tmp_path):
    from deepfusion.config import DataResources
    from deepfusion.evaluation.predict import evaluate_split
    from deepfusion.workflows.evaluate import evaluate

    meld = demo_corpus / "meld"
    result = evaluate(trained["lstm"], meld / "test_sent_emo.csv", tmp_path / "out", media_dir=meld / "test")
    reference = evaluate_split(trained["lstm"], trained["data"], "test", DataResources())
    assert result.quarantined == [] and "video+audio" in result.media and result.layout == "meld"
    assert result.evaluation.metrics == reference.metrics
    np.testing.assert_array_equal(result.evaluation.confusion, reference.confusion)
    # same utterances in the same order, same probabilities
    assert [s.split("/")[-1] for s in result.evaluation.sample_ids] == [s.split("/")[-1] for s in reference.sample_ids]
    expected = torch.softmax(torch.as_tensor(reference.logits), dim=-1).numpy()
    np.testing.assert_allclose(np.exp(result.evaluation.logits), expected, rtol=0, atol=1e-5)
    saved = json.loads(result.metrics_path.read_text())
    assert saved["weighted_f1"] == reference.metrics["weighted_f1"] and saved["split"] == "test_sent_emo"
    assert result.confusion_path.stat().st_size > 1000


def test_cli_quarantines_bad_rows_and_prints_per_class_f1(trained, demo_corpus, tmp_path, capsys):
    lines = (demo_corpus / "meld" / "dev_sent_emo.csv").read_text().splitlines()
    header = lines[0].split(",")
    bad = [""] * len(header)
    bad[header.index("Utterance")], bad[header.index("Speaker")] = "Hello there", "Nobody"
    for column, value in (("Emotion", "bored"), ("Dialogue_ID", "99"), ("Utterance_ID", "0")):
        bad[header.index(column)] = value
    csv_path = tmp_path / "reannotated.csv"
    csv_path.write_text("\n".join(lines + [",".join(bad)]) + "\n")
    # `deepfusion evaluate`, in this process (it joins the session's Ray)
    code, stdout, stderr = run_cli(["evaluate", "--checkpoint", str(trained["lstm"]), "--data", str(csv_path),
                                    "--out", str(tmp_path / "out")], capsys)
    assert code == 0, (stdout + stderr)[-3000:]
    rows = len(lines) - 1
    assert (f"(meld; n={rows}; text-only: {rows}): {rows} predicted, 0 already done, 1 quarantined, see "
            in stdout), stdout
    assert f"labeled n={rows}" in stdout
    assert "weighted F1" in stdout and "per-class F1 anger" in stdout
    assert "note: no sample has audio; the model saw only its other inputs" in stdout  # text-only csv
    quarantine = (tmp_path / "out" / "quarantine.jsonl").read_text()
    assert "reannotated.csv" in quarantine and "unknown label Emotion='bored'" in quarantine
    assert (tmp_path / "out" / "reannotated_confusion.png").is_file()
    metrics = json.loads((tmp_path / "out" / "reannotated_metrics.json").read_text())
    assert metrics["num_samples"] == rows and set(metrics["per_class"]) == set(trained["data"].label_names)


def test_a_model_whose_inputs_the_csv_lacks_is_refused(trained, demo_corpus, tmp_path):
    from deepfusion.workflows.evaluate import evaluate

    with pytest.raises(ConfigError, match="--checkpoint: mimamo needs video"):
        evaluate(trained["mimamo"], demo_corpus / "meld" / "test_sent_emo.csv", tmp_path / "out")
    with pytest.raises(ConfigError, match="--data: .*nothing.csv not found"):
        evaluate(trained["lstm"], tmp_path / "nothing.csv", tmp_path / "out")
    with pytest.raises(ConfigError, match="is not a deepfusion checkpoint"):
        evaluate(tmp_path, demo_corpus / "meld" / "test_sent_emo.csv", tmp_path / "out")


def test_two_checkpoints_of_one_run_evaluate_into_their_own_folders(tmp_path):
    from deepfusion.workflows.evaluate import default_out_dir

    run = tmp_path / "runs" / "lstm"
    best, averaged = default_out_dir(run / "best", "dev.csv"), default_out_dir(run / "averaged", "dev.csv")
    assert best == run / "evaluation" / "best" / "dev" and averaged == run / "evaluation" / "averaged" / "dev"

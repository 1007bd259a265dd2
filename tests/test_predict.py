"""Batch prediction (jobs.predict / workflows.predict) over folders, manifests and images,
and jobs.evaluate on the layouts beyond a MELD csv."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfusion.config import ConfigError, PredictSection, validate_config

# On 2 cores, beside the session's other work: one small decoder and one model actor.
SMALL = validate_config(PredictSection, {"decode": {"num_cpus": 0.25, "concurrency": 1, "batch_size": 4},
                                         "model": {"num_cpus": 0.25, "concurrency": 1, "batch_size": 4},
                                         "rows_per_file": 4})
EMOTION_COLUMNS = ["sample_id", "emotion", "confidence", "prob_anger", "prob_disgust", "prob_fear", "prob_joy",
                   "prob_neutral", "prob_sadness", "prob_surprise", "video_emotion", "audio_text_emotion",
                   "fusion_weight_video", "fusion_weight_audio_text", "has_video", "has_audio", "has_text",
                   "true_label", "source", "input_key"]


@pytest.fixture(scope="module")
def clips(served, tmp_path_factory) -> Path:
    """New clips paired by stem (mp4, its wav when there is one, a transcript), a corrupt
    mp4 and a file of another kind."""
    folder = tmp_path_factory.mktemp("clips")
    for i, clip in enumerate(sorted((served["demo"] / "meld" / "test").glob("*.mp4"))[:6]):
        shutil.copy(clip, folder / f"clip{i}.mp4")
        if clip.with_suffix(".wav").is_file():
            shutil.copy(clip.with_suffix(".wav"), folder / f"clip{i}.wav")
        (folder / f"clip{i}.txt").write_text(f"I can't believe it, number {i}!\n")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00garbage" * 200)
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4\n")
    return folder


@pytest.mark.usefixtures("ray_local")
def test_a_folder_of_clips_is_predicted_quarantined_and_a_rerun_skips_what_is_done(served, clips, tmp_path):
    from deepfusion.inference.emotion import EmotionRecognizer
    from deepfusion.workflows.predict import predict, read_predictions

    fusion, out = served["cfg"].fusion_checkpoint, tmp_path / "out"
    result = predict(fusion, clips, out, cfg=SMALL, write_csv=True)
    assert (result.layout, result.total, result.predicted, result.already_done) == ("folder", 7, 6, 0)
    reasons = {Path(q.source).name: q.reason for q in result.quarantined}
    assert set(reasons) == {"broken.mp4", "notes.pdf"} and "unsupported file type '.pdf'" in reasons["notes.pdf"]
    assert "broken.mp4" in reasons["broken.mp4"]
    assert len((out / "quarantine.jsonl").read_text().splitlines()) == 2
    table = result.table()
    assert list(table.columns) == EMOTION_COLUMNS and list(table["sample_id"]) == [f"clip{i}" for i in range(6)]
    probabilities = table[[c for c in EMOTION_COLUMNS if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert table["has_video"].all() and table["has_text"].all() and table["true_label"].isna().all()
    assert list(table.loc[0, ["fusion_weight_video", "fusion_weight_audio_text"]]) == pytest.approx([0.6, 0.4],
                                                                                                   abs=1e-6)
    assert result.evaluation is None  # no labels, no metrics
    assert pd.read_csv(result.csv_path)["sample_id"].tolist() == table["sample_id"].tolist()
    # each row is what the Python API answers for the same clip
    recognizer = EmotionRecognizer.from_checkpoint(fusion)
    for i in (0, 5):
        wav = clips / f"clip{i}.wav"
        answer = recognizer.predict(video=clips / f"clip{i}.mp4", audio=wav if wav.is_file() else None,
                                    text=f"I can't believe it, number {i}!")
        row = table.iloc[i]
        assert row["emotion"] == answer["emotion"] and row["confidence"] == pytest.approx(answer["confidence"],
                                                                                           abs=1e-5)
        assert row["video_emotion"] == answer["individual_predictions"]["video"]

    files = sorted((out / "predictions").iterdir())
    again = predict(fusion, clips, out, cfg=SMALL)
    assert (again.predicted, again.already_done, len(again.quarantined)) == (0, 6, 2)
    assert sorted((out / "predictions").iterdir()) == files  # nothing rewritten
    shutil.copy(clips / "clip0.mp4", tmp_path / "clip_new.mp4")
    extended = tmp_path / "extended"
    shutil.copytree(clips, extended)
    shutil.copy(clips / "clip1.mp4", extended / "late_arrival.mp4")
    third = predict(fusion, extended, out, cfg=SMALL)
    assert (third.predicted, third.already_done) == (1, 6)
    assert third.table()["sample_id"].tolist() == sorted([f"clip{i}" for i in range(6)] + ["late_arrival"])
    # a changed input is predicted again (its content, not only its id), and replaces the old row
    (extended / "clip2.txt").write_text("Not what it said before.\n")
    fourth = predict(fusion, extended, out, cfg=SMALL)
    assert (fourth.predicted, fourth.already_done) == (1, 6)
    everything = sorted([f"clip{i}" for i in range(6)] + ["late_arrival"])
    assert fourth.table()["sample_id"].tolist() == read_predictions(out)["sample_id"].tolist() == everything
    assert "clip2" not in third.table()["sample_id"].tolist()  # what it was made from has changed
    with pytest.raises(ConfigError, match="holds predictions of another model"):
        predict(served["cfg"].video_checkpoint, clips, out, cfg=SMALL)

    # a backbone alone: its own prediction, no fusion
    alone = predict(served["cfg"].video_checkpoint, clips, tmp_path / "video_only", cfg=SMALL).table()
    assert alone["audio_text_emotion"].isna().all() and alone["fusion_weight_video"].isna().all()
    assert (alone["video_emotion"] == alone["emotion"]).all()


@pytest.mark.usefixtures("ray_local")
def test_a_manifest_evaluates_as_the_meld_csv_it_was_made_from(served, tmp_path):
    """The same utterances as a labeled manifest (JSONL: mp4, transcript, speaker, label)
    and as their MELD csv + media: the same predictions and metrics."""
    from deepfusion.workflows.evaluate import evaluate

    meld = served["demo"] / "meld"
    table = pd.read_csv(meld / "test_sent_emo.csv")
    rows = [{"sample_id": f"dia{r.Dialogue_ID}_utt{r.Utterance_ID}", "video": f"test/dia{r.Dialogue_ID}_utt"
             f"{r.Utterance_ID}.mp4", "text": r.Utterance, "speaker": r.Speaker, "label": r.Emotion.lower()}
            for r in table.itertuples()]
    for row in rows:
        if not (meld / row["video"]).is_file():
            row["video"] = ""
        elif (meld / row["video"]).with_suffix(".wav").is_file():
            row["audio"] = row["video"][:-4] + ".wav"
    manifest = meld / "test_manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        lstm = served["cfg"].audio_text_checkpoint
        generic = evaluate(lstm, manifest, tmp_path / "generic", cfg=SMALL)
        dedicated = evaluate(lstm, meld / "test_sent_emo.csv", tmp_path / "meld", media_dir=meld / "test", cfg=SMALL)
    finally:
        manifest.unlink()
    assert generic.layout == "manifest" and dedicated.layout == "meld"
    assert generic.evaluation.metrics == dedicated.evaluation.metrics
    a, b = generic.table(), dedicated.table()
    assert a["sample_id"].tolist() == [s.split("/")[-1] for s in b["sample_id"]]
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[probs].to_numpy(), b[probs].to_numpy(), atol=1e-5)
    assert json.loads(generic.metrics_path.read_text())["num_samples"] == len(rows)


@pytest.mark.usefixtures("ray_local")
def test_a_textile_checkpoint_predicts_and_evaluates_an_image_folder(served, tmp_path):
    from deepfusion.inference.textile import TextileClassifier
    from deepfusion.workflows.evaluate import evaluate
    from deepfusion.workflows.predict import predict

    textile = served["cfg"].textile_checkpoint
    photos = tmp_path / "photos"
    for folder in sorted(p for p in (served["demo"] / "textile").iterdir() if p.is_dir()):
        (photos / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:3]:
            shutil.copy(image, photos / folder.name / image.name)
    (photos / "clothes_dump" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    (photos / "LICENSE.txt").write_text("beside the class folders: not a sample\n")
    result = evaluate(textile, photos, tmp_path / "eval", cfg=SMALL)
    assert result.layout == "images" and result.predicted == 9 and result.evaluation.metrics["num_samples"] == 9
    assert [Path(q.source).name for q in result.quarantined] == ["truncated.jpg"]
    assert set(result.evaluation.metrics["per_class"]) == {"clothes_dump", "textile_dye", "textile_billboard"}
    table = result.table()
    assert set(table.columns) == {"sample_id", "class", "confidence", "prob_clothes_dump", "prob_textile_dye",
                                  "prob_textile_billboard", "true_label", "source", "input_key"}
    first = table.iloc[0]
    expected = TextileClassifier.from_checkpoint(textile).predict(first["source"])
    assert first["class"] == expected["class"] and first["confidence"] == pytest.approx(expected["confidence"],
                                                                                       abs=1e-5)
    # a flat folder: predictions without labels, no metrics
    flat = predict(textile, photos / "textile_dye", tmp_path / "flat", cfg=SMALL)
    assert flat.predicted == 3 and flat.evaluation is None and flat.table()["true_label"].isna().all()
    with pytest.raises(ConfigError, match="evaluation needs labels"):
        evaluate(textile, photos / "textile_dye", tmp_path / "flat_eval", cfg=SMALL)

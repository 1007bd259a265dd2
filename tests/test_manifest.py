"""The generic manifest layout: one CSV / JSONL / Parquet table of samples."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import preprocess_config, read_shards

from deepfusion.config import ManifestDataset, SpeechDataset, SplitRatios, validate_config
from deepfusion.sources import LayoutError
from deepfusion.sources.manifest import scan_manifest


def manifest_config(path: Path, **kw) -> ManifestDataset:
    return validate_config(ManifestDataset, {"kind": "manifest", "name": "mine", "manifest": str(path), **kw})


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_rows_that_cannot_be_samples_are_quarantined_with_line_and_reason(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.wav").write_bytes(b"RIFF")
    rows = [
        {"sample_id": "a", "audio": "media/a.wav", "text": "hi", "speaker": "s1", "label": "happy", "take": "1"},
        {"sample_id": "b", "audio": "", "text": "no", "speaker": "s2", "label": "angry", "take": ""},
        {"sample_id": "c", "audio": "media/missing.wav", "text": "x", "speaker": "s1", "label": "happy", "take": ""},
        {"sample_id": "d", "audio": "", "text": "", "speaker": "s3", "label": "happy", "take": ""},
        {"sample_id": "e", "audio": "", "text": "meh", "speaker": "s3", "label": "bored", "take": ""},
        {"sample_id": "a", "audio": "", "text": "again", "speaker": "s4", "label": "happy", "take": ""},
        {"sample_id": "f", "audio": "", "text": "oh", "speaker": "s5", "label": "", "take": ""},
    ]
    cfg = manifest_config(write_csv(tmp_path / "corpus.csv", rows), label_map={"happy": "joy", "angry": "anger"})
    records, quarantined, info = scan_manifest(cfg)
    assert [(r["sample_id"], r["emotion"]) for r in records] == [("a", "joy"), ("b", "anger")]
    assert records[0]["audio_path"] == str(tmp_path / "media" / "a.wav")  # relative to the table
    reasons = {q.source.rsplit(":", 1)[1]: q.reason for q in quarantined}
    assert reasons == {
        "4": f"missing file audio='media/missing.wav' (looked for {tmp_path / 'media' / 'missing.wav'})",
        "5": "no input: video, audio and text are all empty",
        "6": "unknown label 'bored': not in label_map (happy -> joy, angry -> anger)",  # never guessed
        "7": "duplicate sample_id 'a'",
        "8": "no label (training data needs one per row)",
    }
    assert info["ignored_columns"] == ["take"]
    # prediction keeps the unlabeled row and draws nothing
    records, _, info = scan_manifest(cfg, require_labels=False)
    assert [r["sample_id"] for r in records] == ["a", "b", "f"] and records[2]["label"] == -1
    assert {r["split"] for r in records} == {"predict"} and info["splits"]["source"] == "none (prediction)"


def test_csv_jsonl_and_parquet_tables_give_the_same_samples(tmp_path):
    rows = [{"sample_id": f"u{i}", "text": f"line {i}", "speaker": "Ann" if i % 2 else "Bob",
             "dialogue_id": "7", "turn": str(i), "label": "joy", "split": "dev"} for i in (2, 0, 1)]
    table = pd.DataFrame(rows)
    write_csv(tmp_path / "t.csv", rows)
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table.to_parquet(tmp_path / "t.parquet")
    scans = [scan_manifest(manifest_config(tmp_path / f"t.{s}", text={"context_turns": 2}))[0]
             for s in ("csv", "jsonl", "parquet")]
    strip = [[{k: v for k, v in r.items() if k != "source"} for r in scan] for scan in scans]
    assert strip[0] == strip[1] == strip[2]
    by_id = {r["sample_id"]: r for r in scans[0]}
    assert {r["split"] for r in scans[0]} == {"val"}  # "dev", as MELD calls it
    # context from the earlier turns of the dialogue, whatever the row order
    assert by_id["u2"]["context"] == "Ann: line 1 | Bob: line 0" and by_id["u0"]["context"] == ""
    with pytest.raises(LayoutError, match="needs a sample_id column"):
        scan_manifest(manifest_config(write_csv(tmp_path / "bad.csv", [{"id": "x", "text": "y"}])))
    with pytest.raises(LayoutError, match="not .txt"):
        scan_manifest(manifest_config(write_csv(tmp_path / "t.txt", rows)))


def test_drawn_splits_are_stratified_speaker_disjoint_seeded_and_recorded(tmp_path):
    rng = np.random.default_rng(0)
    emotions = ["joy", "anger", "neutral", "sadness"]
    rows = [{"sample_id": f"s{i}", "text": f"utterance {i}", "speaker": f"spk{i % 40}",
             "label": emotions[int(rng.integers(4))]} for i in range(800)]
    path = write_csv(tmp_path / "corpus.csv", rows)
    records, _, info = scan_manifest(manifest_config(path, seed=3))
    assert info["splits"] == {"source": "drawn: stratified by label, speaker-disjoint", "seed": 3,
                              "ratios": SplitRatios().model_dump()}
    split_of_speaker: dict[str, set] = {}
    for r in records:
        split_of_speaker.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_speaker.values())  # no voice in two splits
    per_split = Counter(r["split"] for r in records)
    for emotion in emotions:
        total = sum(r["emotion"] == emotion for r in records)
        for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            n = sum(r["emotion"] == emotion and r["split"] == split for r in records)
            assert abs(n / total - share) < 0.08, (emotion, split, n, total)
    assert abs(per_split["test"] / 800 - 0.15) < 0.05
    again, _, _ = scan_manifest(manifest_config(path, seed=3))
    assert [r["split"] for r in again] == [r["split"] for r in records]  # seeded
    # without speakers: stratified by label alone, exact per-label counts
    for row in rows:
        row["speaker"] = ""
    records, _, info = scan_manifest(manifest_config(write_csv(tmp_path / "anon.csv", rows)))
    assert info["splits"]["source"] == "drawn: stratified by label (not every row names a speaker)"
    for emotion in emotions:
        total = sum(r["emotion"] == emotion for r in records)
        assert sum(r["emotion"] == emotion and r["split"] == "test" for r in records) == int(total * 0.15 + 0.5)


@pytest.mark.usefixtures("ray_local")
def test_shared_meld_and_speech_converted_to_manifests_give_the_same_shards(shared_data, tmp_path):
    """The shared MELD transcripts (with dialogue context) and speech clips, converted to
    the manifest layout, preprocess into the same rows, labels and model inputs as their
    dedicated layouts."""
    from deepfusion.preprocess.datasets import preprocess
    from deepfusion.sources.speech import scan_speech

    # MELD: the first dialogues of train and dev
    meld = tmp_path / "meld"
    meld.mkdir()
    manifest_rows = []
    for split, name in (("train", "train_sent_emo.csv"), ("val", "dev_sent_emo.csv")):
        table = pd.read_csv(shared_data / "meld" / name, dtype=str, keep_default_na=False)
        table = table[table["Dialogue_ID"].astype(int) < (12 if split == "train" else 4)]
        table.to_csv(meld / name, index=False)
        manifest_rows += [{"sample_id": f"meld/{split}/dia{r.Dialogue_ID}_utt{r.Utterance_ID}",
                           "text": r.Utterance, "speaker": r.Speaker, "dialogue_id": r.Dialogue_ID,
                           "turn": r.Utterance_ID, "label": r.Emotion, "split": "dev" if split == "val" else split}
                          for r in table.itertuples()]
    meld_manifest = write_csv(tmp_path / "meld_manifest.csv", manifest_rows)
    text = {"tokenizer": "offline", "max_length": 48, "context_turns": 2}

    # speech: 16 speakers' clips, 3 each, from both corpora
    speech_root = shared_data / "speech"
    table = pd.read_csv(speech_root / "MANIFEST.csv", dtype=str, keep_default_na=False)
    table = table[table["speaker"].isin(sorted(set(table["speaker"]))[:16])].groupby("speaker").head(3)
    table = table.assign(path=[str(speech_root / p) for p in table["path"]])
    (tmp_path / "speech").mkdir()
    table.to_csv(tmp_path / "speech" / "MANIFEST.csv", index=False)
    speech = {"kind": "speech", "name": "speech", "root": str(tmp_path / "speech"),
              "audio": {"sample_rate": 16000, "max_seconds": 2.0}, "text": {"max_length": 32}}
    speech_cfg = validate_config(SpeechDataset, speech)
    split_of = {r["sample_id"]: r["split"] for r in scan_speech(speech_cfg)[0]}
    speech_rows = [{"sample_id": f"speech/{r.path}", "audio": r.path, "text": r.text, "speaker": r.speaker,
                    "gender": r.gender, "label": r.label, "split": split_of[f"speech/{r.path}"]}
                   for r in table.itertuples()]
    speech_manifest = tmp_path / "speech_manifest.jsonl"
    speech_manifest.write_text("".join(json.dumps(r) + "\n" for r in speech_rows))

    out = tmp_path / "shards"
    preprocess(preprocess_config(
        out,
        {"kind": "meld", "name": "meld", "root": str(meld), "csv_files": {"train": "train_sent_emo.csv",
                                                                          "val": "dev_sent_emo.csv"},
         "media_dirs": None, "text": text},
        {"kind": "manifest", "name": "meld_as_manifest", "manifest": str(meld_manifest), "text": text},
        speech,
        {"kind": "manifest", "name": "speech_as_manifest", "manifest": str(speech_manifest),
         "label_map": dict(speech_cfg.label_map),
         "audio": speech["audio"], "text": speech["text"]},
    ))
    compared = ("sample_id", "split", "label", "emotion", "text", "input_ids", "speaker", "speaker_id", "gender",
                "audio", "audio_num_samples", "has_video", "has_audio", "has_text")
    for dedicated, generic, splits in (("meld", "meld_as_manifest", ("train", "val")),
                                       ("speech", "speech_as_manifest", ("train", "val", "test"))):
        first = json.loads((out / dedicated / "manifest.json").read_text())
        second = json.loads((out / generic / "manifest.json").read_text())
        assert first["counts"] == second["counts"] and first["speakers"] == second["speakers"]
        assert second["splits"] == {"source": "the split column"}
        for split in splits:
            a = sorted(read_shards(out / dedicated, split), key=lambda r: r["sample_id"])
            b = sorted(read_shards(out / generic, split), key=lambda r: r["sample_id"])
            assert len(a) == len(b) > 0, (dedicated, split)
            for x, y in zip(a, b):
                for column in compared:
                    assert np.array_equal(np.asarray(x[column]), np.asarray(y[column])), (dedicated, column,
                                                                                          x["sample_id"])

    # jobs.evaluate reads the speech layout too: an LSTM of these shards on the speech
    # folder gives, for each test clip, what batch evaluation of the test split gives
    from helpers import save_backbone

    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.config import DataResources
    from deepfusion.config.architectures import MultimodalLSTMConfig
    from deepfusion.evaluation.predict import evaluate_split
    from deepfusion.workflows.evaluate import evaluate

    data = ShardDataset.open(out / "speech")
    lstm = save_backbone(tmp_path / "lstm", data, MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 0)
    result = evaluate(lstm, tmp_path / "speech", tmp_path / "eval")
    assert result.layout == "speech" and result.evaluation.metrics["num_samples"] == len(table)
    reference = evaluate_split(lstm, data, "test", DataResources())
    predicted = result.table().set_index("sample_id")
    names = data.label_names
    for sample_id, logits in zip(reference.sample_ids, reference.logits):
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(predicted.loc[sample_id, [f"prob_{n}" for n in names]].to_numpy(dtype=float),
                                   expected, atol=1e-5)

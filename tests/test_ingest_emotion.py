"""MELD-layout and speech ingestion on real Ray: schema, masks, quarantine, real data."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import meld_dataset, preprocess_config, read_shards

from deepfusion.artifacts.shards import EMOTION_SCHEMA, frames_from_bytes
from deepfusion.labels import EMOTIONS
from deepfusion.media.audio import load_audio
from deepfusion.media.video import decode_video
from deepfusion.preprocess.datasets import preprocess
from deepfusion.sources import LayoutError

pytestmark = pytest.mark.usefixtures("ray_local")


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def all_rows(out_dir: Path) -> list[dict]:
    return [r for split in ("train", "val", "test") for r in read_shards(out_dir, split)]


def test_demo_meld_schema_counts_and_modality_masks(demo_corpus, demo_shards):
    """The session's demo shards (``meld_dataset`` of the demo corpus), read back."""
    root = demo_corpus / "meld"
    result = demo_shards["results"]["meld"]
    assert not result.skipped
    rows = {r["sample_id"]: r for r in all_rows(result.out_dir)}
    shard = next((result.out_dir / "split=train").glob("*.parquet"))
    assert pq.read_schema(shard).remove_metadata().equals(
        EMOTION_SCHEMA.remove(EMOTION_SCHEMA.get_field_index("split")))
    assert result.manifest["quarantined"] == 0
    for split, csv_name, folder in (("train", "train_sent_emo.csv", "train"),
                                    ("val", "dev_sent_emo.csv", "dev"), ("test", "test_sent_emo.csv", "test")):
        source = csv_rows(root / csv_name)
        assert result.manifest["totals"][split] == len(source)
        assert result.manifest["counts"][split] == dict(sorted(Counter(r["Emotion"] for r in source).items()))
        for src in source:
            stem = root / folder / f"dia{src['Dialogue_ID']}_utt{src['Utterance_ID']}"
            row = rows[f"meld/{split}/{stem.name}"]
            assert row["emotion"] == src["Emotion"] and row["label"] == EMOTIONS.index(src["Emotion"])
            assert row["text"] == src["Utterance"] and row["has_text"]
            assert row["has_video"] == stem.with_suffix(".mp4").is_file()
            assert row["has_audio"] == stem.with_suffix(".mp4").is_file()  # wav, else the mp4's track
            assert (row["video_frames"] is None) == (not row["has_video"])
            assert (row["audio"] is None) == (not row["has_audio"])
    masks = Counter((r["has_video"], r["has_audio"]) for r in rows.values())
    assert masks[(False, False)] > 0, "text-only rows are kept, not dropped"
    assert masks[(True, True)] > 0


def test_decoded_media_equal_the_shared_decoders(demo_corpus, demo_shards):
    """What lands in a shard is exactly what the shared decoders (used by Serve) produce."""
    root = demo_corpus / "meld"
    result = demo_shards["results"]["meld"]
    rows = [r for r in all_rows(result.out_dir) if r["has_video"]]
    with_wav = next(r for r in rows if r["split"] == "train"
                    and (root / "train" / (r["sample_id"].split("/")[-1] + ".wav")).is_file())
    mp4_only = next(r for r in rows if r["split"] == "train"
                    and not (root / "train" / (r["sample_id"].split("/")[-1] + ".wav")).is_file())
    for row, audio_suffix in ((with_wav, ".wav"), (mp4_only, ".mp4")):
        stem = root / "train" / row["sample_id"].split("/")[-1]
        frames = frames_from_bytes(row["video_frames"], row["num_frames"], row["frame_size"])
        assert np.array_equal(frames, decode_video(stem.with_suffix(".mp4"), 8, 32))
        samples, length = load_audio(stem.with_suffix(audio_suffix), 16000, 3.0)
        assert np.array_equal(np.asarray(row["audio"], np.float32), samples)
        assert row["audio_num_samples"] == length and row["sample_rate"] == 16000
        assert row["input_ids"][0] == 101 and row["input_ids"][-1] == 102
    speakers = result.manifest["speakers"]
    assert all(r["speaker_id"] == speakers.get(r["speaker"], 0) for r in rows)


def plant_bad_meld(root: Path) -> dict[str, str]:
    """Damage a copy of the corpus; returns {source: expected reason fragment}."""
    train = csv_rows(root / "train_sent_emo.csv")
    media = [r for r in train if (root / "train" / f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4").is_file()]
    truncated = root / "train" / f"dia{media[0]['Dialogue_ID']}_utt{media[0]['Utterance_ID']}.mp4"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    wav_row = next(r for r in media[1:]
                   if (root / "train" / f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.wav").is_file())
    corrupt_wav = root / "train" / f"dia{wav_row['Dialogue_ID']}_utt{wav_row['Utterance_ID']}.wav"
    corrupt_wav.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    with open(root / "train_sent_emo.csv", "a", encoding="utf-8", newline="") as handle:
        handle.write('999,"Extra, fields",Avery,joy,positive,90,0,1,1,x,y,UNEXPECTED\n')
        handle.write('1000,"Who knows",Avery,happiness,positive,91,0,1,1,x,y\n')
        handle.write('1001,"Bad id",Avery,joy,positive,ninety,0,1,1,x,y\n')
    csv_path = str(root / "train_sent_emo.csv")
    n = len(train) + 1  # header line
    return {
        str(truncated): "OpenCV cannot open",
        str(corrupt_wav): "corrupt or unsupported audio",
        f"{csv_path}:{n + 1}": "malformed row: 12 fields",
        f"{csv_path}:{n + 2}": "unknown label Emotion='happiness'",
        f"{csv_path}:{n + 3}": "Dialogue_ID='ninety'",
    }


def test_planted_bad_inputs_are_quarantined_and_counted(corpus_copy, tmp_path):
    root = corpus_copy / "meld"
    expected = plant_bad_meld(root)
    n_train = len(csv_rows(root / "train_sent_emo.csv")) - 3  # the three appended rows are bad
    [result] = preprocess(preprocess_config(tmp_path / "s", meld_dataset(root)))
    quarantine = [json.loads(line) for line in (result.out_dir / "quarantine.jsonl").open()]
    by_source = {q["source"]: q["reason"] for q in quarantine}
    # media errors are reported against the csv row whose media failed; the reason names the file
    media_reasons = [q["reason"] for q in quarantine if q["stage"] == "decode"]
    for source, fragment in expected.items():
        if source.endswith((".mp4", ".wav")):
            assert any(source in r and fragment in r for r in media_reasons), (source, media_reasons)
        else:
            assert fragment in by_source[source], (source, by_source.get(source))
    assert result.manifest["quarantined"] == 5
    assert result.manifest["quarantined_by_stage"] == {"scan": 3, "decode": 2}
    assert result.manifest["totals"]["train"] == n_train - 2


def test_missing_media_folder_fails_fast_naming_it(corpus_copy, tmp_path):
    root = corpus_copy / "meld"
    (root / "dev").rename(root / "dev_elsewhere")
    with pytest.raises(LayoutError, match=f"{root / 'dev'}"):
        preprocess(preprocess_config(tmp_path / "s", meld_dataset(root)))


def test_missing_column_fails_fast_naming_file_and_column(corpus_copy, tmp_path):
    root = corpus_copy / "meld"
    path = root / "test_sent_emo.csv"
    path.write_text(path.read_text().replace("Emotion", "Feeling", 1))
    with pytest.raises(LayoutError, match=r"test_sent_emo.csv: missing column\(s\) \['Emotion'\]"):
        preprocess(preprocess_config(tmp_path / "s", meld_dataset(root)))


def test_real_meld_transcripts_text_only(shared_data, tmp_path):
    """The real MELD annotations: every row becomes a text-only sample; Sentiment is not carried."""
    ds = meld_dataset(shared_data / "meld", name="meld_text", media_dirs=None,
                      csv_files={"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv"})
    [result] = preprocess(preprocess_config(tmp_path / "s", ds, batch_size=256, rows_per_shard=4096))
    assert result.manifest["totals"] == {"train": 9989, "val": 1109, "test": 0}
    assert result.manifest["quarantined"] == 0
    assert result.manifest["counts"]["train"]["neutral"] == 4710
    assert result.manifest["counts"]["val"]["disgust"] == 22
    table = pq.read_table(result.out_dir / "split=val", columns=["has_video", "has_audio", "has_text"])
    assert not any(table["has_video"].to_pylist()) and not any(table["has_audio"].to_pylist())
    assert "sentiment" not in {c.lower() for c in result.manifest["columns"]}


def test_real_speech_speaker_disjoint_and_mapped(shared_data, tmp_path):
    ds = {"kind": "speech", "name": "speech", "root": str(shared_data / "speech"),
          "audio": {"sample_rate": 16000, "max_seconds": 2.0}, "text": {"max_length": 16}}
    [result] = preprocess(preprocess_config(tmp_path / "s", ds, batch_size=16))
    rows = all_rows(result.out_dir)
    assert len(rows) == 236 and result.manifest["quarantined"] == 0
    speakers_by_split = {s: {r["speaker"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert not speakers_by_split["train"] & speakers_by_split["test"]
    assert not speakers_by_split["train"] & speakers_by_split["val"]
    assert not speakers_by_split["val"] & speakers_by_split["test"]
    emotions = Counter(r["emotion"] for r in rows)
    assert emotions["neutral"] == 32 + 12  # calm is folded into neutral
    assert set(emotions) == set(EMOTIONS)
    assert all(r["has_audio"] and not r["has_video"] and len(r["audio"]) <= 32000 for r in rows)
    assert {r["gender"] for r in rows} == {"male", "female"}
    assert result.manifest["media_by_sample"] == {"audio": 236}


def test_dialogue_context_is_the_previous_turns_and_serving_builds_the_same_ids(demo_corpus, tmp_path):
    """text.context_turns: 2 puts "speaker: text" of the two previous utterances (most
    recent first) in the second segment; the csv's row order does not matter; a request
    that sends the same dialogue so far gets the very same token ids. text.speaker_names
    writes the utterance itself as "speaker: text" too, in the shards and in requests."""
    from deepfusion.inference.emotion import EmotionDecoder, EmotionRequest
    from deepfusion.media.text import load_tokenizer

    root = tmp_path / "meld"
    shutil.copytree(demo_corpus / "meld", root)
    rows = csv_rows(root / "train_sent_emo.csv")
    with open(root / "train_sent_emo.csv", "w", newline="", encoding="utf-8") as handle:  # reversed row order
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(reversed(rows))
    text = {"tokenizer": "offline", "max_length": 64, "context_turns": 2}
    result, named = preprocess(preprocess_config(
        tmp_path / "out", meld_dataset(root, name="ctx", text=text),
        meld_dataset(root, name="named", media_dirs=None, text=text | {"speaker_names": True})))
    shard = {(r["dialogue_id"], r["utterance_id"]): r for r in read_shards(result.out_dir, "train")}
    by_dialogue = {}
    for row in rows:
        by_dialogue.setdefault(int(row["Dialogue_ID"]), []).append(row)
    dialogue = next(turns for turns in by_dialogue.values() if len(turns) >= 4)
    dialogue.sort(key=lambda r: int(r["Utterance_ID"]))
    tokenizer = load_tokenizer("offline")
    tokenizer.no_truncation()  # the demo's utterances are far below 64 tokens
    first = shard[int(dialogue[0]["Dialogue_ID"]), int(dialogue[0]["Utterance_ID"])]
    assert list(first["input_ids"]) == tokenizer.encode(dialogue[0]["Utterance"], "").ids  # nothing before it
    fourth = shard[int(dialogue[3]["Dialogue_ID"]), int(dialogue[3]["Utterance_ID"])]
    # the two turns before it, most recent first; the dialogue's first turn is not in it
    context = " | ".join(f"{turn['Speaker']}: {turn['Utterance']}" for turn in (dialogue[2], dialogue[1]))
    expected = tokenizer.encode(dialogue[3]["Utterance"], context).ids
    assert len(expected) < 64 and list(fourth["input_ids"]) == expected
    decoder = EmotionDecoder({"preprocess_config": result.manifest["preprocess_config"], "speakers": {}})
    served = decoder.row(EmotionRequest(text=dialogue[3]["Utterance"], context=tuple(
        (r["Speaker"], r["Utterance"]) for r in dialogue[:3])))
    assert list(served["input_ids"]) == list(fourth["input_ids"])

    named_shard = {(r["dialogue_id"], r["utterance_id"]): r for r in read_shards(named.out_dir, "train")}
    named_ids = tokenizer.encode(f"{dialogue[3]['Speaker']}: {dialogue[3]['Utterance']}", context).ids
    assert list(named_shard[int(dialogue[3]["Dialogue_ID"]), int(dialogue[3]["Utterance_ID"])]["input_ids"]) \
        == named_ids != expected
    named_decoder = EmotionDecoder({"preprocess_config": named.manifest["preprocess_config"], "speakers": {}})
    request = EmotionRequest(text=dialogue[3]["Utterance"], speaker=dialogue[3]["Speaker"],
                             context=tuple((r["Speaker"], r["Utterance"]) for r in dialogue[:3]))
    assert list(named_decoder.row(request)["input_ids"]) == named_ids
    # a request without a speaker: the utterance as it is, and the context still named
    anonymous = EmotionRequest(text=request.text, context=request.context)
    assert list(named_decoder.row(anonymous)["input_ids"]) == expected

"""A corpus of the user's own, with its own label words and class count (4 classes, as
IEMOCAP is usually set up; 6, CREMA-D's), through preprocessing, both backbones, the fusion
sweep, evaluation, batch prediction and Serve: every output names exactly its classes, in
the declared order. Then any trained subset served alone (a speech-only model answering
WAV and MP3, a video-only one an FLV clip with sound), checked against batch prediction.

The backbones here are untrained checkpoints of the corpus's shape (``save_backbone``):
what is under test is that classes flow from the data to every output; training on a
user's corpus is the tutorial's test (tests/test_tutorial.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import requests
import soundfile
from helpers import browser_page, deploy, manifest_from_meld, open_demo_page, preprocess_config, save_backbone

from deepfusion.artifacts.checkpoint import read_card
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.config import ConfigError, FusionConfig, PredictSection, validate_config
from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig
from deepfusion.config.serving import ServeSection

pytestmark = pytest.mark.usefixtures("ray_local")

# MELD emotion of the demo corpus -> the corpus's own label word; config: its label map / classes
CORPORA = {
    # IEMOCAP's usual four, surprise merged into happy; disgust and fear left out of the table
    "four": {"words": {"anger": "ang", "joy": "hap", "surprise": "hap", "neutral": "neu", "sadness": "sad"},
             "dataset": {"label_map": {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}},
             "classes": ["angry", "happy", "neutral", "sad"]},
    # CREMA-D's six codes, declared in an order of the user's choosing; "SUR" is no class of it
    "six": {"words": {"anger": "ANG", "disgust": "DIS", "fear": "FEA", "joy": "HAP", "neutral": "NEU",
                      "sadness": "SAD", "surprise": "SUR"},
            "dataset": {"classes": ["NEU", "HAP", "SAD", "ANG", "FEA", "DIS"],
                        "label_map": {w: w for w in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")}},
            "classes": ["NEU", "HAP", "SAD", "ANG", "FEA", "DIS"]},
}
SMALL = validate_config(PredictSection, {"decode": {"num_cpus": 0.25, "concurrency": 1, "batch_size": 8},
                                         "model": {"num_cpus": 0.25, "concurrency": 1, "batch_size": 8},
                                         "rows_per_file": 16})
SMALL_MODEL = {"preset": "cpu-small", "hidden_dim": 64, "temporal_layers": 1}


@pytest.fixture(scope="module")
def corpora(demo_corpus, tmp_path_factory) -> dict:
    """Both corpora as manifest tables beside the demo clips, preprocessed in one run."""
    from deepfusion.preprocess.datasets import preprocess

    root = tmp_path_factory.mktemp("own_corpora")
    datasets = []
    for name, spec in CORPORA.items():
        table = manifest_from_meld(demo_corpus / "meld", root / name / "corpus.csv", spec["words"])
        datasets.append({"kind": "manifest", "name": name, "manifest": str(table), **spec["dataset"],
                         "video": {"num_frames": 8, "frame_size": 48}, "audio": {"max_seconds": 2.0},
                         "text": {"max_length": 32}})
    results = {r.name: r for r in preprocess(preprocess_config(root / "shards", *datasets))}
    return {name: {"table": root / name / "corpus.csv", "data": ShardDataset.open(results[name].out_dir),
                   "result": results[name], "root": root / name} for name in CORPORA}


@pytest.fixture(scope="module")
def fused(corpora) -> dict:
    """Per corpus: both backbones (untrained, of the corpus's classes) and a 2-trial
    Enhanced Late Fusion sweep over them, exported to ``<corpus>/fusion/best``."""
    from deepfusion.fusion.tune import tune_fusion

    out = {}
    for name, corpus in corpora.items():
        root, data = corpus["root"], corpus["data"]
        video = save_backbone(root / "mimamo", data, MimamoConfig(kind="mimamo", **SMALL_MODEL), 0)
        audio_text = save_backbone(root / "lstm", data, MultimodalLSTMConfig(kind="multimodal_lstm",
                                                                             preset="cpu-small"), 1)
        cfg = validate_config(FusionConfig, {
            "data": str(data.path), "video_checkpoint": str(video), "audio_text_checkpoint": str(audio_text),
            "cache_dir": str(root / "cache"), "inference": {"num_cpus": 0.5, "concurrency": 1, "batch_size": 16},
            "training": {"max_epochs": 3}, "late_fusion": {"max_epochs": 3},
            "search": {"num_samples": 2, "storage_path": str(root / "tune"), "name": "sweep", "verbose": 0},
            "export_dir": str(root / "fusion" / "best")})
        out[name] = {"video": video, "audio_text": audio_text, "outcome": tune_fusion(cfg), "export": cfg.export_dir}
    return out


@pytest.mark.parametrize("name", list(CORPORA))
def test_every_output_names_exactly_the_corpus_classes_in_their_order(name, corpora, fused, serve_port):
    from deepfusion.serving.app import build_app
    from deepfusion.workflows.evaluate import evaluate
    from deepfusion.workflows.predict import predict

    classes, corpus, models = CORPORA[name]["classes"], corpora[name], fused[name]
    # the shards and both backbones: the declared classes, heads of their number
    assert corpus["data"].label_names == classes and list(corpus["result"].manifest["label_map"]) == classes
    for role in ("video", "audio_text"):
        card = read_card(models[role])
        assert card.label_names == classes and card.model_config.num_classes == len(classes)
    if name == "six":  # a label word that is no class is quarantined, the map named
        quarantine = (corpus["data"].path / "quarantine.jsonl").read_text()
        assert "unknown label 'SUR': not in label_map (ANG -> ANG, DIS -> DIS" in quarantine
    # the logit cache and the fusion checkpoint
    outcome = models["outcome"]
    assert outcome.cache.label_names == classes and read_card(models["export"]).label_names == classes
    # evaluation: the table's own words mapped by the card's label map, one row per class
    evaluation = evaluate(models["export"], corpus["table"], cfg=SMALL)
    assert evaluation.out_dir == models["export"].parent / "evaluation" / "best" / "corpus"
    assert evaluation.evaluation.label_names == classes
    assert list(evaluation.evaluation.metrics["per_class"]) == classes
    assert evaluation.evaluation.metrics["num_samples"] == evaluation.total  # every label mapped
    # batch prediction: a probability column per class, in order, summing to 1
    table = predict(models["export"], corpus["table"], corpus["root"] / "predicted", cfg=SMALL).table()
    probabilities = [c for c in table.columns if c.startswith("prob_")]
    assert probabilities == [f"prob_{c}" for c in classes]
    np.testing.assert_allclose(table[probabilities].sum(axis=1), 1.0, atol=1e-5)
    assert set(table["emotion"]) <= set(classes) and set(table["true_label"]) <= set(classes)
    # Serve, from the fusion checkpoint alone (its backbones are the ones its card names)
    url = deploy(build_app(validate_config(ServeSection, {"fusion_checkpoint": str(models["export"])})),
                 f"own_{name}", serve_port)
    try:
        listed = requests.get(f"{url}/v1/models", timeout=30).json()
        assert set(listed) == {"video", "audio_text", "fusion"}
        assert all(card["labels"] == classes for card in listed.values())
        sample = pd.read_csv(corpus["table"], keep_default_na=False).query("video != ''").iloc[0]
        clip = corpus["table"].parent / sample["video"]
        answer = requests.post(f"{url}/v1/emotion", files={"video": (clip.name, clip.read_bytes(), "video/mp4")},
                               data={"text": sample["text"]}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert list(body["probabilities"]) == classes and body["emotion"] in classes
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        schema = requests.get(f"{url}/openapi.json", timeout=30).json()["components"]["schemas"]["EmotionAnswer"]
        assert schema["properties"]["emotion"]["enum"] == classes
        assert schema["properties"]["probabilities"]["required"] == classes
    finally:
        from ray import serve

        serve.delete(f"own_{name}")


def test_mixing_checkpoints_of_other_classes_is_refused_naming_both_lists(corpora, fused, tmp_path):
    from deepfusion.artifacts.averaging import average_checkpoints
    from deepfusion.fusion.logit_cache import open_or_build

    four, six = fused["four"], fused["six"]
    cfg = validate_config(FusionConfig, {
        "data": str(corpora["four"]["data"].path), "video_checkpoint": str(four["video"]),
        "audio_text_checkpoint": str(six["audio_text"]), "cache_dir": str(tmp_path / "cache"),
        "export_dir": str(tmp_path / "export")})
    with pytest.raises(ConfigError, match=r"labels \['NEU', 'HAP'.*differ from .*\['angry', 'happy'"):
        open_or_build(cfg)
    assert not (tmp_path / "cache").exists()  # refused before any work
    with pytest.raises(ConfigError, match=r"label set .*\['NEU', 'HAP'.*\['angry', 'happy'"):
        average_checkpoints([four["audio_text"], six["audio_text"]], tmp_path / "averaged")


def write_mp3(wav: Path, out: Path) -> Path:
    """``wav`` re-encoded as MP3 (PyAV's libmp3lame), as corpora that ship MP3 have it."""
    samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    with av.open(str(out), "w", format="mp3") as container:
        stream = container.add_stream("mp3", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.mean(axis=1)[None], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out


def write_flv(mp4: Path, out: Path) -> Path:
    """``mp4``'s frames and sound as an FLV (Sorenson video, MP3 audio), as older corpora ship clips."""
    with av.open(str(mp4)) as source, av.open(str(out), "w", format="flv") as container:
        video_in = source.streams.video[0]
        video = container.add_stream("flv", rate=int(video_in.average_rate or 8))
        video.width, video.height, video.pix_fmt = video_in.width, video_in.height, "yuv420p"
        audio = container.add_stream("mp3", rate=22050, layout="mono")
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=22050)
        for frame in source.decode(video=0):
            for packet in video.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        source.seek(0)
        for frame in source.decode(audio=0):
            for resampled in resampler.resample(frame):
                for packet in audio.encode(resampled):
                    container.mux(packet)
        for packet in [*video.encode(None), *audio.encode(None)]:
            container.mux(packet)
    return out


@pytest.fixture(scope="module")
def clips(corpora, tmp_path_factory) -> dict:
    """Test clips of the 4-class corpus in the containers corpora ship: a WAV, the same as
    MP3, a clip as FLV with its sound."""
    folder = tmp_path_factory.mktemp("containers")
    rows = pd.read_csv(corpora["four"]["table"], keep_default_na=False)
    base = corpora["four"]["table"].parent
    wav = base / rows.query("audio != ''").iloc[0]["audio"]
    mp4 = base / rows.query("video != ''").iloc[0]["video"]
    shutil.copy(wav, folder / "speech.wav")
    return {"wav": folder / "speech.wav", "mp3": write_mp3(wav, folder / "speech_mp3.mp3"),
            "flv": write_flv(mp4, folder / "clip.flv")}


def test_one_backbone_alone_is_served_and_answers_every_container_it_reads(corpora, clips, serve_port, tmp_path):
    """A speech-only model (audio, no text) answers a WAV and an MP3, as batch prediction
    does; a video-only one an FLV with sound; a request without what the model reads is a
    422 naming it, and a backbone given the other's role is refused before deployment."""
    from ray import serve

    from deepfusion.serving.app import build_app
    from deepfusion.workflows.predict import predict

    classes, data = CORPORA["four"]["classes"], corpora["four"]["data"]
    speech = save_backbone(tmp_path / "speech", data, MultimodalLSTMConfig(
        kind="multimodal_lstm", preset="cpu-small", use_text=False), 3)
    video_only = save_backbone(tmp_path / "video", data, MimamoConfig(kind="mimamo", use_text=False, **SMALL_MODEL), 4)
    with pytest.raises(ConfigError, match="reads audio: serve it as serve.audio_text_checkpoint"):
        build_app(validate_config(ServeSection, {"video_checkpoint": str(speech)}))

    url = deploy(build_app(validate_config(ServeSection, {"audio_text_checkpoint": str(speech)})), "speech", serve_port)
    try:
        assert set(requests.get(f"{url}/v1/models", timeout=30).json()) == {"audio_text"}
        answers = {}
        for kind, declared in (("wav", "audio/wav"), ("mp3", "audio/mpeg")):
            response = requests.post(f"{url}/v1/emotion", timeout=60,
                                     files={"audio": (clips[kind].name, clips[kind].read_bytes(), declared)})
            assert response.status_code == 200, response.text
            answers[kind] = response.json()
            assert list(answers[kind]["probabilities"]) == classes and answers[kind]["fusion_weights"] is None
            assert answers[kind]["individual_predictions"] == {"video": None, "audio_text": answers[kind]["emotion"]}
        # bytes, not the declared type, say what a file is: an MP3 sent as octet-stream is read
        untyped = requests.post(f"{url}/v1/emotion", timeout=60, files={
            "audio": ("x", clips["mp3"].read_bytes(), "application/octet-stream")})
        assert untyped.json()["probabilities"] == pytest.approx(answers["mp3"]["probabilities"], abs=1e-6)
        refused = requests.post(f"{url}/v1/emotion", data={"text": "hello there"}, timeout=30)
        assert refused.status_code == 422 and refused.json()["detail"]["field"] == "audio"
        assert "the served model reads audio" in refused.json()["detail"]["error"]
        paths = requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
        assert "Not served here" in paths["/v1/textile"]["post"]["summary"]
        assert paths["/v1/emotion"]["post"]["summary"] == "Recognise with audio_text: multimodal_lstm (reads audio)"
        # the demo page offers what the model reads and shows its classes
        with browser_page() as page:
            open_demo_page(page, url)
            assert page.is_hidden("#text-field") and page.is_visible("#audio-field")
            assert page.inner_text("#emotion-reads").startswith("Classes: angry, happy, neutral, sad.")
            assert page.is_disabled("#textile-submit")
            page.set_input_files("#audio", str(clips["mp3"]))
            page.click("#emotion-submit")
            page.wait_for_function("!document.getElementById('emotion-result').hidden || "
                                   "!document.getElementById('emotion-error').hidden")
            assert page.is_hidden("#emotion-error"), page.inner_text("#emotion-error")
            bars = page.eval_on_selector_all("#result-bars .value", "cells => cells.map(c => c.dataset.label)")
            assert sorted(bars) == sorted(classes) and page.is_hidden("#row-video")
            assert page.inner_text("#individual-audio_text") == page.inner_text("#result-emotion")
        assert requests.post(f"{url}/v1/textile", files={"image": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")},
                             timeout=30).status_code == 404
    finally:
        serve.delete("speech")
    # batch prediction over the same files answers the same
    predicted = predict(speech, clips["wav"].parent, tmp_path / "batch", cfg=SMALL).table().set_index("sample_id")
    for kind, stem in (("wav", "speech"), ("mp3", "speech_mp3")):
        row = predicted.loc[stem]
        assert [row[f"prob_{c}"] for c in classes] == pytest.approx(
            [answers[kind]["probabilities"][c] for c in classes], abs=1e-5)

    url = deploy(build_app(validate_config(ServeSection, {"video_checkpoint": str(video_only)})), "video", serve_port)
    try:
        response = requests.post(f"{url}/v1/emotion", timeout=60,
                                 files={"video": ("clip.flv", clips["flv"].read_bytes(), "video/x-flv")})
        assert response.status_code == 200, response.text
        assert list(response.json()["probabilities"]) == classes
        assert response.json()["modalities"] == {"video": True, "audio": True, "text": False}  # its sound track
        refused = requests.post(f"{url}/v1/emotion", timeout=30,
                                files={"audio": ("a.wav", clips["wav"].read_bytes(), "audio/wav")})
        assert refused.status_code == 422 and refused.json()["detail"]["field"] == "video"
    finally:
        serve.delete("video")


def test_evaluation_reads_labels_with_the_cards_map_or_the_one_given(corpora, fused, tmp_path):
    """The same rows labelled with other words: quarantined by the card's map (named in the
    reason), evaluated with ``--label-map``'s; the class names themselves are accepted."""
    from deepfusion.workflows.evaluate import evaluate

    table = pd.read_csv(corpora["four"]["table"], keep_default_na=False)
    words = {"ang": "Anger", "hap": "Happiness", "neu": "Neutral", "sad": "Sadness"}
    other = tmp_path / "other_words.csv"
    table.assign(label=table["label"].map(words),
                 video=[str(corpora["four"]["table"].parent / v) if v else "" for v in table["video"]],
                 audio=[str(corpora["four"]["table"].parent / a) if a else "" for a in table["audio"]]).to_csv(
        other, index=False)
    export = fused["four"]["export"]
    with pytest.raises(ConfigError, match="evaluation needs labels that map onto the model's classes"):
        evaluate(export, other, tmp_path / "card_map", cfg=SMALL)
    reasons = (tmp_path / "card_map" / "quarantine.jsonl").read_text()
    assert "unknown label 'Anger': not in the label map of the checkpoint's card (ang -> angry" in reasons
    mapped = evaluate(export, other, tmp_path / "given_map", cfg=SMALL, label_map_origin="--label-map",
                      label_map={"Anger": "angry", "Happiness": "happy", "Neutral": "neutral", "Sadness": "sad"})
    assert mapped.evaluation.metrics["num_samples"] == len(table) and not mapped.quarantined
    with pytest.raises(ConfigError, match=r"--label-map: maps onto \['joy'\], which are not the model's classes"):
        evaluate(export, other, tmp_path / "bad_map", cfg=SMALL, label_map={"Happiness": "joy"})


def test_a_users_photo_classes_train_predict_and_serve_as_the_textile_three_do(demo_corpus, serve_port, tmp_path):
    """An image folder of the user's own classes (four folder names, none the textile ones)
    becomes shards, a classifier, predictions and a served route of exactly those classes."""
    from ray import serve

    from deepfusion.config.architectures import TextileNetConfig
    from deepfusion.preprocess.datasets import preprocess
    from deepfusion.serving.app import build_app
    from deepfusion.workflows.predict import predict

    photos = tmp_path / "photos"
    sources = sorted((demo_corpus / "textile").rglob("*.jpg"))
    classes = ["alley", "canal", "market", "rooftop"]  # no classes declared: the folders, by name
    for i, image in enumerate(sources[:4 * 12]):
        (photos / classes[i % 4]).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, photos / classes[i % 4] / image.name)
    [result] = preprocess(preprocess_config(tmp_path / "shards", {
        "kind": "image_folder", "name": "places", "root": str(photos), "target_per_class": 10, "image_size": 32}))
    data = ShardDataset.open(result.out_dir)
    assert data.label_names == classes
    model = save_backbone(tmp_path / "places", data, TextileNetConfig(kind="textile", preset="cpu-small"), 5)
    assert read_card(model).model_config.num_classes == 4
    table = predict(model, photos, tmp_path / "predicted", cfg=SMALL).table()
    assert [c for c in table.columns if c.startswith("prob_")] == [f"prob_{c}" for c in classes]
    assert set(table["true_label"]) == set(classes)
    url = deploy(build_app(validate_config(ServeSection, {"textile_checkpoint": str(model)})), "places", serve_port)
    try:
        image = next(photos.rglob("*.jpg"))
        answer = requests.post(f"{url}/v1/textile", timeout=60,
                               files={"image": (image.name, image.read_bytes(), "image/jpeg")}).json()
        assert list(answer["probabilities"]) == classes and answer["class"] in classes
        assert requests.post(f"{url}/v1/emotion", data={"text": "hi"}, timeout=30).status_code == 404
        schema = requests.get(f"{url}/openapi.json", timeout=30).json()["components"]["schemas"]["TextileAnswer"]
        assert schema["properties"]["class"]["enum"] == classes
        with browser_page() as page:  # the page: no emotion form to use, the photo's bars are the classes
            open_demo_page(page, url)
            assert page.is_disabled("#emotion-submit") and "No emotion model" in page.inner_text("#emotion-error")
            page.set_input_files("#image", str(image))
            page.click("#textile-submit")
            page.wait_for_selector("#textile-result", state="visible")
            bars = page.eval_on_selector_all("#textile-bars .value", "cells => cells.map(c => c.dataset.label)")
            assert sorted(bars) == classes and page.inner_text("#textile-class") == answer["class"]
    finally:
        serve.delete("places")


def test_an_exported_model_moves_with_its_backbones_and_refuses_a_changed_one(fused, tmp_path):
    from deepfusion.artifacts.bundle import export_checkpoint
    from deepfusion.artifacts.checkpoint import CheckpointError, backbone_path
    from deepfusion.inference.emotion import EmotionRecognizer

    root = fused["four"]["export"].parent.parent
    # the run's own tree moves whole: the fusion card names its backbones relative to itself
    tree = Path(shutil.copytree(root, tmp_path / "moved_tree", ignore=shutil.ignore_patterns("tune", "cache")))
    assert read_card(tree / "fusion" / "best").backbones["video_checkpoint"]["path"] == "../../mimamo"
    EmotionRecognizer.from_checkpoint(tree / "fusion" / "best")
    bundle = export_checkpoint(tree / "fusion" / "best", tmp_path / "bundle")
    assert backbone_path(bundle, "audio_text_checkpoint") == (tmp_path / "bundle" / "backbones" / "audio_text")
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["backbones", "card.json", "model.safetensors"]
    with pytest.raises(CheckpointError, match="exists and is not an empty folder"):
        export_checkpoint(tree / "fusion" / "best", tmp_path / "bundle")
    # a backbone retrained since the fusion was fitted is not bundled with it
    save_backbone(tree / "mimamo", ShardDataset.open(read_card(tree / "mimamo").data_info["path"]),
                  read_card(tree / "mimamo").model_config, seed=11)
    with pytest.raises(CheckpointError, match=r"was fitted on a video_checkpoint with sha256 \w+, but .*mimamo now"):
        export_checkpoint(tree / "fusion" / "best", tmp_path / "stale")
    assert not (tmp_path / "stale").exists()

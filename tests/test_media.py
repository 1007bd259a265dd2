"""The shared decoders on real files: demo mp4/wav, real RAVDESS/TESS speech, real photos."""

from __future__ import annotations

import os

import numpy as np
import pytest

from deepfusion.demo.meld_corpus import write_mp4
from deepfusion.hashing import sha256_file
from deepfusion.media import MediaError, NoAudioTrack
from deepfusion.media.audio import load_audio
from deepfusion.media.image import decode_image, load_image
from deepfusion.media.text import tokenize
from deepfusion.media.video import decode_video, sample_frame_indices
from deepfusion.pretrained import OFFLINE_WEIGHTS_SHA256, offline_model_dir


def test_frame_indices_cover_the_clip_uniformly():
    assert sample_frame_indices(80, 8).tolist() == [0, 11, 23, 34, 45, 56, 68, 79]
    assert sample_frame_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]  # short clips repeat


def test_video_decodes_eight_uniform_frames_in_order(tmp_path):
    # Frame t is filled with grey level 10*t, so the decoded levels reveal which frames came back.
    frames = np.stack([np.full((48, 48, 3), 10 * t, np.uint8) for t in range(24)])
    write_mp4(tmp_path / "clip.mp4", frames, fps=8, audio=None, sample_rate=16000)
    decoded = decode_video(tmp_path / "clip.mp4", num_frames=8, size=32)
    assert decoded.shape == (8, 32, 32, 3) and decoded.dtype == np.uint8
    expected = 10 * sample_frame_indices(24, 8)
    assert np.abs(decoded[:, 16, 16, 0].astype(int) - expected).max() <= 4  # lossy codec


def test_mp4_audio_track_matches_the_wav_beside_it(demo_corpus):
    media = demo_corpus / "meld" / "train"
    stem = next(p.with_suffix("") for p in sorted(media.glob("*.wav")))
    from_wav, n_wav = load_audio(stem.with_suffix(".wav"), 16000)
    from_mp4, n_mp4 = load_audio(stem.with_suffix(".mp4"), 16000)
    assert from_wav.dtype == from_mp4.dtype == np.float32
    assert abs(n_mp4 - n_wav) <= 2048  # AAC priming/padding frames
    n = min(n_wav, n_mp4) - 2048
    # AAC delays the signal by its priming samples: align, then compare the waveforms.
    lag = int(np.argmax(np.correlate(from_mp4[:4000], from_wav[:2000], "valid")))
    assert np.corrcoef(from_wav[:n - lag], from_mp4[lag:n])[0, 1] > 0.95


def test_mp4_without_sound_reports_no_audio_track(tmp_path):
    write_mp4(tmp_path / "mute.mp4", np.zeros((4, 32, 32, 3), np.uint8), 8, None, 16000)
    with pytest.raises(NoAudioTrack):
        load_audio(tmp_path / "mute.mp4")


def test_real_speech_is_resampled_to_16k_mono(shared_data):
    path = shared_data / "speech" / "ravdess" / "03-01-01-01-01-01-07.wav"  # 48 kHz original
    samples, length = load_audio(path, 16000, max_seconds=1.0)
    assert samples.shape == (16000,) and length > 16000
    assert 0 < np.abs(samples).max() <= 1.0


def test_real_photo_decodes_and_resizes(shared_data):
    path = next((shared_data / "textile_standin" / "clothes_dump").glob("*.jpg"))
    assert decode_image(path).ndim == 3
    assert load_image(path, 224).shape == (224, 224, 3)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_files_raise_media_error_naming_the_file(demo_corpus, tmp_path, damage):
    sources = {
        "video": next((demo_corpus / "meld" / "train").glob("*.mp4")),
        "wav": next((demo_corpus / "meld" / "train").glob("*.wav")),
        "image": next((demo_corpus / "textile" / "clothes_dump").glob("*.jpg")),
    }
    decoders = {"video": lambda p: decode_video(p, 8, 32), "wav": load_audio,
                "image": lambda p: load_image(p, 32)}
    for kind, source in sources.items():
        data = source.read_bytes()
        damaged = tmp_path / f"{kind}{source.suffix}"
        damaged.write_bytes({"truncate": data[: len(data) // 3], "garbage": os.urandom(4096),
                             "empty": b""}[damage])
        with pytest.raises(MediaError) as err:
            decoders[kind](damaged)
        assert str(damaged) in str(err.value), (kind, damage)


def test_missing_file_is_a_media_error(tmp_path):
    for decode in (lambda p: decode_video(p, 8, 32), load_audio, decode_image):
        with pytest.raises(MediaError, match="file not found"):
            decode(tmp_path / "absent.bin")


def test_offline_text_model_is_verified_and_tokenizes():
    weights = offline_model_dir() / "model.safetensors"
    assert sha256_file(weights) == OFFLINE_WEIGHTS_SHA256
    ids = tokenize("offline", ["Oh my god, really?"], max_length=16)[0]
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) > 4  # [CLS] ... [SEP] of the uncased vocab


def test_tokenizer_matches_transformers_on_real_meld_text(shared_data):
    """Workers read tokenizer.json with `tokenizers`; ids must equal transformers' own."""
    import csv

    from transformers import AutoTokenizer

    from deepfusion.pretrained import resolve_text_model

    with open(shared_data / "meld" / "dev_sent_emo.csv", encoding="utf-8", newline="") as handle:
        texts = [row["Utterance"] for row in csv.DictReader(handle)]
    reference = AutoTokenizer.from_pretrained(resolve_text_model("offline"))
    for max_length in (8, 64):
        expected = reference(texts, truncation=True, max_length=max_length)["input_ids"]
        actual = tokenize("offline", texts, max_length)
        assert [list(ids) for ids in actual] == expected


def _write_av(path, container_format: str, video_codec: str | None, audio_codec: str, rate: int = 16000) -> None:
    """A one-second file written by PyAV (FFmpeg): grey frames that brighten, a 220 Hz tone."""
    import av

    with av.open(str(path), "w", format=container_format) as out:
        video = None if video_codec is None else out.add_stream(video_codec, rate=8)
        audio = out.add_stream(audio_codec, rate=rate)  # every stream before the first packet
        audio.layout = "mono"
        if video is not None:
            video.width = video.height = 48
            video.pix_fmt = "yuv420p"
            for t in range(8):
                frame = av.VideoFrame.from_ndarray(np.full((48, 48, 3), 20 * t, np.uint8), format="rgb24")
                for packet in video.encode(frame):
                    out.mux(packet)
        tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
        sample_format = "flt" if audio_codec == "libopus" else "fltp"  # what each encoder takes
        for start in range(0, rate, 1024):
            block = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format=sample_format, layout="mono")
            block.sample_rate, block.pts = rate, start
            for packet in audio.encode(block):
                out.mux(packet)
        for stream in [s for s in (video, audio) if s is not None]:
            for packet in stream.encode(None):
                out.mux(packet)


# (suffix, PyAV container, video codec, audio codec, what its bytes are)
VIDEO_CONTAINERS = [(".mp4", "mp4", "mpeg4", "aac", "mp4"), (".mov", "mov", "mpeg4", "aac", "mp4"),
                    (".mkv", "matroska", "mpeg4", "aac", "matroska"),
                    (".webm", "webm", "libvpx", "libopus", "matroska"),
                    (".avi", "avi", "mpeg4", "mp3", "avi"), (".flv", "flv", "flv", "mp3", "flv")]
AUDIO_FILES = [(".mp3", "mp3", None, "mp3", "mp3"), (".m4a", "ipod", None, "aac", "mp4"),
               (".aac", "adts", None, "aac", "aac")]


@pytest.mark.parametrize(("suffix", "container", "video_codec", "audio_codec", "kind"), VIDEO_CONTAINERS,
                         ids=[c[0] for c in VIDEO_CONTAINERS])
def test_every_video_container_is_known_by_its_bytes_and_decodes_frames_and_sound(tmp_path, suffix, container,
                                                                                  video_codec, audio_codec, kind):
    from deepfusion.media.formats import VIDEO_FORMATS, sniff_file

    path = tmp_path / f"clip{suffix}"
    # Opus is 48 kHz; FLV's MP3 is 44.1, 22.05 or 11.025 kHz
    _write_av(path, container, video_codec, audio_codec, rate={"libopus": 48000, "flv": 22050}.get(
        audio_codec if audio_codec == "libopus" else container, 16000))
    nameless = path.rename(tmp_path / "upload")  # what an upload is: bytes, no name to go by
    assert sniff_file(nameless) == kind and kind in VIDEO_FORMATS
    frames = decode_video(nameless, num_frames=8, size=32)
    assert frames.shape == (8, 32, 32, 3) and frames[-1].mean() > frames[0].mean()  # in order, brightening
    audio, _ = load_audio(nameless, 16000)
    assert 0.8 * 16000 < audio.size <= 16000 * 1.1 and np.abs(audio).max() > 0.1


@pytest.mark.parametrize(("suffix", "container", "video_codec", "audio_codec", "kind"), AUDIO_FILES,
                         ids=[c[0] for c in AUDIO_FILES])
def test_every_audio_file_is_known_by_its_bytes_and_decodes(tmp_path, suffix, container, video_codec, audio_codec,
                                                            kind):
    import soundfile

    from deepfusion.media.formats import AUDIO_FORMATS, sniff_file

    _write_av(tmp_path / f"speech{suffix}", container, None, audio_codec)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    soundfile.write(tmp_path / "speech.flac", tone, 16000)
    soundfile.write(tmp_path / "speech.ogg", tone, 16000, format="OGG", subtype="VORBIS")
    for path, expected in ((tmp_path / f"speech{suffix}", kind), (tmp_path / "speech.flac", "flac"),
                           (tmp_path / "speech.ogg", "ogg")):
        nameless = path.rename(tmp_path / "upload")
        assert sniff_file(nameless) == expected and expected in AUDIO_FORMATS
        audio, _ = load_audio(nameless, 16000)
        assert 0.8 * 16000 < audio.size <= 16000 * 1.1 and np.abs(audio).max() > 0.1, path.name
        nameless.unlink()

"""A synthetic MELD-layout corpus: real csv, mp4 (with an AAC track) and wav files.

Each modality carries partial, noisy evidence of the utterance's emotion, chosen so that
no single modality can separate all seven classes but together they can:

- video shows one of five visual prototypes; anger/disgust share one, fear/surprise another;
- audio shows one of five acoustic prototypes; neutral/sadness share one, joy/surprise another;
- text names the emotion only some of the time, and is filler otherwise.

Every cue is replaced by a random emotion's cue with probability ``1 - reliability``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile

from deepfusion.config import DemoDataConfig
from deepfusion.labels import EMOTIONS

# Roughly MELD's skew: neutral dominates, fear and disgust are rare.
EMOTION_WEIGHTS = {"anger": 0.12, "disgust": 0.07, "fear": 0.07, "joy": 0.18,
                   "neutral": 0.32, "sadness": 0.11, "surprise": 0.13}
VIDEO_PROTOTYPE = {"neutral": 0, "joy": 1, "sadness": 2, "anger": 3, "disgust": 3,
                   "fear": 4, "surprise": 4}
AUDIO_PROTOTYPE = {"neutral": 0, "sadness": 0, "joy": 1, "surprise": 1, "anger": 2,
                   "disgust": 3, "fear": 4}
SENTIMENT = {"anger": "negative", "disgust": "negative", "fear": "negative", "joy": "positive",
             "neutral": "neutral", "sadness": "negative", "surprise": "positive"}
KEYWORD_LINES = {
    "anger": ["I am so angry right now!", "This is infuriating.", "Stop it, I'm furious!"],
    "disgust": ["Ew, that is disgusting.", "Gross, get that away from me.", "That's revolting."],
    "fear": ["I'm scared, what was that?", "This is terrifying.", "I'm afraid to go in there."],
    "joy": ["This is wonderful, I love it!", "I'm so happy for you!", "Yay, best day ever!"],
    "neutral": ["I'll be at the office tomorrow.", "The meeting is at noon.", "Sure, that works."],
    "sadness": ["I miss her so much.", "This is really sad.", "I just feel so down today."],
    "surprise": ["Wait, what? No way!", "Oh my god, really?", "I can't believe it!"],
}
FILLER_LINES = ["Okay.", "So, where were we?", "Can you pass me that?", "Let me think about it.",
                "Yeah, I guess.", "What time is it?", "Hmm, right.", "Did you see Ross?",
                "We should get coffee.", "Is that the new one?"]
SPEAKERS = ["Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Gray", "Harper", "Indigo",
            "Jordan", "Kai", "Logan"]
# MELD's split names -> csv / media folder.
MELD_SPLITS = {"train": "train", "dev": "dev", "test": "test"}


def _observed(true_emotion: str, reliability: float, rng: random.Random) -> str:
    return true_emotion if rng.random() < reliability else rng.choice(EMOTIONS)


def render_video(prototype: int, size: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Frames ``uint8 [T, size, size, 3]`` (RGB) of a face-like glyph whose look is the prototype."""
    face_colour = {0: (190, 170, 150), 1: (240, 210, 90), 2: (120, 140, 220),
                   3: (220, 70, 60), 4: (235, 235, 245)}[prototype]
    background = rng.integers(20, 120, size=3).tolist()
    cx, cy = size / 2 + rng.normal(0, size * 0.05, 2)
    # One sensor-noise field per clip, shifted every frame: as noisy, far cheaper to draw.
    noise = rng.normal(0, 12, (size, size, 3)).astype(np.int16)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        phase = t / max(1, num_frames - 1)
        frame = np.full((size, size, 3), background, dtype=np.uint8)
        dx = (np.sin(phase * 12) * size * 0.04) if prototype == 3 else 0  # anger shakes
        dy = phase * size * 0.08 if prototype == 2 else 0  # sadness sinks
        x, y, r = int(cx + dx), int(cy + dy), int(size * 0.32)
        cv2.circle(frame, (x, y), r, face_colour, -1)
        eye = max(2, int(size * (0.04 + (0.03 * phase if prototype == 4 else 0))))
        for ex in (-1, 1):
            cv2.circle(frame, (x + ex * r // 2, y - r // 3), eye, (20, 20, 20), -1)
        mouth_y, mouth_w = y + r // 2, r // 2
        if prototype == 1:  # smile
            cv2.ellipse(frame, (x, mouth_y - r // 8), (mouth_w, r // 4), 0, 10, 170, (40, 20, 20), 3)
        elif prototype == 2:  # frown
            cv2.ellipse(frame, (x, mouth_y + r // 6), (mouth_w, r // 5), 0, 190, 350, (40, 20, 20), 3)
        elif prototype == 4:  # open mouth
            cv2.circle(frame, (x, mouth_y), max(3, r // 5), (40, 20, 20), -1)
        else:  # flat line; anger adds slanted brows
            cv2.line(frame, (x - mouth_w, mouth_y), (x + mouth_w, mouth_y), (40, 20, 20), 3)
            if prototype == 3:
                for ex in (-1, 1):
                    cv2.line(frame, (x + ex * r // 4, y - r // 2), (x + ex * 3 * r // 4, y - r * 2 // 3),
                             (20, 20, 20), 3)
        shifted = np.roll(noise, (7 * t, 13 * t), axis=(0, 1))
        frames[t] = np.clip(frame.astype(np.int16) + shifted, 0, 255).astype(np.uint8)
    return frames


def render_audio(prototype: int, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced, noisy tone ``float32 [n]`` whose pitch contour and loudness are the prototype."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    base, glide, amp, vibrato = {
        0: (130.0, 0.0, 0.25, 0.0),    # neutral/sadness: low, flat, soft
        1: (260.0, 120.0, 0.35, 0.0),  # joy/surprise: high, rising
        2: (180.0, 0.0, 0.6, 0.0),     # anger: loud, harsh
        3: (200.0, -90.0, 0.35, 0.0),  # disgust: falling glide
        4: (300.0, 0.0, 0.15, 9.0),    # fear: high, quiet, trembling
    }[prototype]
    base *= float(np.exp(rng.normal(0, 0.08)))
    f0 = base + glide * (t / max(seconds, 1e-6)) + (vibrato and 12 * np.sin(2 * np.pi * vibrato * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = 6 if prototype == 2 else 3
    voice = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) * 20)
    signal = amp * envelope * voice / 1.8 + rng.normal(0, 0.02, n)
    return np.clip(signal, -1, 1).astype(np.float32)


def write_mp4(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sample_rate: int) -> None:
    """An mp4 with an MPEG-4 Part 2 video stream and, if given, an AAC mono track."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt, video.bit_rate = "yuv420p", 600_000
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            chunk = 1024
            for start in range(0, len(audio), chunk):
                block = av.AudioFrame.from_ndarray(audio[None, start:start + chunk], format="fltp",
                                                   layout="mono")
                block.sample_rate, block.pts = sample_rate, start
                for packet in sound.encode(block):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)


def _utterance_text(emotion: str, reliability: float, rng: random.Random) -> str:
    """The true emotion's words with probability ``reliability``; else filler, or now and
    then another emotion's words (a misleading transcript)."""
    if rng.random() < reliability:
        return rng.choice(KEYWORD_LINES[emotion])
    if rng.random() < 0.15:
        return rng.choice(KEYWORD_LINES[rng.choice(EMOTIONS)])
    return rng.choice(FILLER_LINES)


def _timestamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_meld_corpus(cfg: DemoDataConfig, root: Path) -> dict[str, int]:
    """Write ``{train,dev,test}_sent_emo.csv`` and media under ``root``; returns rows per split."""
    rng = random.Random(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    speakers = SPEAKERS[: cfg.num_speakers]
    emotions, weights = list(EMOTION_WEIGHTS), list(EMOTION_WEIGHTS.values())
    rows_per_split = {}
    for split, folder in MELD_SPLITS.items():
        media = root / folder
        media.mkdir(parents=True, exist_ok=True)
        rows = []
        for dialogue_id in range(cfg.dialogues[split]):  # MELD numbers dialogues from 0 in every split
            cast = rng.sample(speakers, 2)
            clock = rng.uniform(0, 1200)
            for utt in range(rng.randint(*cfg.utterances_per_dialogue)):
                emotion = rng.choices(emotions, weights)[0]
                seconds = rng.uniform(*cfg.seconds)
                text = _utterance_text(emotion, cfg.text_reliability, rng)
                stem = media / f"dia{dialogue_id}_utt{utt}"
                if rng.random() >= cfg.text_only_fraction:
                    frames = render_video(VIDEO_PROTOTYPE[_observed(emotion, cfg.video_reliability, rng)],
                                          cfg.frame_size, max(2, int(seconds * cfg.fps)), np_rng)
                    audio = render_audio(AUDIO_PROTOTYPE[_observed(emotion, cfg.audio_reliability, rng)],
                                         seconds, cfg.sample_rate, np_rng)
                    write_mp4(stem.with_suffix(".mp4"), frames, cfg.fps, audio, cfg.sample_rate)
                    if rng.random() < cfg.wav_fraction:
                        soundfile.write(stem.with_suffix(".wav"), audio, cfg.sample_rate, subtype="PCM_16")
                rows.append([len(rows) + 1, text, cast[utt % 2], emotion, SENTIMENT[emotion],
                             dialogue_id, utt, 1, 1, _timestamp(clock), _timestamp(clock + seconds)])
                clock += seconds + rng.uniform(0.1, 1.0)
        with open(root / f"{split}_sent_emo.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                             "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"])
            writer.writerows(rows)
        rows_per_split[split] = len(rows)
    return rows_per_split

"""Hostile and oversized input against the Serve app: each input's answer, the time to
answer and the ingress replica's peak memory while it was handled.

    python bench/hostile_input.py [--config configs/serve.yaml] [--set KEY=VALUE ...]

Deploys the application of ``configs/serve.yaml`` (its checkpoints: `make demo`) on a local
Ray with the configured limits, then sends, one at a time: a good clip and a good photo (the
baselines), decompression-bomb PNG and JPEG, a photo declared as video/mp4, a 60 MB
Content-Length sent without its body, a 26 MB upload, a chunked body with no length, a clip
over the frame cap, and ten minutes of low-bitrate audio (of which only
``audio.max_seconds`` is decoded). Before each input the ingress replica's peak RSS
(``VmHWM``) is reset through ``/proc/<pid>/clear_refs``, so each row's peak is that input's
own. Every hostile input must get a 4xx and the app must answer a good request afterwards.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
os.chdir(REPO_ROOT)

from deepfusion.config import load_config  # noqa: E402


def png_bomb() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")  # 48 KB on disk, 1.2 GB as RGB
    return buffer.getvalue()


def jpeg(size=(256, 256)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def jpeg_bomb() -> bytes:
    data = bytearray(jpeg((64, 64)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2  # the header claims 30000 x 30000
    return bytes(data)


def long_clip(folder: Path, frames: int) -> bytes:
    from deepfusion.demo.meld_corpus import write_mp4

    path = folder / "long.mp4"
    write_mp4(path, np.zeros((frames, 16, 16, 3), np.uint8), fps=30, audio=None, sample_rate=16000)
    return path.read_bytes()


def long_wav(folder: Path, seconds: int) -> bytes:
    import soundfile

    path = folder / "long.wav"
    soundfile.write(path, np.zeros(seconds * 8000, np.float32), 8000, subtype="PCM_U8")
    return path.read_bytes()


class Replica:
    """The ingress replica's process: its peak RSS, reset between inputs."""

    def __init__(self, app: str):
        from ray._private import state as gcs_state  # the State API needs the dashboard; this does not

        [self.pid] = [a["Pid"] for a in gcs_state.actors().values()
                      if a["ActorClassName"] == f"ServeReplica:{app}:ingress" and a["State"] == "ALIVE"]

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)

    def peak_mib(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def raw_post(port: int, headers: dict, body_chunks=(), chunked: bool = False) -> tuple[int, dict]:
    """A POST of ``headers`` then (optionally) ``body_chunks``, stopping when the server
    stops reading; its status and JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest("POST", "/v1/emotion")
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    try:
        for chunk in body_chunks:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: its answer is waiting
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/serve.yaml")
    parser.add_argument("--meld", default="work/demo/data/meld", help="a MELD-layout folder with mp4s (the good clip)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("serve", args.config)
    clips = sorted(Path(args.meld).glob("test/*.mp4"))
    if not clips:
        sys.exit(f"no mp4 under {args.meld}/test; run `make demo` first")

    from deepfusion.ray_runtime import connect, use_serve_environment

    use_serve_environment()
    from ray import serve

    from deepfusion.serving.app import build_app

    connect(experiment.ray)
    port = cfg.http_port
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": cfg.request_timeout_s})
    serve.run(build_app(cfg), name="hostile", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    replica = Replica("hostile")
    good_clip = clips[0].read_bytes()
    folder = Path(tempfile.mkdtemp(prefix="hostile_bench_"))
    limits = cfg.limits
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    part = (b'--b\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n")

    def emotion(**files):
        return lambda: requests.post(f"{url}/v1/emotion", files=files, data={"text": "hello"}, timeout=120)

    def textile(data, declared):
        return lambda: requests.post(f"{url}/v1/textile", files={"image": ("x", data, declared)}, timeout=120)

    inputs = {
        "good clip (baseline)": (emotion(video=("v.mp4", good_clip, "video/mp4")), 200),
        "good photo (baseline)": (textile(jpeg(), "image/jpeg"), 200),
        "PNG bomb, 20000x20000 in 48 KB": (textile(png_bomb(), "image/png"), 413),
        "JPEG bomb, header claims 30000x30000": (textile(jpeg_bomb(), "image/jpeg"), 413),
        "photo declared video/mp4": (emotion(video=("v.mp4", jpeg(), "video/mp4")), 415),
        f"clip of {limits.media.max_video_frames + 600} frames": (
            emotion(video=("v.mp4", long_clip(folder, limits.media.max_video_frames + 600), "video/mp4")), 413),
        "10 min of 8 kHz 8-bit wav (4.8 MB)": (emotion(audio=("a.wav", long_wav(folder, 600), "audio/wav")), 200),
        f"upload of {limits.max_upload_mb + 1:g} MB": (
            emotion(video=("v.mp4", b"\0" * int((limits.max_upload_mb + 1) * 2**20), "video/mp4")), 413),
        "Content-Length of 60x the limit, no body sent": (
            lambda: raw_post(port, multipart | {"Content-Length": str(60 * limits.request_bytes)}), 413),
        "Content-Length of 2x the limit, body sent": (
            lambda: raw_post(port, multipart | {"Content-Length": str(2 * limits.request_bytes)},
                             [b"\0" * 2**20] * (2 * limits.request_bytes // 2**20)), 413),
        "chunked body, no length, 2x the limit": (
            lambda: raw_post(port, multipart | {"Transfer-Encoding": "chunked"},
                             [part] + [b"\0" * 2**20] * (2 * limits.request_bytes // 2**20), chunked=True),
            411 if limits.require_content_length else 413),
    }
    rows = []
    for name, (send, expected) in inputs.items():
        replica.reset_peak()
        started = time.perf_counter()
        response = send()
        elapsed = 1000 * (time.perf_counter() - started)
        status, body = response if isinstance(response, tuple) else (response.status_code, response.json())
        detail = body.get("detail", {}) if isinstance(body, dict) else {}
        rows.append({"input": name, "status": status, "expected": expected, "ms": round(elapsed, 1),
                     "peak_rss_mib": round(replica.peak_mib()),
                     "limit": detail.get("limit") if isinstance(detail, dict) else None})
        alive = requests.post(f"{url}/v1/emotion", data={"text": "still here?"}, timeout=60).status_code
        rows[-1]["good_request_after"] = alive
        print(f"{name:<46} {status} in {elapsed:7.1f} ms, replica peak {rows[-1]['peak_rss_mib']:>5} MiB "
              f"{rows[-1]['limit'] or ''}", flush=True)
    serve.shutdown()
    import ray

    ray.shutdown()
    ok = all(r["status"] == r["expected"] and r["good_request_after"] == 200 for r in rows)
    print(json.dumps({
        "bench": "hostile_input",
        "calibration": calibration(), "all_as_expected": ok, "max_peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
        "rows": rows, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

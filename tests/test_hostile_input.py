"""Hostile and oversized input: decompression bombs, disguised files, media over the decoding
caps, bodies over the size limit, missing credentials. Against the real Serve app over
HTTP (deployed with a bearer token and tight limits), a real ingestion job, and the shared
decoders themselves. Every refusal is a 4xx JSON answer naming the field (and the limit),
and the app answers a good request afterwards."""

from __future__ import annotations

import glob
import http.client
import io
import json
import os
import select
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
from helpers import deploy, image_dataset, meld_dataset, preprocess_config, ray_actors
from PIL import Image

from deepfusion.config import MediaLimits
from deepfusion.config.serving import AuthSection, RequestLimits
from deepfusion.demo.meld_corpus import write_mp4
from deepfusion.media import DecodeTimeout, MediaError, MediaLimitExceeded
from deepfusion.media.audio import load_audio
from deepfusion.media.image import decode_image
from deepfusion.media.video import decode_video

pytestmark = pytest.mark.usefixtures("ray_local")

# Tight enough that small test files cross them; the demo clips (<= 16 frames of 48x48,
# <= 2 s) and images (64x64) stay inside.
TIGHT = MediaLimits(max_video_frames=100, max_video_seconds=30, max_frame_pixels=160 * 120,
                    max_audio_seconds=20, max_image_pixels=1_000_000)
# The ingress replica's peak resident memory over every hostile request here (README, Security).
REPLICA_PEAK_RSS_BOUND = 1280 * 1024**2  # 1.25 GiB: decoding the PNG bomb alone would exceed it


def png_bomb() -> bytes:
    """A 20000 x 20000 PNG of 48 KB: 400 megapixels, 1.2 GB as RGB."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def jpeg_bomb() -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims 30000 x 30000 pixels."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2  # height, width
    return bytes(data)


def clip(path: Path, frames: int, width: int, height: int) -> bytes:
    write_mp4(path, np.zeros((frames, height, width, 3), np.uint8), fps=8, audio=None, sample_rate=16000)
    return path.read_bytes()


def wav(path: Path, seconds: float, rate: int = 8000) -> bytes:
    """8-bit mono PCM: small on disk, ``seconds`` long by its header."""
    soundfile.write(path, np.zeros(int(seconds * rate), np.float32), rate, subtype="PCM_U8")
    return path.read_bytes()


# -- the shared decoders ---------------------------------------------------------------------

def test_decoders_refuse_what_is_over_the_caps_before_decoding(tmp_path):
    with pytest.raises(MediaLimitExceeded, match=r"limits\.max_image_pixels") as bomb:
        decode_image(png_bomb(), TIGHT)
    assert bomb.value.limit == "max_image_pixels"
    with pytest.raises(MediaLimitExceeded, match=r"limits\.max_image_pixels"):
        decode_image(jpeg_bomb())  # past PIL's own guard even at the default cap
    (tmp_path / "long.mp4").write_bytes(clip(tmp_path / "long.mp4", 150, 32, 32))
    with pytest.raises(MediaLimitExceeded, match=r"frame count 150 is over the limit of 100"):
        decode_video(tmp_path / "long.mp4", 8, 32, TIGHT)
    clip(tmp_path / "wide.mp4", 4, 320, 240)
    with pytest.raises(MediaLimitExceeded, match=r"320x240.*limits\.max_frame_pixels"):
        decode_video(tmp_path / "wide.mp4", 8, 32, TIGHT)
    wav(tmp_path / "long.wav", 30)
    with pytest.raises(MediaLimitExceeded, match=r"limits\.max_audio_seconds"):
        load_audio(tmp_path / "long.wav", 16000, 10.0, TIGHT)
    (tmp_path / "photo.mp4").write_bytes(jpeg_bytes())
    with pytest.raises(MediaError, match="not a video container.*jpeg"):
        decode_video(tmp_path / "photo.mp4", 8, 32)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(MediaError, match=r"a gif image; accepted formats are JPEG, PNG, WEBP"):
        decode_image(gif.getvalue())
    with pytest.raises(DecodeTimeout, match=r"limits\.decode_timeout_s"):
        decode_video(demo_clip_path(tmp_path), 8, 32, MediaLimits(decode_timeout_s=1e-9))


def demo_clip_path(tmp_path: Path) -> Path:
    path = tmp_path / "ok.mp4"
    clip(path, 16, 48, 48)
    return path


def test_hours_of_low_bitrate_audio_decode_only_what_the_model_uses(tmp_path):
    """Two hours of 8 kHz FLAC (a few hundred KB) would be 460 MB as 16 kHz float32: only
    ``max_seconds`` of it is ever decoded, and the original length comes from the header."""
    path = tmp_path / "two_hours.flac"
    rate, seconds = 8000, 7200
    with soundfile.SoundFile(path, "w", rate, 1, subtype="PCM_16") as out:
        block = np.zeros(rate * 60, np.float32)
        for _ in range(seconds // 60):
            out.write(block)
    assert path.stat().st_size < 5 * 1024 * 1024
    tracemalloc.start()
    samples, original = load_audio(path, 16000, max_seconds=10.0, limits=MediaLimits(max_audio_seconds=3 * 3600))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert samples.shape == (160000,) and original == seconds * 16000
    assert peak < 20 * 1024 * 1024, f"decoding peaked at {peak / 2**20:.0f} MiB"


# -- a real ingestion job (before the Serve app below takes its share of the 2 CPUs) -------------

def test_ingestion_quarantines_hostile_files_with_the_reason_and_goes_on(corpus_copy, tmp_path):
    from deepfusion.artifacts.shards import read_manifest
    from deepfusion.preprocess.datasets import preprocess

    media = corpus_copy / "meld" / "train"
    clips = sorted(media.glob("*.mp4"))
    clips[0].write_bytes(jpeg_bytes())  # a photo named .mp4
    clip(clips[1], 150, 32, 32)  # over max_video_frames
    images = sorted((corpus_copy / "textile" / "clothes_dump").glob("*.jpg"))
    images[0].write_bytes(png_bomb())  # a bomb named .jpg
    limits = TIGHT.model_dump()
    preprocess(preprocess_config(tmp_path / "shards", meld_dataset(corpus_copy / "meld", name="meld", limits=limits),
                                 image_dataset(corpus_copy / "textile", name="textile", limits=limits)))
    reasons = []  # each names the file (a MELD entry's source is its CSV row)
    for name in ("meld", "textile"):
        reasons += [json.loads(line)["reason"]
                    for line in (tmp_path / "shards" / name / "quarantine.jsonl").read_text().splitlines()]
        assert read_manifest(tmp_path / "shards" / name)["totals"]["train"] > 0  # the job went on

    def reason_for(path: Path) -> str:
        [reason] = [r for r in reasons if str(path) in r]
        return reason

    assert "not a video container (its bytes are jpeg" in reason_for(clips[0])
    assert "frame count 150 is over the limit of 100 (limits.max_video_frames)" in reason_for(clips[1])
    assert "limits.max_image_pixels" in reason_for(images[0])


# -- the Serve app over HTTP -------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(served, serve_port, tmp_path_factory):
    """The app with a bearer token and tight limits: 1 MB per file, 2 MB per request."""
    from ray import serve

    from deepfusion.serving.app import build_app

    root = tmp_path_factory.mktemp("guarded")
    token = os.urandom(24).hex()
    token_file = root / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cfg = served["cfg"].model_copy(update={
        "auth": AuthSection(token_file=token_file),
        "limits": RequestLimits(max_upload_mb=1, max_request_mb=2, max_text_chars=200, media=TIGHT)})
    url = deploy(build_app(cfg), "guarded", serve_port)
    yield {"url": url, "port": serve_port, "headers": {"Authorization": f"Bearer {token}"},
           "served": served, "cfg": cfg}
    serve.delete("guarded")


def post(guarded, route: str, files=None, **data) -> requests.Response:
    return requests.post(f"{guarded['url']}{route}", files=files or {}, data=data, headers=guarded["headers"],
                         timeout=120)


def assert_still_answers(guarded) -> None:
    response = post(guarded, "/v1/emotion", text="still here")
    assert response.status_code == 200, response.text


def test_credentials_are_required_except_for_the_health_check_and_the_pages(guarded):
    url = guarded["url"]
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": "Basic abc"}):
        response = requests.post(f"{url}/v1/emotion", data={"text": "hi"}, headers=headers, timeout=30)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["detail"]["field"] == "authorization"
    assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
    # what a browser loads by navigation is open (it cannot send a bearer token); the
    # demo page then sends the token it is given with its API calls
    for path in ("/", "/ui/app.js", "/docs", "/redoc", "/openapi.json", "/static-offline-docs/swagger-ui.css"):
        assert requests.get(f"{url}{path}", timeout=10).status_code == 200, path
    models = requests.get(f"{url}/v1/models", headers=guarded["headers"], timeout=30)
    assert models.status_code == 200
    # the listing names checkpoints, not where this machine keeps them
    assert all("/" not in model["checkpoint"] for model in models.json().values()), models.text
    assert_still_answers(guarded)


HOSTILE = ["png_bomb", "jpeg_bomb", "jpeg_as_mp4", "png_as_jpeg", "gif", "long_video", "wide_video",
           "long_audio", "wav_as_mp4"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_files_get_a_4xx_naming_the_field_and_the_limit(guarded, case, tmp_path):
    if case in ("png_bomb", "jpeg_bomb", "png_as_jpeg", "gif"):
        data, declared = {"png_bomb": (png_bomb(), "image/png"), "jpeg_bomb": (jpeg_bomb(), "image/jpeg"),
                          "png_as_jpeg": (png_bomb(), "image/jpeg"), "gif": (b"GIF89a" + bytes(64), "image/gif")}[case]
        response = post(guarded, "/v1/textile", files={"image": ("x", data, declared)})
        field = "image"
    elif case in ("long_audio",):
        response = post(guarded, "/v1/emotion", files={"audio": ("a.wav", wav(tmp_path / "a.wav", 30), "audio/wav")})
        field = "audio"
    else:
        data = {"jpeg_as_mp4": lambda: jpeg_bytes(), "wav_as_mp4": lambda: wav(tmp_path / "a.wav", 1),
                "long_video": lambda: clip(tmp_path / "v.mp4", 150, 32, 32),
                "wide_video": lambda: clip(tmp_path / "v.mp4", 4, 320, 240)}[case]()
        response = post(guarded, "/v1/emotion", files={"video": ("v.mp4", data, "video/mp4")})
        field = "video"
    expected, limit = {
        "png_bomb": (413, "max_image_pixels"), "jpeg_bomb": (413, "max_image_pixels"),
        "jpeg_as_mp4": (415, None), "png_as_jpeg": (415, None), "gif": (415, None), "wav_as_mp4": (415, None),
        "long_video": (413, "max_video_frames"), "wide_video": (413, "max_frame_pixels"),
        "long_audio": (413, "max_audio_seconds")}[case]
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    assert detail["field"] == field and detail["error"], detail
    if limit is not None:
        assert detail["limit"] == f"serve.limits.media.{limit}", detail
    assert "/tmp" not in detail["error"], "an answer names no path of the server"
    assert_still_answers(guarded)


def start_post(guarded, **headers) -> http.client.HTTPConnection:
    """A POST /v1/emotion whose request line and headers are sent, and none of its body."""
    connection = http.client.HTTPConnection("127.0.0.1", guarded["port"], timeout=30)
    connection.putrequest("POST", "/v1/emotion")
    for name, value in {**guarded["headers"], "Content-Type": "multipart/form-data; boundary=b",
                        **headers}.items():
        connection.putheader(name, value)
    connection.endheaders()
    return connection


def answer(connection: http.client.HTTPConnection) -> tuple[int, dict]:
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body["detail"]


def send_chunked(connection: http.client.HTTPConnection, total: int) -> int:
    """Send a multipart body in 256 KB chunks until the server answers or ``total`` is sent."""
    part = b"--b\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n" \
           b"Content-Type: video/mp4\r\n\r\n"
    chunk, sent = part + b"\0" * (256 * 1024 - len(part)), 0
    while sent < total and not select.select([connection.sock], [], [], 0)[0]:
        try:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(chunk)
        chunk = b"\0" * len(chunk)
    else:
        connection.send(b"0\r\n\r\n")
    return sent


def test_an_oversized_or_unsized_body_is_refused_before_it_is_read(guarded):
    """A Content-Length of 60 MB (30 times the limit) is answered 413, and a chunked body
    (no length at all) 411, while the client has sent none of the body."""
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "deepfusion_*")))
    status, detail = answer(start_post(guarded, **{"Content-Length": str(60 * 1024 * 1024)}))
    assert status == 413 and detail["field"] == "body", detail
    assert detail["limit"] == "serve.limits.max_request_mb"
    status, detail = answer(start_post(guarded, **{"Transfer-Encoding": "chunked"}))
    assert status == 411 and detail["limit"] == "serve.limits.require_content_length", detail
    # no upload folder of a refused request is left behind
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "deepfusion_*"))) <= before
    assert_still_answers(guarded)


def test_failed_decodes_leave_no_temporary_files(guarded, tmp_path):
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "deepfusion_*")))
    data = clip(tmp_path / "v.mp4", 16, 48, 48)
    for payload in (data[: len(data) // 3], clip(tmp_path / "w.mp4", 150, 32, 32)):
        response = post(guarded, "/v1/emotion", files={"video": ("v.mp4", payload, "video/mp4")})
        assert response.status_code in (413, 422), response.text
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "deepfusion_*"))) <= before


FUZZ_EXAMPLES = 25  # per operation; about 30 s for the four operations here


def test_requests_generated_from_the_openapi_schema_never_get_a_5xx_and_get_what_it_documents(guarded):
    """Property-based: schemathesis generates requests (valid and invalid) for every
    operation of the app's own OpenAPI schema; none may get a 5xx or kill a replica, and
    every answer is what the schema documents, as a client generated from it would expect:
    a documented status code, a body valid against that status's schema, the declared
    content type and the documented headers."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    raw = requests.get(f"{guarded['url']}/openapi.json", headers=guarded["headers"], timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/emotion", "/v1/textile", "/v1/models", "/healthz"}
    answered = []
    with requests.Session() as session:
        for operation in operations:
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def no_server_error(case):
                response = case.call(base_url=guarded["url"], session=session, headers=guarded["headers"],
                                     timeout=60)
                answered.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
                case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                         response_headers_conformance, response_schema_conformance])

            no_server_error()
    print(json.dumps({"fuzzed_requests": len(answered), "statuses": sorted(set(answered))}))
    assert len(answered) >= 2 * len(operations)
    assert_still_answers(guarded)


def test_the_ingress_replica_stays_within_its_memory_bound(guarded, tmp_path):
    """The replica's peak RSS (VmHWM, since it started) after the heaviest hostile uploads,
    sent here (whatever ran before): decompression bombs, video over the frame and pixel
    caps, audio over the length cap, each refused."""
    heavy = [("/v1/textile", "image", ("x.png", png_bomb(), "image/png")),
             ("/v1/textile", "image", ("x.jpg", jpeg_bomb(), "image/jpeg")),
             ("/v1/emotion", "video", ("v.mp4", clip(tmp_path / "long.mp4", 150, 32, 32), "video/mp4")),
             ("/v1/emotion", "video", ("v.mp4", clip(tmp_path / "wide.mp4", 4, 320, 240), "video/mp4")),
             ("/v1/emotion", "audio", ("a.wav", wav(tmp_path / "a.wav", 30), "audio/wav"))]
    for route, field, upload in heavy:
        response = post(guarded, route, files={field: upload})
        assert response.status_code == 413 and response.json()["detail"]["field"] == field, response.text
    [replica] = ray_actors("ServeReplica:guarded:ingress", state="ALIVE")
    status = Path(f"/proc/{replica['pid']}/status").read_text()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
    print(json.dumps({"ingress_peak_rss_mib": round(peak / 2**20)}))
    assert peak < REPLICA_PEAK_RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"
    assert_still_answers(guarded)


def test_with_chunked_uploads_allowed_the_stream_is_cut_off_at_the_limit(guarded):
    """``require_content_length: false``: a chunked body is counted as it arrives and the app
    stops reading it at the limit with a 413. (Redeploys the app for the test, and back.)"""
    from ray import serve

    from deepfusion.serving.app import build_app

    cfg = guarded["cfg"]
    serve.run(build_app(cfg.model_copy(update={
        "limits": cfg.limits.model_copy(update={"require_content_length": False})})), name="guarded", route_prefix="/")
    try:
        connection = start_post(guarded, **{"Transfer-Encoding": "chunked"})
        send_chunked(connection, 8 * 1024 * 1024)
        status, detail = answer(connection)
        assert status == 413 and detail["field"] == "body", detail
        assert_still_answers(guarded)
    finally:
        serve.run(build_app(cfg), name="guarded", route_prefix="/")


def test_the_token_file_must_be_readable_and_long_enough(tmp_path):
    from deepfusion.serving.guard import TokenUnavailable, read_token

    with pytest.raises(TokenUnavailable, match="cannot read"):
        read_token(AuthSection(token_file=tmp_path / "absent"))
    (tmp_path / "short").write_text("abc")
    with pytest.raises(TokenUnavailable, match="shorter than 16"):
        read_token(AuthSection(token_file=tmp_path / "short"))
    (tmp_path / "good").write_text("a" * 32 + "\n")
    assert read_token(AuthSection(token_file=tmp_path / "good")) == "a" * 32

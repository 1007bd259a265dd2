"""The Serve application on a real local Ray over real HTTP: parity with ingestion and with
the in-process pipeline, the model listing, and 4xx answers to bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import torch
import yaml
from helpers import (
    REPO_ROOT,
    browser_page,
    demo_clip,
    deploy,
    free_ports,
    job_env,
    open_demo_page,
    ray_actors,
    run_in_own_session,
    save_backbone,
)

from deepfusion.artifacts.batches import model_batch_inputs
from deepfusion.artifacts.checkpoint import read_card
from deepfusion.config import ConfigError
from deepfusion.config.architectures import MimamoConfig
from deepfusion.inference.emotion import EmotionDecoder, EmotionRecognizer, EmotionRequest
from deepfusion.inference.textile import TextileClassifier

pytestmark = pytest.mark.usefixtures("ray_local")


def test_a_file_reaches_the_model_as_the_same_tensors_served_or_ingested(served):
    """Train/serve parity: the shard row of a clip and the served decoding of the same file."""
    meld = served["meld"]
    table = pq.read_table(meld.path / "split=train")
    clip = demo_clip(served)
    dialogue, utterance = (int(part[3:]) for part in clip.stem.split("_"))  # dia{D}_utt{U}
    [index] = [i for i, (d, u) in enumerate(zip(table.column("dialogue_id").to_pylist(),
                                                table.column("utterance_id").to_pylist()))
               if (d, u) == (dialogue, utterance)]
    ingested = {c: table.column(c).to_numpy(zero_copy_only=False)[index:index + 1] for c in table.column_names}
    wav = clip.with_suffix(".wav")
    request = EmotionRequest(video_path=str(clip), audio_path=str(wav) if wav.exists() else None,
                             text=str(ingested["text"][0]), speaker=str(ingested["speaker"][0]),
                             gender=ingested["gender"][0], age=ingested["age"][0])
    served_row = EmotionDecoder(read_card(served["cfg"].video_checkpoint).data_info).row(request)
    served_batch = {c: [served_row[c]] for c in served_row}
    for checkpoint in (served["cfg"].video_checkpoint, served["cfg"].audio_text_checkpoint):
        model_config = read_card(checkpoint).model_config
        a, b = model_batch_inputs(model_config, ingested), model_batch_inputs(model_config, served_batch)
        for name in a.__dataclass_fields__:
            left, right = getattr(a, name), getattr(b, name)
            assert (left is None) == (right is None), name
            if left is not None:
                torch.testing.assert_close(left, right, rtol=0, atol=0, equal_nan=True,
                                           msg=f"{model_config.kind}: {name} differs")
    assert served_row["has_video"] and ingested["has_video"][0]


@pytest.fixture(scope="module")
def http(served, serve_port):
    from ray import serve

    from deepfusion.serving.app import build_app

    yield deploy(build_app(served["cfg"]), "deepfusion", serve_port)
    serve.delete("deepfusion")


def post_emotion(http, files=None, **data):
    return requests.post(f"{http}/v1/emotion", files=files or {}, data=data, timeout=120)


def test_emotion_over_http_equals_the_in_process_pipeline(served, http):
    clip = demo_clip(served)
    with open(clip, "rb") as video:
        response = post_emotion(http, files={"video": ("clip.mp4", video, "video/mp4")},
                                text="I can't believe you did that!", speaker="Devon", gender="female", age="31")
    assert response.status_code == 200, response.text
    body = response.json()
    cfg = served["cfg"]
    expected = EmotionRecognizer.from_checkpoint(cfg.fusion_checkpoint).predict(
        video=clip, text="I can't believe you did that!", speaker="Devon", gender="female", age=31.0)
    assert set(body) == set(expected)  # the Python API answers with the HTTP API's fields
    assert set(body["latency_ms"]) == set(expected["latency_ms"]) and body["modalities"] == expected["modalities"]
    assert body["emotion"] == expected["emotion"]
    assert body["individual_predictions"] == expected["individual_predictions"]
    assert body["fusion_weights"] == pytest.approx(expected["fusion_weights"])
    assert body["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
    assert set(body["probabilities"]) == set(served["meld"].label_names)
    assert set(body["latency_ms"]) == {"preprocess", "video", "audio_text", "fusion", "total"}
    assert body["modalities"]["video"] and body["modalities"]["text"]


@pytest.mark.usefixtures("ray_head")
def test_batch_prediction_gives_what_the_served_app_answers_over_http(served, http, tmp_path):
    """`deepfusion predict` (on the session's head: Ray Data decoders and model actors) on demo clips
    with transcripts and speakers, and the same clips POSTed to /v1/emotion: the same
    predictions, probabilities to 1e-5, per-model predictions and fusion weights."""
    import pandas as pd

    clips = sorted((served["demo"] / "meld" / "test").glob("*.mp4"))[:5]
    rows = [{"sample_id": clip.stem, "video": str(clip), "text": f"Is this clip {i} happy?", "speaker": "Devon"}
            for i, clip in enumerate(clips)]
    pd.DataFrame(rows).to_csv(tmp_path / "clips.csv", index=False)
    config = tmp_path / "predict.yaml"
    config.write_text("ray: {num_cpus: 1}\npredict:\n  decode: {num_cpus: 0.25, concurrency: 1}\n"
                      "  model: {num_cpus: 0.25, batch_size: 4}\n")
    done = run_in_own_session([str(Path(sys.executable).parent / "deepfusion"), "predict", "--config", str(config),
                               "--checkpoint", str(served["cfg"].fusion_checkpoint), "--data",
                               str(tmp_path / "clips.csv"), "--out", str(tmp_path / "out"), "--csv"],
                              env=job_env(), timeout=300, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "(manifest; n=5; video+audio: 5): 5 predicted, 0 already done, 0 quarantined" in done.stdout, done.stdout
    table = pd.read_csv(tmp_path / "out" / "predictions.csv").set_index("sample_id")
    for row in rows:
        with open(row["video"], "rb") as video:
            response = post_emotion(http, files={"video": ("clip.mp4", video, "video/mp4")}, text=row["text"],
                                    speaker=row["speaker"])
        assert response.status_code == 200, response.text
        body, predicted = response.json(), table.loc[row["sample_id"]]
        assert predicted["emotion"] == body["emotion"]
        assert predicted["confidence"] == pytest.approx(body["confidence"], abs=1e-5)
        for name, p in body["probabilities"].items():
            assert predicted[f"prob_{name}"] == pytest.approx(p, abs=1e-5), name
        assert [predicted["video_emotion"], predicted["audio_text_emotion"]] == [
            body["individual_predictions"]["video"], body["individual_predictions"]["audio_text"]]
        assert [predicted["fusion_weight_video"], predicted["fusion_weight_audio_text"]] == pytest.approx(
            body["fusion_weights"], abs=1e-6)


def test_any_modality_may_be_absent(served, http):
    text_only = post_emotion(http, text="Oh my God, that is amazing!")
    assert text_only.status_code == 200, text_only.text
    assert text_only.json()["modalities"] == {"video": False, "audio": False, "text": True}
    wav = next((served["demo"] / "meld" / "train").glob("*.wav"), None)
    if wav is not None:
        with open(wav, "rb") as audio:
            audio_only = post_emotion(http, files={"audio": ("a.wav", audio, "audio/wav")})
        assert audio_only.status_code == 200, audio_only.text
        assert audio_only.json()["modalities"]["audio"]


def test_textile_over_http(served, http):
    image = sorted((served["demo"] / "textile").rglob("*.jpg"))[0]
    with open(image, "rb") as handle:
        response = requests.post(f"{http}/v1/textile", files={"image": ("x.jpg", handle, "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = TextileClassifier(served["cfg"].textile_checkpoint)
    [want] = expected.classify([expected.row(image.read_bytes())])
    assert body["class"] == want["class"] and body["confidence"] == pytest.approx(want["confidence"], abs=1e-5)


def test_models_health_and_openapi(served, http):
    assert requests.get(f"{http}/healthz", timeout=10).json() == {"status": "ok"}
    models = requests.get(f"{http}/v1/models", timeout=30).json()
    assert set(models) == {"video", "audio_text", "fusion", "textile"}
    assert models["video"]["sha256"] == read_card(served["cfg"].video_checkpoint).content_hash
    assert models["video"]["preset"] == "cpu-small" and len(models["audio_text"]["labels"]) == 7
    # cpu-small: a ResNet-10 and a small Wav2Vec2 from scratch; the MiniLM text encoder is pretrained
    assert models["video"]["random_init"] == ["image_backbone"] and models["audio_text"]["random_init"] == [
        "audio_encoder"]
    # the image classifier's classes: its data's (no classes declared: the folders, by name)
    assert models["textile"]["labels"] == served["textile"].label_names == [
        "clothes_dump", "textile_billboard", "textile_dye"]
    paths = requests.get(f"{http}/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/emotion", "/v1/textile", "/v1/models", "/healthz"} <= set(paths)


def test_serve_already_up_on_another_port_keeps_it_and_the_url_says_so(http, caplog):
    """Serve's HTTP options are fixed once it runs: asking for another port deploys where it
    listens, says so, and hands back that URL rather than one nothing answers on."""
    from deepfusion.ray_runtime import start_serve

    (other,) = free_ports(1)
    with caplog.at_level("WARNING", logger="deepfusion.ray_runtime"):
        url = start_serve("127.0.0.1", other)
    assert url == http != f"http://127.0.0.1:{other}"
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    assert f"Serve already runs on this cluster at 127.0.0.1:{http.rsplit(':', 1)[1]} (not 127.0.0.1:{other}" \
        in caplog.text


def test_concurrent_requests_reach_the_models_in_batches(served, http):
    """Requests that arrive while a backbone computes wait and form its next batch (with
    ``@serve.batch`` and no wait, Ray 2.60 computed each one alone). /v1/models says how
    each model's batches formed."""
    from concurrent.futures import ThreadPoolExecutor

    def batches():
        models = requests.get(f"{http}/v1/models", timeout=30).json()
        return {name: models[name]["batches"] for name in ("video", "audio_text")}

    before = batches()
    clip = demo_clip(served).read_bytes()
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda i: post_emotion(http, files={"video": ("v.mp4", clip, "video/mp4")},
                                                     text=f"take {i}").status_code, range(24)))
    assert codes == [200] * 24
    for name, after in batches().items():
        assert after["max_batch_size"] == 8 and after["requests"] - before[name]["requests"] == 24
        new = {int(size): count - before[name]["by_size"].get(size, 0) for size, count in after["by_size"].items()}
        assert sum(size * count for size, count in new.items()) == 24
        assert max(size for size, count in new.items() if count) > 1, (name, new)
    assert requests.get(f"{http}/v1/models", timeout=30).json()["fusion"].get("batches") is None


def test_api_docs_work_offline_and_document_every_answer_field_by_field(http):
    """/docs and /redoc load every asset from the app itself (none from a CDN), and the
    schema documents the answers and every error status with the body it really sends."""
    import re

    for page in ("/docs", "/redoc"):
        html = requests.get(f"{http}{page}", timeout=10)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        references = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"""url: ?['"]([^'"]+)['"]""",
                                                                                   html.text)
        references += re.findall(r'spec-url="([^"]+)"', html.text)
        assert references and not [r for r in references if "//" in r], (page, references)  # all on this host
        for reference in references:
            asset = requests.get(f"{http}{reference}", timeout=30)
            assert asset.status_code == 200 and len(asset.content) > 100, (page, reference, asset.status_code)
    scripts = {r for r in re.findall(r'src="([^"]+)"', requests.get(f"{http}/docs", timeout=10).text)}
    assert any(r.endswith("swagger-ui-bundle.js") for r in scripts)
    spec = requests.get(f"{http}/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]

    def schema_of(path: str, status: str) -> dict:
        ref = spec["paths"][path]["post" if path != "/v1/models" else "get"]["responses"][status]
        return schemas[ref["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]

    assert set(schema_of("/v1/emotion", "200")["properties"]) == {
        "emotion", "confidence", "probabilities", "individual_predictions", "fusion_weights", "modalities",
        "latency_ms"}
    assert set(schema_of("/v1/textile", "200")["properties"]) == {"class", "confidence", "probabilities",
                                                                  "latency_ms"}
    assert set(schema_of("/v1/models", "200")["properties"]) >= {"video", "audio_text", "fusion", "textile"}
    for status in ("400", "401", "411", "413", "415", "422", "504"):
        assert schema_of("/v1/emotion", status)["properties"]["detail"]["$ref"].endswith("/ErrorDetail"), status
    assert "Retry-After" in spec["paths"]["/v1/emotion"]["post"]["responses"]["503"]["headers"]
    assert "HTTPValidationError" not in schemas  # FastAPI's list form is never sent


# -- the demo page, in a real headless browser (before the tests below replace the app) -----------

@pytest.fixture(scope="module")
def page(http):
    with browser_page() as tab:
        yield tab


def test_the_demo_page_shows_what_the_api_answers_for_an_uploaded_clip(served, http, page, tmp_path):
    clip = demo_clip(served)
    utterance = "You got the job? That's amazing!"
    open_demo_page(page, http)
    assert "mimamo" in page.inner_text("#models") and "textile" in page.inner_text("#models")
    page.set_input_files("#video", str(clip))
    page.fill("#text", utterance)
    page.fill("#speaker", "Devon")
    page.click("#emotion-submit")
    page.wait_for_selector("#emotion-result", state="visible")
    with open(clip, "rb") as video:
        api = post_emotion(http, files={"video": (clip.name, video, "video/mp4")}, text=utterance,
                           speaker="Devon").json()
    assert page.inner_text("#result-emotion") == api["emotion"]
    assert page.inner_text("#result-confidence") == f"{100 * api['confidence']:.1f} %"
    for emotion, probability in api["probabilities"].items():  # a bar and its value per class
        assert page.inner_text(f"#result-bars .value[data-label='{emotion}']") == f"{100 * probability:.1f} %"
        width = page.eval_on_selector(f"#result-bars .bar[data-label='{emotion}'] > div", "e => e.style.width")
        assert width.endswith("%") and float(width[:-1]) == pytest.approx(100 * probability, abs=0.051), width
    for role in ("video", "audio_text"):
        assert page.inner_text(f"#individual-{role}") == api["individual_predictions"][role]
    assert [page.inner_text("#weight-video"), page.inner_text("#weight-audio_text")] == [
        f"{w:.3f}" for w in api["fusion_weights"]]
    assert page.inner_text("#result-modalities") == "video, audio, text"
    latency = page.inner_text("#result-latency")
    assert all(stage in latency for stage in ("preprocess", "video", "audio_text", "fusion", "total"))
    assert page.is_hidden("#emotion-error")
    shot = tmp_path / "demo_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_the_demo_page_shows_api_errors_as_readable_messages(served, http, page, tmp_path):
    open_demo_page(page, http)
    fake = tmp_path / "holiday.mp4"  # a photo under a video's name: the browser declares video/mp4
    fake.write_bytes(next((served["demo"] / "textile").rglob("*.jpg")).read_bytes())
    page.set_input_files("#video", str(fake))
    page.click("#emotion-submit")
    page.wait_for_selector("#emotion-error", state="visible")
    message = page.inner_text("#emotion-error")
    assert message.startswith("Unsupported file in \u201cvideo\u201d") and "bytes are jpeg" in message, message
    assert page.is_hidden("#emotion-result")
    page.set_input_files("#video", [])
    page.fill("#text", "x" * 201)  # over serve.limits.max_text_chars (200 here)
    page.click("#emotion-submit")
    page.wait_for_function("document.getElementById('emotion-error').textContent.includes('text')")
    message = page.inner_text("#emotion-error")
    assert message.startswith("Please check \u201ctext\u201d") and "limit is 200" in message, message


def test_the_demo_page_classifies_an_uploaded_image_as_the_api_does(served, http, page):
    image = sorted((served["demo"] / "textile").rglob("*.jpg"))[0]
    open_demo_page(page, http)
    page.set_input_files("#image", str(image))
    page.click("#textile-submit")
    page.wait_for_selector("#textile-result", state="visible")
    with open(image, "rb") as handle:
        api = requests.post(f"{http}/v1/textile", files={"image": (image.name, handle, "image/jpeg")},
                            timeout=60).json()
    assert page.inner_text("#textile-class") == api["class"]
    assert page.inner_text("#textile-confidence") == f"{100 * api['confidence']:.1f} %"


@pytest.mark.parametrize("case", ["corrupt_mp4", "wrong_type", "too_large", "long_text", "nothing", "bad_age",
                                  "not_multipart", "corrupt_image", "bad_context"])
def test_bad_input_gets_a_4xx_json_error_and_the_app_stays_up(served, http, case, tmp_path):
    clip = demo_clip(served).read_bytes()
    if case == "corrupt_mp4":
        response = post_emotion(http, files={"video": ("v.mp4", clip[: len(clip) // 3], "video/mp4")})
        expected, field = 422, "video"
    elif case == "wrong_type":
        response = post_emotion(http, files={"video": ("v.gif", b"GIF89a", "image/gif")})
        expected, field = 415, "video"
    elif case == "too_large":
        response = post_emotion(http, files={"video": ("v.mp4", b"\0" * (1024 * 1024 + 10), "video/mp4")})
        expected, field = 413, "video"
    elif case == "long_text":
        response = post_emotion(http, text="x" * 201)
        expected, field = 422, "text"
    elif case == "nothing":
        response = post_emotion(http, speaker="Devon")
        expected, field = 422, "video"
    elif case == "bad_age":
        response = post_emotion(http, text="hi", age="old")
        expected, field = 422, None
    elif case == "bad_context":
        response = post_emotion(http, text="hi", context='[{"speaker": "Ross"}]')  # a turn without text
        expected, field = 422, "context"
    elif case == "not_multipart":
        # a JSON body is not form data: no field arrives, so there is nothing to recognise
        response = requests.post(f"{http}/v1/emotion", json={"text": "hi"}, timeout=30)
        expected, field = 422, "video"
    else:  # corrupt_image
        junk_jpeg = ("x.jpg", b"\xff\xd8\xff\xe0junk", "image/jpeg")
        response = requests.post(f"{http}/v1/textile", files={"image": junk_jpeg},
                                 timeout=30)
        expected, field = 422, "image"
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    # one error shape for every 4xx, FastAPI's own validation errors included
    assert detail["field"] == (field or "age") and detail["error"]
    if field is None:
        assert detail["errors"][0]["loc"][-1] == "age"
    # the replicas survived: a good request still works
    assert post_emotion(http, text="fine").status_code == 200


def test_a_fusion_model_of_other_backbones_is_refused(served, tmp_path):
    from deepfusion.serving.app import build_app

    other = save_backbone(tmp_path / "other", served["meld"], MimamoConfig(kind="mimamo", preset="cpu-small"), 9)
    with pytest.raises(ConfigError, match="fitted on a video_checkpoint with sha256"):
        build_app(served["cfg"].model_copy(update={"video_checkpoint": other}))


def test_serve_deploy_of_a_written_config_file_from_another_folder_comes_up_healthy(served, ray_head, tmp_path):
    """A project whose experiment config names its checkpoints relatively: `deepfusion serve
    --write-serve-config` writes a Serve config file with absolute paths; `serve deploy` of
    it from another folder onto a `ray start --head` comes up (then `serve status`)."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "work").mkdir()
    cfg = served["cfg"]
    links = {"video_checkpoint": cfg.video_checkpoint, "audio_text_checkpoint": cfg.audio_text_checkpoint,
             "fusion_checkpoint": cfg.fusion_checkpoint, "textile_checkpoint": cfg.textile_checkpoint}
    for field, checkpoint in links.items():
        (project / "work" / field).symlink_to(checkpoint)
    [port] = free_ports(1)
    (project / "configs" / "serve.yaml").write_text(yaml.safe_dump({"serve": {
        **{field: f"work/{field}" for field in links}, "http_port": port}}))
    command = str(Path(sys.executable).parent / "deepfusion")
    written = subprocess.run([command, "serve", "--config", "configs/serve.yaml", "--set",
                              "serve.limits.max_text_chars=500", "--write-serve-config", "deploy.yaml"],
                             cwd=project, capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr[-2000:]
    config_file = project / "deploy.yaml"
    config = yaml.safe_load(config_file.read_text())
    assert config["http_options"]["port"] == port
    [application] = config["applications"]
    repository_default = yaml.safe_load((REPO_ROOT / "serve" / "config.yaml").read_text())["applications"][0]
    assert application["import_path"] == repository_default["import_path"] == "deepfusion.serving.app:app_builder"
    assert application["args"] == {"config": str(project / "configs" / "serve.yaml"),
                                   "set": ["serve.limits.max_text_chars=500"], "workdir": str(project)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = str(Path(sys.executable).parent / "serve")
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # the CLI sends the local token only then
    deployed = subprocess.run([cli, "deploy", str(config_file), "--address", ray_head], env=env, cwd=elsewhere,
                              capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    # wait on Serve's REST API (what `serve status` reads), then show it as users see it
    headers = {"Authorization": "Bearer " + subprocess.run([str(Path(sys.executable).parent / "ray"),
                                                            "get-auth-token"], capture_output=True, text=True,
                                                           check=True).stdout.strip()}
    deadline, app = time.monotonic() + 240, {}
    while app.get("status") not in ("RUNNING", "DEPLOY_FAILED"):
        assert time.monotonic() < deadline, f"the app is not up within 240 s: {app}"
        time.sleep(0.25)
        apps = requests.get(f"{ray_head}/api/serve/applications/", headers=headers, timeout=30).json()
        app = apps.get("applications", {}).get("deepfusion", {})
    status = subprocess.run([cli, "status", "--address", ray_head], env=env, capture_output=True, text=True,
                            timeout=60).stdout
    assert "status: RUNNING" in status, status
    assert status.count("status: HEALTHY") >= 5, status  # the five deployments
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}


def test_a_killed_model_replica_is_replaced_and_only_its_in_flight_requests_fail(served, http):
    """Steady traffic from two clients; the MIMAMO replica is SIGKILLed. Requests it was
    working on get a retryable 503 (never a 500); the controller starts a replacement;
    requests sent meanwhile wait for it; none fails after it is up."""
    import json
    import signal
    import threading

    from ray import serve

    def mimamo_replicas():
        return ray_actors("ServeReplica:deepfusion:mimamo", state="ALIVE")

    clip = demo_clip(served).read_bytes()
    records, stop = [], threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = session.post(f"{http}/v1/emotion", files={"video": ("v.mp4", clip, "video/mp4")},
                                            data={"text": "steady traffic"}, timeout=120)
                    outcome = (response.status_code, response.json())
                except requests.RequestException as err:  # a dropped connection would land here
                    outcome = (type(err).__name__, None)
                records.append((started, time.monotonic(), *outcome))

    def wait_for(answered: int, since: float, timeout: float = 120) -> None:
        """Until ``answered`` requests sent after ``since`` have their answer (traffic, not time)."""
        deadline = time.monotonic() + timeout
        while sum(1 for r in records if r[0] >= since) < answered:
            assert time.monotonic() < deadline, f"fewer than {answered} answers within {timeout} s: {records}"
            time.sleep(0.02)

    [victim] = mimamo_replicas()
    clients = [threading.Thread(target=client) for _ in range(2)]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    wait_for(4, started)  # steady state: both clients answered
    killed_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        replacements = [a for a in mimamo_replicas() if a["actor_id"] != victim["actor_id"]]
        app = serve.status().applications["deepfusion"]
        if replacements and app.deployments["mimamo"].status == "HEALTHY" and app.status == "RUNNING":
            break
        assert time.monotonic() < deadline, "no healthy replacement replica within 120 s"
        time.sleep(0.2)
    recovered_at = time.monotonic()
    wait_for(4, recovered_at)  # steady traffic on the replacement
    stop.set()
    for thread in clients:
        thread.join(timeout=150)

    failed = [r for r in records if r[2] != 200]
    after_recovery = [r for r in records if r[0] >= recovered_at]
    summary = {"fault": "serve_replica_killed", "requests": len(records), "failed": len(failed),
               "failed_statuses": sorted({str(r[2]) for r in failed}),
               "in_flight_at_kill": sum(1 for r in records if r[0] < killed_at < r[1]),
               "recovery_s": round(recovered_at - killed_at, 2), "after_recovery": len(after_recovery),
               "after_recovery_failed": sum(1 for r in after_recovery if r[2] != 200)}
    print("FAULT " + json.dumps(summary))
    # only the killed replica's requests: a retryable 503 that names the MIMAMO deployment
    assert all(r[2] == 503 and r[3]["detail"]["retryable"] and r[3]["detail"]["deployment"] == "mimamo"
               for r in failed), failed
    assert all(r[0] < killed_at for r in failed), "a request sent after the kill failed"
    assert len(failed) <= summary["in_flight_at_kill"] <= 2
    assert len(after_recovery) >= 2 and summary["after_recovery_failed"] == 0, summary
    assert post_emotion(http, text="after the fault").status_code == 200


@pytest.fixture
def small_app(served, http):
    """The module's application replaced, for one test, by one that admits 2 model requests
    at a time (serve.admission.max_in_flight) and has no textile model; put back after."""
    from ray import serve

    from deepfusion.serving.app import build_app

    small = served["cfg"].model_copy(update={
        "textile_checkpoint": None, "admission": served["cfg"].admission.model_copy(update={"max_in_flight": 2})})
    serve.run(build_app(small), name="deepfusion", route_prefix="/")
    yield http
    serve.run(build_app(served["cfg"]), name="deepfusion", route_prefix="/")  # the module's app again


def held_upload(url: str, clip: bytes) -> tuple[HTTPConnection, bytes]:
    """A POST /v1/emotion whose headers and first bytes are sent: admitted, and in flight
    until the rest of its body (returned) is sent."""
    prepared = requests.Request("POST", f"{url}/v1/emotion", files={"video": ("v.mp4", clip, "video/mp4")},
                                data={"text": "held"}).prepare()
    host, port = url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=120)
    connection.putrequest("POST", "/v1/emotion")
    for name, value in prepared.headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(prepared.body[:64])
    return connection, prepared.body[64:]


def test_overload_gets_quick_503s_not_a_pile_up(served, small_app):
    """Past serve.admission.max_in_flight model requests, the ingress answers 503 at once,
    before reading the body, telling the client when to retry; the admitted ones are
    answered when they complete, and the app stays up. Two uploads are held half-sent to
    keep the limit reached for as long as the test needs (no race with their compute)."""
    clip = demo_clip(served).read_bytes()
    held = [held_upload(small_app, clip) for _ in range(2)]

    def refused_by_admission(response) -> bool:
        return response.status_code == 503 and response.headers["content-type"] == "application/json" \
            and response.json()["detail"].get("limit") == "serve.admission.max_in_flight"

    # the held two are admitted as soon as the ingress has their headers: until then a probe
    # may itself be admitted (and answered 200)
    deadline = time.monotonic() + 60
    while not refused_by_admission(probe := post_emotion(small_app, text="probe")):
        assert probe.status_code == 200 and time.monotonic() < deadline, probe.text
    # every further model request is refused at once, while the admitted ones are still in flight
    refused = [post_emotion(small_app, files={"video": ("v.mp4", clip, "video/mp4")}, text="again!")
               for _ in range(6)]
    assert all(refused_by_admission(r) for r in refused), [(r.status_code, r.text) for r in refused]
    assert {r.headers.get("retry-after") for r in refused} == {"1"}
    details = [r.json()["detail"] for r in refused]
    assert all(d == {**d, "deployment": "ingress", "retryable": True} for d in details), details
    assert "limit of 2 model requests" in details[0]["error"]
    assert requests.get(f"{small_app}/healthz", timeout=10).status_code == 200  # not a model request
    # the held uploads complete and are answered
    for connection, rest in held:
        connection.send(rest)
        response = connection.getresponse()
        assert response.status == 200, response.read()[:500]
        assert json.loads(response.read())["modalities"]["video"]
        connection.close()
    assert post_emotion(small_app, text="still alive").status_code == 200


def test_serve_environment_is_set_explicitly_and_puts_serve_in_throughput_optimized_mode():
    """Importing deepfusion changes no environment; ``use_serve_environment()`` before
    ray.serve is imported (what connect, app_builder and the pipeline call) turns Serve's
    throughput mode on, a driver's handles keep it, and RAY_SERVE_THROUGHPUT_OPTIMIZED=0
    keeps it off. ``make serve`` takes the same variables from ``serve-env``."""
    probe = ("import os, deepfusion.serving, deepfusion.inference.emotion, deepfusion.ray_runtime as rt\n"
             "print(os.environ.get('RAY_SERVE_THROUGHPUT_OPTIMIZED', 'unset'))\n"
             "rt.use_serve_environment()\n"
             "from ray.serve._private import constants, handle_options\n"
             "print(constants.RAY_SERVE_THROUGHPUT_OPTIMIZED, handle_options.DynamicHandleOptions()._by_reference)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # unset on import; then gRPC between deployments, not object refs
    assert result.stdout.split() == ["unset", "True", "False"]
    off = subprocess.run([sys.executable, "-c", probe], env={**env, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
                         capture_output=True, text=True, timeout=120)
    assert off.stdout.split() == ["0", "False", "True"], off.stderr[-2000:]
    serve_env = [sys.executable, "-m", "deepfusion.ray_runtime", "serve-env"]
    assert subprocess.run(serve_env, env=env, capture_output=True, text=True, timeout=60,
                          check=True).stdout.split() == ["RAY_SERVE_THROUGHPUT_OPTIMIZED=1"]
    assert subprocess.run(serve_env, env={**env, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}, capture_output=True,
                          text=True, timeout=60, check=True).stdout.split() == ["RAY_SERVE_THROUGHPUT_OPTIMIZED=0"]

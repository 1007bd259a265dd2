"""The pipeline's last stage: deploy the Serve app on the models just made, ask it once.

The request is a real test sample of the pipeline's emotion dataset (MELD, a manifest or
a speech corpus: its clip, audio, transcript and speaker), sent over HTTP as any client
would; the answer goes into the report. An app that serves no emotion model is asked for
its ``/v1/models``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from deepfusion.config.preprocess import ManifestDataset, MeldDataset, SpeechDataset
from deepfusion.ray_runtime import start_serve, use_serve_environment
from deepfusion.workflows.pipeline_plan import PipelinePlan

log = logging.getLogger("deepfusion.pipeline")
APP_NAME = "deepfusion"  # the name serve/config.yaml uses: the pipeline deploys over it


def deploy_and_ask(plan: PipelinePlan) -> dict:
    use_serve_environment()  # Serve's throughput mode, before ray.serve is imported
    from ray import serve

    from deepfusion.serving.app import build_app

    _, stage, cfg = plan.serve
    address = urlparse(stage.url)
    # where Serve really listens: a cluster already serving on another port keeps that port
    url = start_serve(address.hostname, address.port or 80, cfg.request_timeout_s)
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
    _wait_healthy(url, stage.ready_timeout_s)
    headers = {}
    if cfg.auth is not None:
        from deepfusion.serving.guard import read_token

        headers["Authorization"] = f"Bearer {read_token(cfg.auth)}"
    if not (cfg.video_checkpoint or cfg.audio_text_checkpoint or cfg.fusion_checkpoint):
        response = requests.get(f"{url}/v1/models", headers=headers, timeout=60)
        sample = None
    else:
        sample = test_utterance(plan)
        files = {}
        for field, path in (("video", sample["video_path"]), ("audio", sample["audio_path"])):
            if path and (field == "video" or path != sample["video_path"]):  # not the video's own track again
                # the bytes say what the file is: no content type to guess from its name
                files[field] = (Path(path).name, Path(path).read_bytes(), "application/octet-stream")
        response = requests.post(f"{url}/v1/emotion", files=files or None, headers=headers,
                                 data={"text": sample["text"], "speaker": sample["speaker"]}, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"the Serve app at {url} answered {response.status_code}: {response.text[:500]}")
    answer = response.json()
    if stage.keep_running:
        log.info("the Serve app stays up at %s (serve status / serve shutdown)", url)
    else:
        # Not waiting for the replicas' graceful shutdown (~30 s here): the answer is in.
        # _blocking is private but documented in serve.delete's signature; the public
        # default (True) waits ~30 s for graceful replica shutdown after the answer is in.
        serve.delete(APP_NAME, _blocking=False)
    request = None if sample is None else {
        "sample": sample["sample_id"], "video": sample["video_path"], "audio": sample["audio_path"],
        "text": sample["text"], "speaker": sample["speaker"], "true_emotion": sample["emotion"]}
    return {"url": url, "request": request, "response": answer}


def test_utterance(plan: PipelinePlan) -> dict:
    """The first test-split sample (with a video when any has one) of the pipeline's first
    emotion dataset, read by its layout's own reader."""
    from deepfusion.sources.manifest import scan_manifest
    from deepfusion.sources.meld import scan_meld
    from deepfusion.sources.speech import scan_speech

    emotion = [d for d in (plan.experiment.preprocess.datasets if plan.experiment.preprocess else [])
               if isinstance(d, (MeldDataset, ManifestDataset, SpeechDataset))]
    if not emotion:
        raise ValueError(f"{plan.source}: the serve stage needs an emotion dataset (meld, manifest or speech) in "
                         f"the preprocess section to take a test sample from")
    dataset = emotion[0]
    if isinstance(dataset, ManifestDataset):
        records, _, _ = scan_manifest(dataset)
    else:
        records, _ = (scan_meld if isinstance(dataset, MeldDataset) else scan_speech)(dataset)
    test = [r for r in records if r["split"] == "test"] or records
    with_video = [r for r in test if r["video_path"]]
    return (with_video or test)[0]


def _wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Serve app did not answer {url}/healthz within {timeout_s:g} s")
        time.sleep(0.5)

"""The pipeline's last stage: deploy the Serve app on the models just made, ask it once.

The request is a real test utterance of the pipeline's MELD dataset (its mp4, transcript
and speaker), sent over HTTP as any client would; the answer goes into the report.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from deepfusion.config.preprocess import MeldDataset
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
    sample = test_utterance(plan)
    files = {}
    if sample["video_path"]:
        video = Path(sample["video_path"])
        files["video"] = (video.name, video.read_bytes(), "video/mp4")
    headers = {}
    if cfg.auth is not None:
        from deepfusion.serving.guard import read_token

        headers["Authorization"] = f"Bearer {read_token(cfg.auth)}"
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
    return {"url": url,
            "request": {"sample": sample["sample_id"], "video": sample["video_path"], "text": sample["text"],
                        "speaker": sample["speaker"], "true_emotion": sample["emotion"]},
            "response": answer}


def test_utterance(plan: PipelinePlan) -> dict:
    """The first test-split utterance (with a video when any has one) of the pipeline's MELD data."""
    from deepfusion.sources.meld import scan_meld

    meld = [d for d in (plan.experiment.preprocess.datasets if plan.experiment.preprocess else [])
            if isinstance(d, MeldDataset)]
    if not meld:
        raise ValueError(f"{plan.source}: the serve stage needs a MELD dataset in the preprocess section "
                         f"to take a test utterance from")
    records, _ = scan_meld(meld[0])
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

"""The ``serve`` section: which checkpoints the HTTP application serves, its limits and sizes.

Preprocessing settings (frames, frame size, audio rate, tokenizer, image size) are not
configured here: they come from each checkpoint's card (``card.json``, its ``data_info``),
the preprocessing its training data went through, so serving cannot drift from training.
"""

from __future__ import annotations

from pydantic import Field

from deepfusion.config.base import StrictModel, WorkPath


class DeploymentSection(StrictModel):
    """One Serve deployment's size. Fractional CPUs: on 2 cores, whole ones never fit."""

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    # Requests a replica works on at once, and how many may wait for one; beyond that,
    # Serve answers 503 at once instead of queueing without bound.
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=-1)
    # @serve.batch on model deployments (ignored by the ingress). No wait by default: under
    # load, requests queue while the previous batch computes and the next batch takes them
    # all; a wait only delays a lone request.
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.0, ge=0)
    # How long a replica being stopped (redeploy, scale-down, serve shutdown) may finish
    # its requests; ours take well under a second. Serve's default is 20 s.
    graceful_shutdown_timeout_s: float = Field(5.0, ge=0)


class RequestLimits(StrictModel):
    max_upload_mb: float = Field(25.0, gt=0)  # per file
    max_text_chars: int = Field(2000, ge=1)


class ServeSection(StrictModel):
    video_checkpoint: WorkPath  # MIMAMO Net
    audio_text_checkpoint: WorkPath  # Multimodal LSTM
    fusion_checkpoint: WorkPath  # Enhanced Late Fusion (jobs.tune_fusion's export)
    textile_checkpoint: WorkPath | None = None  # TextilePollutionNet; None: no /v1/textile
    limits: RequestLimits = RequestLimits()
    ingress: DeploymentSection = DeploymentSection(max_ongoing_requests=32, max_queued_requests=64)
    video: DeploymentSection = DeploymentSection()
    audio_text: DeploymentSection = DeploymentSection()
    fusion: DeploymentSection = DeploymentSection(num_cpus=0.1)
    textile: DeploymentSection = DeploymentSection()
    # Host and port of Serve's HTTP proxy when a job (not `serve run`) starts it.
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)

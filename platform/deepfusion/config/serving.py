"""The ``serve`` section: which checkpoints the HTTP application serves, its limits and sizes.

Any trained subset is served: one emotion backbone alone (``video_checkpoint`` or
``audio_text_checkpoint``: a video-only, audio-only, text-only or audio+text model), two
backbones and their fusion (``fusion_checkpoint``; the backbones default to the ones its
card names), an image classifier alone (``textile_checkpoint``), or emotion and images.

Preprocessing settings (frames, frame size, audio rate, tokenizer, image size) are not
configured here: they come from each checkpoint's card (``card.json``, its ``data_info``),
the preprocessing its training data went through, so serving cannot drift from training.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from deepfusion.config.base import StoragePath, StrictModel, WorkPath
from deepfusion.config.preprocess import MediaLimits


class DeploymentSection(StrictModel):
    """One Serve deployment's size. Fractional CPUs: on 2 cores, whole ones never fit."""

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    # Requests a replica works on at once, and how many may wait for one; beyond that,
    # Serve answers 503 at once, with a Retry-After of retry_after_s seconds (rounded up),
    # instead of queueing without bound.
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=-1)
    retry_after_s: float | None = Field(1.0, ge=0)

    @field_validator("max_queued_requests")
    @classmethod
    def _queue_or_unbounded(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 is not a queue length Serve takes: use 1 or more, or -1 for no limit")
        return value
    # Batching on model deployments (``serving.batching``; ignored by the ingress). No wait by
    # default: under load, requests queue while the previous batch computes and the next
    # batch takes them all; a wait only delays a lone request.
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.0, ge=0)
    # How long a replica being stopped (redeploy, scale-down, serve shutdown) may finish
    # its requests; ours take well under a second. Serve's default is 20 s.
    graceful_shutdown_timeout_s: float = Field(5.0, ge=0)


class IngressSection(DeploymentSection):
    """The ingress deployment: room above ``serve.admission.max_in_flight`` (which must stay
    below its ``max_ongoing_requests``), whichever of its fields a config sets."""

    max_ongoing_requests: int = Field(32, ge=1)


class RequestLimits(StrictModel):
    """What one HTTP request may cost the application."""

    max_upload_mb: float = Field(25.0, gt=0)  # per file
    # The whole request body: refused by its Content-Length before any of it is read, and
    # counted while it arrives (a chunked upload is cut off at the limit). None: room for
    # two uploads of max_upload_mb and 1 MB of form fields.
    max_request_mb: float | None = Field(None, gt=0)
    # A POST without Content-Length (chunked transfer) is refused with 411 before any of it is
    # read: Serve's HTTP server buffers such a body in the replica even after the app has
    # stopped reading it at the limit. False: accept it, cut off at max_request_mb.
    require_content_length: bool = True
    max_text_chars: int = Field(2000, ge=1)
    # Caps on decoding an upload (frames, seconds, pixels, formats, wall clock): the same
    # model ingestion uses, so a file refused here is the file ingestion would quarantine.
    media: MediaLimits = MediaLimits()

    @property
    def request_bytes(self) -> int:
        mb = self.max_request_mb if self.max_request_mb is not None else 2 * self.max_upload_mb + 1
        return int(mb * 1024 * 1024)

    @property
    def upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class AuthSection(StrictModel):
    """Bearer-token authentication for every route but ``/healthz``: clients send
    ``Authorization: Bearer <token>``. The token is read by each ingress replica, from a
    file on its node or from an environment variable of its process, never from this config."""

    token_file: WorkPath | None = None
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> AuthSection:
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError("set exactly one of token_file and token_env")
        return self


class AdmissionSection(StrictModel):
    """How much model work one ingress replica takes on at once. A /v1/emotion or
    /v1/textile request that finds ``max_in_flight`` others in the replica is answered 503
    at once, with ``Retry-After``, before its body is read: past the machine's capacity,
    a request would only wait behind the others (at 32 clients on 2 cores, for 2 s).
    About two model batches keep both backbones busy; raise it with the hardware."""

    max_in_flight: int | None = Field(16, ge=1)  # None: no limit (Serve's own queue decides)
    retry_after_s: int = Field(1, ge=1)  # whole seconds, as HTTP's Retry-After counts them


class ServeSection(StrictModel):
    # Each checkpoint is a folder or a storage URI (s3://bucket/fusion/best): every replica
    # reads it on its own node, into that node's mirror of the store.
    # A backbone that reads video (MIMAMO Net); alone, or the fusion's video input.
    video_checkpoint: StoragePath | None = None
    # A backbone that reads audio and/or text (the Multimodal LSTM, a speech model); alone,
    # or the fusion's audio-text input.
    audio_text_checkpoint: StoragePath | None = None
    # Enhanced Late Fusion (jobs.tune_fusion's export, or `deepfusion export`'s folder);
    # its backbones are the two above when given, else the ones its card names.
    fusion_checkpoint: StoragePath | None = None
    textile_checkpoint: StoragePath | None = None  # an image classifier; None: no /v1/textile
    limits: RequestLimits = RequestLimits()
    # None: no authentication (fine on loopback; the app warns when it binds elsewhere).
    auth: AuthSection | None = None
    admission: AdmissionSection = AdmissionSection()
    ingress: IngressSection = IngressSection()
    video: DeploymentSection = DeploymentSection()
    audio_text: DeploymentSection = DeploymentSection()
    fusion: DeploymentSection = DeploymentSection(num_cpus=0.1)
    textile: DeploymentSection = DeploymentSection()
    # Host and port of Serve's HTTP proxy when a job (not `serve run`) starts it, and how
    # long a request may take end to end before Serve answers 408 (serve/config.yaml sets
    # the same for `serve run`).
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    request_timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _a_servable_subset(self) -> ServeSection:
        backbones = [f for f in ("video_checkpoint", "audio_text_checkpoint") if getattr(self, f) is not None]
        if not backbones and self.fusion_checkpoint is None and self.textile_checkpoint is None:
            raise ValueError("nothing to serve: set a video_checkpoint, audio_text_checkpoint, fusion_checkpoint "
                             "or textile_checkpoint")
        if self.fusion_checkpoint is not None and len(backbones) == 1:
            raise ValueError(f"fusion_checkpoint with only {backbones[0]}: give both backbones, or neither "
                             f"(the ones the fusion card names are served)")
        if self.fusion_checkpoint is None and len(backbones) == 2:
            raise ValueError("two emotion backbones need their fusion to answer as one model: set "
                             "fusion_checkpoint, or serve one backbone")
        return self

    @model_validator(mode="after")
    def _admission_below_serve_limit(self) -> ServeSection:
        # At Serve's own limit the proxy holds requests back and polls the replica (backing
        # off up to 0.5 s), so the admission limit must be reached first.
        limit = self.admission.max_in_flight
        if limit is not None and limit >= self.ingress.max_ongoing_requests:
            raise ValueError(f"serve.admission.max_in_flight ({limit}) must be below "
                             f"serve.ingress.max_ongoing_requests ({self.ingress.max_ongoing_requests}): "
                             "raise the latter, or set max_in_flight to null for no admission limit")
        return self

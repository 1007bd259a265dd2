"""The Ray Serve application: an HTTP ingress that decodes uploads, and the models of the
``serve`` section (any trained subset: one emotion backbone, two and their fusion, an image
classifier, or emotion and images), composed with ``DeploymentHandle``s.

    POST /v1/emotion   multipart: video (mp4/mov, mkv/webm, avi, flv), audio (wav, flac,
                       ogg, mp3, aac, m4a), text, speaker, gender, age, context
    POST /v1/textile   multipart: image
    GET  /v1/models    every served model's checkpoint, hash, preset and classes
    GET  /healthz
    GET  /             the demo page (``serving/ui``): upload a clip or an image, see the answer
    GET  /docs, /redoc the API's documentation, its assets served by the app (no CDN)

For one emotion request the ingress decodes the media (the ingestion code path), sends
the row to the served backbones at once and, with a fusion model, passes both logits to
it; one backbone alone answers with its own probabilities. A request that carries none of
the modalities the served models read is a 422 naming them. Classes are the checkpoints'
own (their cards), in the answers, ``/v1/models``, the OpenAPI schema and the page. Model
deployments batch concurrent requests (``serving.batching``).

Every answer is JSON and documented (``serving.schemas``). Bad input is a 4xx naming the
field (and the limit, for a 413); it never reaches a model. A declared content type must
match the file's bytes. Uploads are streamed to a temporary folder in chunks (removed
whatever happens) and decoded within ``serve.limits.media``. A failing model deployment
is a retryable 503; a bug of ours a 500 with a request id, never a traceback.
``serving.guard`` checks the bearer token and the body size before a route reads anything.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures'
# annotations at runtime, and Serve's class ingress cannot resolve string annotations.
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepfusion import __version__, storage
from deepfusion.artifacts.batches import model_columns
from deepfusion.artifacts.inference import CheckpointModel
from deepfusion.config.serving import AdmissionSection, AuthSection, DeploymentSection, RequestLimits, ServeSection
from deepfusion.inference.emotion import (
    EmotionDecoder,
    EmotionRequest,
    FusionModel,
    backbone_answers,
    modalities,
    served_emotion_checkpoints,
)
from deepfusion.inference.textile import TextileClassifier, image_row
from deepfusion.media import DecodeTimeout, MediaError
from deepfusion.media.text import parse_context
from deepfusion.models import model_reads
from deepfusion.serving.answers import bad_request, internal_error, media_failure, model_call
from deepfusion.serving.batching import Batcher
from deepfusion.serving.guard import RequestGuard, is_loopback, read_token, too_large
from deepfusion.serving.schemas import (
    EMOTION_RESPONSES,
    MODELS_RESPONSES,
    TEXTILE_RESPONSES,
    EmotionAnswer,
    Health,
    ServedModels,
    TextileAnswer,
    served_openapi,
)
from deepfusion.serving.uploads import AUDIO_TYPES, VIDEO_TYPES, image_types, read_upload, save_upload

UI = Path(__file__).parent / "ui"

# FastAPIOffline: FastAPI with /docs and /redoc served from the package's own copies of
# Swagger UI and ReDoc (under /static-offline-docs) instead of a CDN.
api = FastAPIOffline(title="deepfusion", description="Multimodal emotion recognition and textile classification. "
                     "Try it on the demo page at `/`.", version=__version__)
api.add_middleware(RequestGuard)
api.mount("/ui", StaticFiles(directory=UI), name="ui")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    """Every error body has the documented shape ``{"detail": {...}}``, also FastAPI's and
    Starlette's own (an unparsable body, an unknown path, a wrong method)."""
    if exc.status_code == 413 and exc.detail == "Content Too Large":  # Starlette's body limit, mid-body
        return too_large(RequestGuard.max_body_bytes)
    detail = exc.detail if isinstance(exc.detail, dict) else {"field": "request", "error": str(exc.detail)}
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError):
    """FastAPI's validation errors in the app's one error shape, the first one named."""
    errors = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
              for e in exc.errors()]
    first = errors[0] if errors else {"loc": ["body"], "msg": "invalid request"}
    field = first["loc"][-1] if first["loc"] else "body"
    return JSONResponse({"detail": {"field": field, "error": first["msg"], "errors": errors}}, status_code=422)


# Defined above the deployments: Serve pickles them when they are declared, with the
# module globals that exist at that moment.
def _ms(start: float, end: float) -> float:
    return round(1000 * (end - start), 2)


def _batches(batcher: Batcher) -> dict:
    """What /v1/models reports of a replica's batching: its batches so far by size."""
    sizes = dict(batcher.batch_sizes)  # one atomic copy: describe() may run beside the batching loop
    return {"max_batch_size": batcher.max_batch_size, "wait_s": batcher.wait_s,
            "by_size": {str(size): sizes[size] for size in sorted(sizes)},
            "requests": sum(size * count for size, count in sizes.items())}


@serve.deployment
class EmotionBackbone:
    """MIMAMO Net or the Multimodal LSTM: a row in, its logits out, batched across requests
    (``serving.batching``: the next batch takes every request that queued meanwhile)."""

    def __init__(self, checkpoint: str, max_batch_size: int, batch_wait_timeout_s: float):
        self.model = CheckpointModel(storage.location(checkpoint))
        self.batcher = Batcher(self.model.logits_of_rows, max_batch_size, batch_wait_timeout_s)

    def describe(self) -> dict:
        return self.model.describe() | {"batches": _batches(self.batcher)}

    async def logits(self, row: dict) -> np.ndarray:
        return await self.batcher(row)


@serve.deployment
class Fusion:
    def __init__(self, checkpoint: str):
        self.model = FusionModel(storage.location(checkpoint))

    def describe(self) -> dict:
        return self.model.describe()

    # async: 9 parameters take microseconds, less than a hop to Serve's thread pool.
    async def explain(self, video_logits: np.ndarray, audio_text_logits: np.ndarray) -> dict:
        return self.model.explain(video_logits[None], audio_text_logits[None])[0]


@serve.deployment
class Textile:
    def __init__(self, checkpoint: str, max_batch_size: int, batch_wait_timeout_s: float):
        self.classifier = TextileClassifier(storage.location(checkpoint))
        self.batcher = Batcher(self.classifier.classify, max_batch_size, batch_wait_timeout_s)

    def describe(self) -> dict:
        return self.classifier.model.describe() | {"image_size": self.classifier.image_size,
                                                    "batches": _batches(self.batcher)}

    async def classify(self, row: dict) -> dict:
        return await self.batcher(row)


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(self, models: dict, textile, emotion: dict | None, textile_image_size: int | None,
                 served: dict[str, list[str]], limits: dict, auth: dict | None = None,
                 admission: dict | None = None, image_classes: list[str] | None = None):
        """``models``: role -> handle of the served emotion models (``video``, ``audio_text``,
        ``fusion``; any subset ``served_emotion_checkpoints`` allows); ``emotion``: their
        decoding (``data_info``), the columns each backbone reads, what each reads and
        the classes, or None when no emotion model is served."""
        self.models, self.textile = models, textile
        self.backbones = [role for role in ("video", "audio_text") if role in models]
        self.limits = RequestLimits(**limits)
        self.emotion = emotion
        if emotion is not None:
            self.decoder = EmotionDecoder(emotion["data_info"], self.limits.media)
            # Each backbone is sent the decoded columns it reads, not the whole row (MIMAMO
            # Net no waveform, the Multimodal LSTM no frames): less to serialize per call.
            self.columns = emotion["columns"]
            self.reads = sorted({m for role in self.backbones for m in emotion["reads"][role]},
                                key=("video", "audio", "text").index)
        self.textile_image_size = textile_image_size
        self.image_types = image_types(self.limits.media.image_formats)
        # The OpenAPI schema of this deployment: what it serves, with the models' classes.
        api.openapi_schema = None
        api.openapi_schema = served_openapi(api.openapi(), served, emotion and emotion["classes"], image_classes)
        # Read here, where the replica runs: the token never travels in the deployment's config.
        token = read_token(AuthSection(**auth)) if auth else None
        admission = AdmissionSection(**(admission or {}))
        RequestGuard.configure(token=token, max_body_bytes=self.limits.request_bytes,
                               require_length=self.limits.require_content_length,
                               max_in_flight=admission.max_in_flight, retry_after_s=admission.retry_after_s)

    @api.get("/", include_in_schema=False)
    async def demo_page(self):
        return FileResponse(UI / "index.html", media_type="text/html")

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/models", response_model=ServedModels, responses=MODELS_RESPONSES, response_model_exclude_unset=True)
    async def models(self) -> dict:
        handles = dict(self.models)
        if self.textile is not None:
            handles["textile"] = self.textile
        described = await asyncio.gather(*(model_call(name, h.describe.remote()) for name, h in handles.items()))
        return dict(zip(handles, described))

    @api.post("/v1/emotion", response_model=EmotionAnswer, responses=EMOTION_RESPONSES)
    async def emotion(self, request: Request,
                      video: UploadFile | None = File(None, description="the utterance's clip: mp4/mov, mkv/webm, "
                                                      "avi or flv"),
                      audio: UploadFile | None = File(None, description="wav, flac, ogg, mp3, aac or m4a; else the "
                                                      "video's own sound track"),
                      text: str = Form("", description="the utterance's transcript"),
                      speaker: str = Form("", description="speaker name (known speakers get their embedding)"),
                      gender: str | None = Form(None), age: float | None = Form(None, ge=0, le=130),
                      context: str = Form("", description='the dialogue so far, oldest first: JSON '
                                          '[{"speaker": "Ross", "text": "Hi."}, ...] (models trained with '
                                          'text.context_turns read it)')) -> dict:
        started = time.perf_counter()
        if self.emotion is None:
            raise bad_request(404, "video", "no emotion model is deployed (serve.video_checkpoint, "
                                            "serve.audio_text_checkpoint or serve.fusion_checkpoint)")
        if len(text) > self.limits.max_text_chars:
            raise bad_request(422, "text", f"{len(text)} characters; the limit is {self.limits.max_text_chars}")
        try:
            turns = parse_context(context, self.limits.max_text_chars)
        except ValueError as err:
            raise bad_request(422, "context", str(err)) from None
        sent = {"video": video is not None, "audio": audio is not None or video is not None, "text": bool(text.strip())}
        self._check_modalities(sent, "this request has none of them")
        # Removed on the way out, whatever happens (a refused upload, a failed decode).
        with tempfile.TemporaryDirectory(prefix="deepfusion_") as folder:
            video_path = await save_upload(video, "video", VIDEO_TYPES, Path(folder) / "video", self.limits)
            audio_path = await save_upload(audio, "audio", AUDIO_TYPES, Path(folder) / "audio", self.limits)
            emotion_request = EmotionRequest(video_path=video_path, audio_path=audio_path, text=text,
                                             speaker=speaker, gender=gender, age=age, context=turns)
            try:
                row = await self._decode(request, self.decoder.row, emotion_request)
            except MediaError as err:
                field = "audio" if audio_path and audio_path in str(err) else "video"
                raise media_failure(err, field, folder) from None
        self._check_modalities(modalities(row), "none of them could be decoded from this request "
                                                "(e.g. a video without a sound track)")
        decoded = time.perf_counter()
        logits, latency = await self._backbones(row)
        fused = time.perf_counter()
        if "fusion" in self.models:
            result = await model_call("fusion", self.models["fusion"].explain.remote(
                logits["video"], logits["audio_text"]))
            latency["fusion"] = _ms(fused, time.perf_counter())
        else:
            [(role, values)] = logits.items()
            [result] = backbone_answers(values[None], self.emotion["classes"], role)
        done = time.perf_counter()
        return result | {"modalities": modalities(row),
                         "latency_ms": {"preprocess": _ms(started, decoded), **latency, "total": _ms(started, done)}}

    def _check_modalities(self, present: dict[str, bool], why: str) -> None:
        """422 unless the request carries a modality the served models read (naming them)."""
        if not any(present[m] for m in self.reads):
            raise bad_request(422, self.reads[0], f"the served model reads {' or '.join(self.reads)}, and {why}")

    @api.post("/v1/textile", response_model=TextileAnswer, responses=TEXTILE_RESPONSES)
    async def textile(self, request: Request,
                      image: UploadFile = File(..., description="a photo (jpeg, png or webp)")) -> dict:
        if self.textile is None:
            raise bad_request(404, "image", "no textile classifier is deployed (serve.textile_checkpoint)")
        started = time.perf_counter()
        data = await read_upload(image, "image", self.image_types, self.limits)
        try:
            row = await self._decode(request, image_row, data, self.textile_image_size, self.limits.media)
        except MediaError as err:
            raise media_failure(err, "image") from None
        decoded = time.perf_counter()
        result = await model_call("textile", self.textile.classify.remote(row))
        done = time.perf_counter()
        return result | {"latency_ms": {"preprocess": _ms(started, decoded), "model": _ms(decoded, done),
                                        "total": _ms(started, done)}}

    async def _decode(self, request: Request, decode, *args):
        """``decode(*args)`` in a worker thread, within the decoding deadline. The decoders
        check the deadline per frame and block themselves and stop (``DecodeTimeout``); the
        grace covers a step that cannot be interrupted. Any other failure is ours: a 500."""
        timeout = self.limits.media.decode_timeout_s
        try:
            return await asyncio.wait_for(asyncio.to_thread(decode, *args), timeout + 5.0)
        except MediaError:
            raise
        except TimeoutError:
            raise media_failure(DecodeTimeout(f"decoding took longer than {timeout:g} s"), "body") from None
        except Exception as err:  # noqa: BLE001 - a decoder bug must not become a traceback
            raise internal_error("decoding", err, request) from None

    async def _backbones(self, row: dict) -> tuple[dict, dict]:
        """The served backbones at once for one row: their logits and latencies by role."""
        timed = await asyncio.gather(*(self._timed_logits(self.emotion["deployments"][role], self.models[role],
                                                          self._part(row, role)) for role in self.backbones))
        return ({role: logits for role, (logits, _) in zip(self.backbones, timed)},
                {role: ms for role, (_, ms) in zip(self.backbones, timed)})

    def _part(self, row: dict, role: str) -> dict:
        return {column: row[column] for column in self.columns[role]}

    @staticmethod
    async def _timed_logits(deployment: str, handle, row: dict):
        started = time.perf_counter()
        logits = await model_call(deployment, handle.logits.remote(row))
        return logits, _ms(started, time.perf_counter())


def _options(section: DeploymentSection, name: str) -> dict:
    return {"name": name, "num_replicas": section.num_replicas,
            "ray_actor_options": {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus},
            "max_ongoing_requests": section.max_ongoing_requests, "max_queued_requests": section.max_queued_requests,
            # Over-capacity answers: Serve's own 503, telling the client when to come back.
            "backpressure_config": {"status_code": 503, "retry_after_s": section.retry_after_s},
            "graceful_shutdown_timeout_s": section.graceful_shutdown_timeout_s,
            "graceful_shutdown_wait_loop_s": min(0.5, section.graceful_shutdown_timeout_s)}


def deployment_name(role: str, card) -> str:
    """What Serve's status, logs and the 503 answers call a model's deployment: a backbone
    by its kind (``mimamo``, ``multimodal_lstm``, ``speech_mlp``), the fusion as ``fusion``."""
    return "fusion" if role == "fusion" else card.kind


def build_app(cfg: ServeSection):
    """The composed application for ``serve.run`` / a Serve config file: the subset of
    models the ``serve`` section names.

    Checks, before anything is deployed, that the checkpoints exist and can serve single
    requests, that each backbone plays the role it is given, and that a fusion model was
    fitted on exactly the served backbones.
    """
    import os

    from ray.serve._private import constants as serve_constants

    from deepfusion.artifacts.checkpoint import read_card

    if os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1" and not serve_constants.RAY_SERVE_THROUGHPUT_OPTIMIZED:
        logging.getLogger(__name__).warning(
            "ray.serve was imported before RAY_SERVE_THROUGHPUT_OPTIMIZED was set: this app's handles "
            "use Serve's default (slower) transport; call deepfusion.ray_runtime.use_serve_environment() "
            "before importing ray.serve")
    if cfg.auth is None and not is_loopback(cfg.http_host):
        logging.getLogger(__name__).warning(
            "SECURITY: the deepfusion app is served on %s without authentication: anyone who reaches "
            "this port can use the models. Set serve.auth (a token file or environment variable), or "
            "bind 127.0.0.1 behind an authenticating proxy.", cfg.http_host)
    checkpoints = {}
    if cfg.video_checkpoint or cfg.audio_text_checkpoint or cfg.fusion_checkpoint:
        checkpoints = served_emotion_checkpoints(cfg.video_checkpoint, cfg.audio_text_checkpoint,
                                                 cfg.fusion_checkpoint)
    cards = {role: read_card(path) for role, path in checkpoints.items()}
    sections = {"video": cfg.video, "audio_text": cfg.audio_text, "fusion": cfg.fusion}
    models, emotion, served = {}, None, {}
    for role, path in checkpoints.items():
        section = sections[role]
        options = _options(section, deployment_name(role, cards[role]))
        if role == "fusion":
            models[role] = Fusion.options(**options).bind(str(path))
            served[role] = [cards[role].kind]
        else:
            models[role] = EmotionBackbone.options(**options).bind(str(path), section.max_batch_size,
                                                                  section.batch_wait_timeout_s)
            served[role] = [cards[role].kind, *model_reads(cards[role].model_config)]
    if cards:
        backbones = [role for role in ("video", "audio_text") if role in cards]
        emotion = {"data_info": cards[backbones[0]].data_info, "classes": cards[backbones[0]].label_names,
                   "columns": {role: model_columns(cards[role].model_config) for role in backbones},
                   "reads": {role: model_reads(cards[role].model_config) for role in backbones},
                   "deployments": {role: deployment_name(role, cards[role]) for role in backbones}}
    textile, image_size, image_classes = None, None, None
    if cfg.textile_checkpoint is not None:
        textile_card = read_card(cfg.textile_checkpoint)
        image_size = int(textile_card.data_info["preprocess_config"]["image_size"])
        image_classes = textile_card.label_names
        served["textile"] = [textile_card.kind]
        textile = Textile.options(**_options(cfg.textile, "textile")).bind(
            str(cfg.textile_checkpoint), cfg.textile.max_batch_size, cfg.textile.batch_wait_timeout_s)
    return Ingress.options(**_options(cfg.ingress, "ingress")).bind(
        models, textile, emotion, image_size, served, cfg.limits.model_dump(),
        None if cfg.auth is None else cfg.auth.model_dump(mode="json"), cfg.admission.model_dump(), image_classes,
    )


def app_builder(args: dict):
    """The entry point named in ``serve/config.yaml`` (``serve run`` / ``serve deploy``).

    ``args.config``: the experiment YAML whose ``serve`` section names the checkpoints and
    deployment sizes; ``args.set``: overrides, as ``--set`` takes them; ``args.workdir``:
    the folder ``config`` and the paths in it are relative to (default: the folder Serve
    builds the app in, which under ``serve deploy`` is not the caller's: ``deepfusion
    serve --write-serve-config`` writes a file with both absolute).
    """
    from deepfusion.config import load_config
    from deepfusion.ray_runtime import use_serve_environment

    use_serve_environment()  # for the processes started from here; `make serve` sets it for this one
    config = args.get("config", "configs/serve.yaml")
    overrides = args.get("set", [])
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    workdir = args.get("workdir")
    return build_app(load_config(config, overrides, base=Path(workdir) if workdir else None).require("serve", config))

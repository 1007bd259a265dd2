"""What the HTTP API answers, field by field: the response models of every route and the
error bodies of every status it sends. FastAPI turns them into the OpenAPI schema that
``/docs`` and ``/redoc`` show, so the documentation is the code's own contract (the test
suite checks live answers against it)."""

from pydantic import BaseModel, ConfigDict, Field


class EmotionLatency(BaseModel):
    preprocess: float = Field(description="decoding the uploads (ms)")
    video: float | None = Field(None, description="the video backbone, queueing included (ms); null: not served")
    audio_text: float | None = Field(None, description="the audio-text backbone, queueing included (ms); null: "
                                                       "not served")
    fusion: float | None = Field(None, description="the fusion model (ms); null: not served")
    total: float = Field(description="the whole request inside the app (ms)")


class Modalities(BaseModel):
    video: bool = Field(description="frames were decoded from an uploaded video")
    audio: bool = Field(description="audio came with the request (a wav, or the video's own track)")
    text: bool = Field(description="a non-empty transcript was sent")


class IndividualPredictions(BaseModel):
    video: str | None = Field(None, description="the video backbone's class on its own (null: not served)")
    audio_text: str | None = Field(None, description="the audio-text backbone's class on its own (null: not served)")


class EmotionAnswer(BaseModel):
    emotion: str = Field(description="the predicted class (fused, when a fusion model is served)", examples=["joy"])
    confidence: float = Field(ge=0, le=1, description="the probability of that class")
    probabilities: dict[str, float] = Field(description="every class's probability, in the model's class order "
                                                        "(they sum to 1)")
    individual_predictions: IndividualPredictions
    fusion_weights: list[float] | None = Field(None, min_length=2, max_length=2, description=(
        "[w1 video, w2 audio-text]: the fusion's learned weights; null when one backbone is served alone"))
    modalities: Modalities
    latency_ms: EmotionLatency


class TextileLatency(BaseModel):
    preprocess: float = Field(description="decoding the image (ms)")
    model: float = Field(description="the classifier, queueing included (ms)")
    total: float


class TextileAnswer(BaseModel):
    # "class" is a Python keyword: the field is named class_ and sent as "class".
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    class_: str = Field(alias="class", description="the predicted class", examples=["clothes_dump"])
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float]
    latency_ms: TextileLatency


class Batching(BaseModel):
    max_batch_size: int
    wait_s: float = Field(description="how long a batch that is not full waits for more requests")
    by_size: dict[str, int] = Field(description="batches this replica computed, by their size, since it started")
    requests: int = Field(description="requests this replica computed in those batches")


class ModelCard(BaseModel):
    checkpoint: str = Field(description="the checkpoint folder's name (never this machine's path)")
    sha256: str = Field(description="the checkpoint's content hash")
    kind: str
    preset: str | None
    labels: list[str] = Field(description="the classes, in the model's output order")
    reads: list[str] | None = Field(None, description="emotion backbones: the modalities it reads (video, audio, "
                                                      "text); a request needs at least one of them")
    fusion_weights: list[float] | None = Field(None, description="fusion models: [w1 video, w2 audio-text]")
    image_size: int | None = Field(None, description="the textile classifier: the side images are resized to")
    random_init: list[str] = Field(default_factory=list, description=(
        "backbones: the parts meant to start from pretrained weights that were built with random "
        "weights instead (e.g. the paper preset trained offline); empty when all were loaded"))
    batches: Batching | None = Field(None, description=(
        "batched deployments: the replica that answered this call, how its batches formed under load"))


class ServedModels(BaseModel):
    """Every served model by its role; a role that is not served is absent."""

    video: ModelCard | None = None
    audio_text: ModelCard | None = None
    fusion: ModelCard | None = None
    textile: ModelCard | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok"])


# -- errors ---------------------------------------------------------------------------------------

class ErrorDetail(BaseModel):
    field: str = Field(description="the form field, header or part of the request at fault", examples=["video"])
    error: str = Field(description="what is wrong, for a person to read")
    limit: str | None = Field(None, description="for 413 and 504: the setting that sets the limit",
                              examples=["serve.limits.max_upload_mb"])
    errors: list[dict] | None = Field(None, description="422 from request validation: every problem found")


class ErrorBody(BaseModel):
    detail: ErrorDetail


class RetryDetail(BaseModel):
    deployment: str = Field(description="the deployment that could not answer (ingress: the admission limit)",
                            examples=["mimamo"])
    retryable: bool
    error: str
    limit: str | None = Field(None, description="the setting that refused it, when a limit did",
                              examples=["serve.admission.max_in_flight"])


class RetryBody(BaseModel):
    detail: RetryDetail


class InternalErrorDetail(BaseModel):
    error: str
    request_id: str = Field(description="the server log has the traceback under this id")


class InternalErrorBody(BaseModel):
    detail: InternalErrorDetail


def _error(description: str, model=ErrorBody, **extra) -> dict:
    return {"model": model, "description": description, **extra}


# Every status a route may answer with, and the body it really sends.
COMMON = {
    400: _error("the request could not be parsed (e.g. a malformed multipart body)"),
    401: _error("serve.auth is set and the bearer token is missing or wrong",
                headers={"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}),
    422: _error("a field is missing, malformed or over a limit (the field is named)"),
    500: _error("a failure of ours; the body carries the request id to report", InternalErrorBody),
}
UPLOADS = {
    **COMMON,
    411: _error("serve.limits.require_content_length: send the body with a Content-Length"),
    413: _error("the body or a file is over a limit (named in `limit`)"),
    415: _error("a file's content type is not accepted, or its bytes are not what it declares"),
    503: _error("the server is at its admission limit (serve.admission.max_in_flight), or a model deployment "
                "could not answer (restarting, or its queue is full): retry after Retry-After", RetryBody,
                headers={"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}),
}
EMOTION_RESPONSES = {**UPLOADS, 504: _error("decoding took longer than serve.limits.media.decode_timeout_s")}
TEXTILE_RESPONSES = {**UPLOADS, 404: _error("no textile classifier is deployed (serve.textile_checkpoint)"),
                     504: EMOTION_RESPONSES[504]}
MODELS_RESPONSES = {401: COMMON[401], 500: COMMON[500],
                    503: UPLOADS[503]}


def served_openapi(schema: dict, served: dict[str, list[str]], emotion_classes: list[str] | None,
                   image_classes: list[str] | None) -> dict:
    """The app's OpenAPI schema for what this deployment serves: each route's summary names
    the models behind it, each answer's class fields list the classes (``enum``, and
    ``probabilities``' keys), and a route with no model behind it says so.
    ``served``: role -> ``[kind, what it reads...]``."""
    import copy

    schema = copy.deepcopy(schema)
    paths, components = schema.get("paths", {}), schema.get("components", {}).get("schemas", {})
    emotion = {role: reads for role, reads in served.items() if role != "textile"}
    post = paths.get("/v1/emotion", {}).get("post")
    if post is not None:
        described = [f"{role}: {kind}" + (f" (reads {' + '.join(reads)})" if reads else "")
                     for role, (kind, *reads) in emotion.items()]
        post["summary"] = ("Recognise with " + ", ".join(described) if emotion
                           else "Not served here (no emotion model is deployed): answers 404")
    post = paths.get("/v1/textile", {}).get("post")
    if post is not None:
        post["summary"] = (f"Classify an image: {served['textile'][0]}" if "textile" in served
                           else "Not served here (no image classifier is deployed): answers 404")
    answers = (("EmotionAnswer", "emotion", emotion_classes), ("TextileAnswer", "class", image_classes))
    for name, field, classes in answers:
        model = components.get(name)
        if model is None or not classes:
            continue
        model["properties"][field]["enum"] = list(classes)
        model["properties"][field]["examples"] = [classes[0]]
        model["properties"]["probabilities"] |= {
            "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in classes},
            "required": list(classes), "additionalProperties": False}
    return schema

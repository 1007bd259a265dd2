"""The HTTP answers for what goes wrong: bad input names its field (and limit), a failing
model deployment is a retryable 503, a failure of ours a 500 with a request id. Every one
is an ``HTTPException`` with a JSON ``detail``; none carries a traceback."""

import logging
import uuid

from fastapi import HTTPException, Request
from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import BackPressureError

from deepfusion.media import DecodeTimeout, MediaError, MediaLimitExceeded

log = logging.getLogger("ray.serve")


def bad_request(status: int, field: str, message: str, **extra) -> HTTPException:
    return HTTPException(status_code=status, detail={"field": field, "error": message, **extra})


def media_failure(err: MediaError, field: str, folder: str | None = None) -> HTTPException:
    """A decoder's refusal as an answer: 413 over a limit (naming it), 504 past the decoding
    deadline, 422 for a file that is not what it claims to be."""
    message = str(err).replace(folder + "/", "") if folder else str(err)
    if isinstance(err, MediaLimitExceeded):
        return bad_request(413, field, message, limit=f"serve.limits.media.{err.limit}")
    if isinstance(err, DecodeTimeout):
        return bad_request(504, field, message, limit="serve.limits.media.decode_timeout_s")
    return bad_request(422, field, message)


def internal_error(where: str, err: BaseException, request: Request) -> HTTPException:
    """A failure of ours: logged with its traceback under a request id the client gets."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    log.error("request %s: %s failed", request_id, where, exc_info=err)
    return HTTPException(status_code=500, detail={
        "error": f"internal error in {where}; the server log has the details under this request id",
        "request_id": request_id})


async def model_call(deployment: str, response):
    """Await a model deployment's answer. A replica that dies with the request in flight
    (the controller starts a replacement), a full queue, or an error raised in the model
    is a 503 the client may retry, never a 500 or a traceback."""
    try:
        return await response
    except (BackPressureError, RayError) as err:  # RayError covers RayActorError and task errors
        log.warning("a %s replica failed a request: %s", deployment, type(err).__name__)
        if isinstance(err, RayActorError):
            what = "the replica handling this request died; Serve is replacing it"
        elif isinstance(err, BackPressureError):
            what = "its queue is full"
        else:
            what = "it failed this request"
        raise HTTPException(status_code=503, headers={"Retry-After": "1"}, detail={
            "deployment": deployment, "retryable": True,
            "error": f"the {deployment} deployment could not answer ({what}); retry"}) from None

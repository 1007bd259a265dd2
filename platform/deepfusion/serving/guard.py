"""What every HTTP request passes before the application reads it: the bearer token, the
body size limit and, for the model routes, admission.

One ASGI middleware, added to the FastAPI app once; each ingress replica configures it
from the ``serve`` section when it starts (``RequestGuard.configure``), since the app
object itself is frozen when the deployment is declared. The size limit is Starlette's
own ``RequestBodyLimitMiddleware``: a Content-Length over the limit is refused before
any of the body is read, and a body without one is cut off as it passes the limit.
Admission counts the model requests (``MODEL_PATHS``) the replica is working on; one past
``serve.admission.max_in_flight`` is answered 503 with ``Retry-After`` straight away.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from deepfusion.config.serving import AuthSection

log = logging.getLogger("ray.serve")

# Open without credentials: the health probe, and the pages a browser loads by navigation
# (which cannot carry a bearer token): the demo page and the API docs, their assets and
# the schema. None of them reveals a model or answers with one; the demo page asks for
# the token and sends it with its API calls.
OPEN_PATHS = frozenset({"/healthz", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/ui/", "/static-offline-docs/")
# The routes that put work on the models: what admission counts and refuses.
MODEL_PATHS = frozenset({"/v1/emotion", "/v1/textile"})


class TokenUnavailable(RuntimeError):
    """``serve.auth`` names a token that this replica cannot read."""


def read_token(auth: AuthSection) -> str:
    """The bearer token ``auth`` points at, read where the replica runs."""
    if auth.token_env is not None:
        token = os.environ.get(auth.token_env, "").strip()
        where = f"environment variable {auth.token_env}"
    else:
        try:
            token = Path(auth.token_file).read_text().strip()
        except OSError as err:
            raise TokenUnavailable(f"serve.auth.token_file: cannot read {auth.token_file}: {err.strerror}") from None
        where = f"file {auth.token_file}"
    if len(token) < 16:
        raise TokenUnavailable(f"serve.auth: the token in {where} is missing or shorter than 16 characters")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class RequestGuard:
    """ASGI middleware: 401 without the configured bearer token, 413 past the body limit,
    411 for a body without a length (unless ``require_content_length`` is off), 503 for a
    model request past the admission limit."""

    token: str | None = None
    max_body_bytes: int | None = None
    require_length: bool = False
    max_in_flight: int | None = None
    retry_after_s: int = 1
    in_flight: int = 0  # model requests between admission and their answer (one event loop)

    @classmethod
    def configure(cls, *, token: str | None, max_body_bytes: int, require_length: bool = True,
                  max_in_flight: int | None = None, retry_after_s: int = 1) -> None:
        cls.token, cls.max_body_bytes, cls.require_length = token, max_body_bytes, require_length
        cls.max_in_flight, cls.retry_after_s = max_in_flight, retry_after_s

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.token is not None and not is_open(scope["path"]) and not self._authorized(headers):
            return await refusal(401, "authorization", "missing or wrong bearer token",
                                 headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if self.max_body_bytes is None:
            return await self.app(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            # Answered from the headers alone: none of the body is read.
            return await too_large(self.max_body_bytes)(scope, receive, send)
        if declared is None and self.require_length and scope["method"] in ("POST", "PUT", "PATCH"):
            return await refusal(411, "body", "send the body with a Content-Length header (chunked uploads "
                                 "are not accepted)", limit="serve.limits.require_content_length")(scope, receive, send)
        limited = RequestBodyLimitMiddleware(self.app, self.max_body_bytes)
        if self.max_in_flight is None or scope["path"] not in MODEL_PATHS:
            return await limited(scope, receive, send)
        cls = type(self)
        if cls.in_flight >= self.max_in_flight:
            return await busy(self.max_in_flight, self.retry_after_s)(scope, receive, send)
        cls.in_flight += 1
        try:
            await limited(scope, receive, send)
        finally:
            cls.in_flight -= 1

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self.token.encode())


def refusal(status: int, field: str, error: str, headers: dict | None = None, **extra) -> JSONResponse:
    """The app's error body (``{"detail": {"field", "error", ...}}``) for an answer given
    before FastAPI sees the request."""
    return JSONResponse({"detail": {"field": field, "error": error, **extra}}, status_code=status, headers=headers)


def busy(limit: int, retry_after_s: int) -> JSONResponse:
    """Admission's 503: the body of a retryable refusal (``RetryBody``), and when to retry."""
    return JSONResponse({"detail": {
        "deployment": "ingress", "retryable": True, "limit": "serve.admission.max_in_flight",
        "error": f"the server is working on its limit of {limit} model requests; retry in {retry_after_s} s"}},
        status_code=503, headers={"Retry-After": str(retry_after_s)})


def too_large(limit: int) -> JSONResponse:
    return refusal(413, "body", f"the request body is over the limit of {limit:,} bytes",
                   limit="serve.limits.max_request_mb")

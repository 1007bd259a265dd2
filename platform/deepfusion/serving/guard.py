"""What every HTTP request passes before the application reads it: the bearer token and
the body size limit.

One ASGI middleware, added to the FastAPI app once; each ingress replica configures it
from the ``serve`` section when it starts (``RequestGuard.configure``), since the app
object itself is frozen when the deployment is declared. The size limit is Starlette's
own ``RequestBodyLimitMiddleware``: a Content-Length over the limit is refused before
any of the body is read, and a body without one is cut off as it passes the limit.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from pathlib import Path

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from deepfusion.config.serving import AuthSection

log = logging.getLogger("ray.serve")

# Load balancers probe this without credentials; it reveals nothing.
OPEN_PATHS = frozenset({"/healthz"})


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


class RequestGuard:
    """ASGI middleware: 401 without the configured bearer token, 413 past the body limit,
    411 for a body without a length (unless ``require_content_length`` is off)."""

    token: str | None = None
    max_body_bytes: int | None = None
    require_length: bool = False

    @classmethod
    def configure(cls, *, token: str | None, max_body_bytes: int, require_length: bool = True) -> None:
        cls.token, cls.max_body_bytes, cls.require_length = token, max_body_bytes, require_length

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            response = JSONResponse({"detail": {"field": "authorization",
                                                "error": "missing or wrong bearer token"}},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        if self.max_body_bytes is None:
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            # Answered from the headers alone: none of the body is read.
            return await too_large(self.max_body_bytes)(scope, receive, send)
        if declared is None and self.require_length and scope["method"] in ("POST", "PUT", "PATCH"):
            response = JSONResponse({"detail": {"field": "body", "limit": "serve.limits.require_content_length",
                                                "error": "send the body with a Content-Length header "
                                                         "(chunked uploads are not accepted)"}}, status_code=411)
            return await response(scope, receive, send)
        await RequestBodyLimitMiddleware(self.app, self.max_body_bytes)(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(),
                                                                          self.token.encode())
        return False


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": {"field": "body", "limit": "serve.limits.max_request_mb",
                                    "error": f"the request body is over the limit of {limit:,} bytes"}},
                        status_code=413)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""The service's guards, as ASGI middleware in front of the application: the body limit and the API key.

Both work on the raw ASGI messages, so they hold whatever the transfer encoding, and refuse a
request before the application (or FastAPI's body parsing) has read more than the limit.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from starlette.responses import JSONResponse

from workbench.errors import ServiceError

OPEN_PATHS = frozenset({"/health"})  # answered without the API key: liveness probes carry no secret


def error_response(status: int, message: str) -> JSONResponse:
    """Returns the service's error answer, ``{"error": message}``."""
    return JSONResponse(status_code=status, content={"error": message})


class BodyLimit:
    """ASGI middleware: answers 413 once a request body passes ``max_bytes``, counting bytes as they arrive.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a chunked body
    (no length declared) is cut off at the first piece past the limit, so at most ``max_bytes`` plus
    one piece is ever held. The 413 closes the connection: the rest of the body is never read.
    """

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        over = False
        started = False

        async def counted_receive() -> dict:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over:
                return  # the application's answer to a body cut short (FastAPI's 400): the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:  # whatever the application made of the cut-off body, the answer is 413
                raise
        if over and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: dict, receive: Callable, send: Callable) -> None:
        response = error_response(413, f"request body over {self.max_bytes} bytes")
        response.headers["connection"] = "close"
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised inside the application's ``receive`` when the body passes the limit; it stops the reading."""


def api_key_from_env(name: str) -> str:
    """Returns the API key held in environment variable ``name``; raises ``ServiceError`` when unset or empty."""
    value = os.environ.get(name)
    if value is None:
        raise ServiceError(f"--api-key-env {name}: the environment variable {name} is not set; export the key in it")
    if not value.strip():
        raise ServiceError(f"--api-key-env {name}: the environment variable {name} is empty; put the key in it")
    if value != value.strip():
        # HTTP strips the whitespace around a header's value: no request could ever carry this key
        raise ServiceError(f"--api-key-env {name}: the key starts or ends with whitespace; remove it")
    return value


class ApiKeyGuard:
    """ASGI middleware: a request without the API key gets 401, except on ``OPEN_PATHS``.

    The key is taken from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and compared in
    constant time.
    """

    def __init__(self, app: Callable, api_key: str):
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._carries_key(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, "missing or wrong API key: send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`"
        )
        response.headers["www-authenticate"] = "Bearer"
        response.headers["connection"] = "close"  # the body, if any, is never read
        await response(scope, receive, send)

    def _carries_key(self, scope: dict) -> bool:
        offered = []
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.partition(b" ")
            if scheme.lower() == b"bearer":
                offered.append(credentials.strip())
        api_key = _header(scope, b"x-api-key")
        if api_key is not None:
            offered.append(api_key)
        # Every candidate compared, in constant time each: how far a guess matched does not show in the timing.
        matches = [hmac.compare_digest(candidate, self.api_key) for candidate in offered]
        return any(matches)


def _header(scope: dict, name: bytes) -> bytes | None:
    """Returns the raw value of header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None

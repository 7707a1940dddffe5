"""ASGI middleware of the app: request ids, the upload limit before a body is read, and the
request counter. Plain ASGI: Starlette's `BaseHTTPMiddleware` would add a task and a memory stream
to every request, streamed speech included."""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from speech_service import metrics
from speech_service.errors import (
    BadRequest,
    PayloadTooLarge,
)
from speech_service.http.errors import _logged, service_error_response
from speech_service.logs import REQUEST_ID_HEADER, bind_request_id, new_request_id, valid_request_id

logger = logging.getLogger(__name__)


class RequestIdMiddleware:
    """Takes the caller's `X-Request-ID` (refusing one that is not a plain token of at most 128
    characters) or makes one, binds it for logs and error messages, and returns it on every response.
    `echo=False` where a server in front (Ray Serve's proxy) already returns the same header."""

    def __init__(self, app: ASGIApp, echo: bool = True):
        self.app = app
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = sent if valid_request_id(sent) else new_request_id()
        bind_request_id(request_id)
        scope.setdefault("state", {}).update(request_id=request_id, echo_request_id=self.echo)

        async def send_with_id(message: Message) -> None:
            if self.echo and message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        if sent is not None and request_id != sent:
            error = BadRequest(f"{REQUEST_ID_HEADER} must be 1-128 letters, digits and '._:-'.",
                               code="invalid_request_id", param=REQUEST_ID_HEADER)
            return await service_error_response(error)(scope, receive, send_with_id)
        await self.app(scope, receive, send_with_id)


class UploadLimit:
    """Refuses a body whose declared length is over the upload limit (413 `upload_too_large`) before
    it is read and spooled, not after. Plain ASGI: Starlette's `BaseHTTPMiddleware` would add a task
    and a memory stream to every request, streamed speech included."""

    SLACK = 64 * 1024  # multipart framing and form fields around the file

    def __init__(self, app: ASGIApp, max_upload_bytes: int):
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
            if declared.isdigit() and int(declared) > self.max_upload_bytes + self.SLACK:
                error = PayloadTooLarge(f"The upload is over the {self.max_upload_bytes} byte limit.",
                                        code="upload_too_large")
                response = _logged(Request(scope), service_error_response(error), error.code)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class RequestCounter:
    """Counts answered requests by route template (not the raw path, so the label set stays small),
    method and status."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                metrics.record_request(route, scope["method"], message["status"])
            await send(message)

        await self.app(scope, receive, send_counted)

"""ASGI middleware of the app: request ids, body limits counted on the bytes received, and the
request counter. Plain ASGI: Starlette's `BaseHTTPMiddleware` would add a task and a memory stream
to every request, streamed speech included."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from fastapi import Request
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from speech_service import metrics
from speech_service.errors import (
    BadRequest,
    PayloadTooLarge,
)
from speech_service.http.errors import BodyTooLarge, _logged, refusal_before_the_body, service_error_response
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


class BodyLimit:
    """Bounds every request body by the bytes actually received, per route (docs/ARCHITECTURE.md,
    "Hostile input"): a declared `Content-Length` over the limit is refused before anything is read,
    and a body sent without one (chunked) is refused once its bytes pass the limit, before FastAPI
    has read it into memory or spooled a form to disk. `limits` maps an endpoint (of one of
    `routers`) to the file limit of its uploads; every other route gets `default`."""

    SLACK = 64 * 1024  # multipart framing and form fields around the files

    def __init__(self, app: ASGIApp, routers: Iterable[Router], limits: dict[Callable, int], default: int):
        self.app = app
        self.default = default
        self._routes = [(route, limits[route.endpoint]) for router in routers for route in router.routes
                        if getattr(route, "endpoint", None) in limits]

    def refusal(self, scope: Scope) -> tuple[int, PayloadTooLarge]:
        """The route's limit, and its 413 (an upload's names the file limit its caller set)."""
        for route, limit in self._routes:
            if route.matches(scope)[0] == Match.FULL:
                return limit + self.SLACK, PayloadTooLarge(f"The upload is over the {limit} byte limit.",
                                                           code="upload_too_large", param="file")
        return self.default, PayloadTooLarge(f"The request body is over the {self.default} byte limit "
                                             "(limits.max_json_bytes).", code="body_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, too_large = self.refusal(scope)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            response = _logged(Request(scope), refusal_before_the_body(scope, too_large), too_large.code)
            return await response(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(too_large)
            return message

        await self.app(scope, counted, send)


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

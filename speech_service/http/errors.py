"""Errors as HTTP, mapped once: every `ServiceError`, validation failure, unknown route and
unexpected exception becomes OpenAI's error shape, with the request id in its message."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send

from speech_service import metrics
from speech_service.errors import (
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    error_type_for,
    unwrap,
)
from speech_service.logs import REQUEST_ID_HEADER, bind_request_id, new_request_id, with_request_id

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, error_type: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape; the message ends with the request id (`logs.with_request_id`)."""
    error_type = error_type or error_type_for(status)
    body = {"message": with_request_id(message), "type": error_type, "param": param, "code": code}
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, error_type=exc.type, param=exc.param,
                          headers=exc.headers)


def refusal_before_the_body(scope: Scope, exc: ServiceError) -> JSONResponse:
    """`exc`'s answer to a request whose body is left unread: when it has one, the connection closes
    after the answer, so the server does not drain (and the client stops sending) the rest of it."""
    response = service_error_response(exc)
    if any(k in (b"content-length", b"transfer-encoding") and v not in (b"0", b"") for k, v in scope["headers"]):
        response.headers["Connection"] = "close"
    return response


class BodyTooLarge(StarletteHTTPException):
    """A body past its route's limit, raised from `receive`. An HTTPException so that FastAPI's body
    parsing passes it on (any other exception there becomes its own 400); the app's error handlers
    answer it as the `PayloadTooLarge` it carries."""

    def __init__(self, error: PayloadTooLarge):
        super().__init__(413, error.message)
        self.error = error


# Validation failures of these fields keep the specific code (and 400) that the checks in the
# service raise for the same mistake, whichever layer catches it first.
_FIELD_CODES = {"name": "invalid_voice_name", "voice": "invalid_voice_name", "input": "empty_input",
                "language": "invalid_language", "style": "invalid_style_name"}
_SHAPE_ERRORS = {"string_pattern_mismatch", "string_too_short", "string_too_long"}


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "The request body is not valid JSON.")
    fields, parts = [], []
    for e in errors:
        field = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "path", "query", "header"))
        fields.append(field)
        parts.append(f"{field or 'body'}: {e.get('msg')}")
    first = errors[0] if errors else {}
    if len(errors) == 1 and fields[0] in _FIELD_CODES and first.get("type") in _SHAPE_ERRORS:
        return error_response(400, _FIELD_CODES[fields[0]], parts[0], param=fields[0])
    return error_response(422, "invalid_request", "; ".join(parts), param=fields[0] if fields else None)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route answers at this path (Starlette's 405 names only one route's)."""
    return [method for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return _logged(request, service_error_response(exc), exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _logged(request, _validation_error(exc), "validation")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, BodyTooLarge):
            return _logged(request, refusal_before_the_body(request.scope, exc.error), exc.error.code)
        if exc.status_code == 405:
            allowed = _allowed_methods(app, request.scope)
            error = MethodNotAllowed(f"{request.method} is not allowed here; use {', '.join(allowed)}.")
            response = service_error_response(error)
            response.headers["Allow"] = ", ".join(allowed)
            return _logged(request, response, error.code)
        if exc.status_code == 404:
            return _logged(request, service_error_response(NotFound(f"No route {request.url.path}.")), "not_found")
        return _logged(request, error_response(exc.status_code, "http_error", str(exc.detail), headers=exc.headers),
                       "http_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Runs outside the request-id middleware (Starlette's outermost layer): bind and send the id here.
        request_id = getattr(request.state, "request_id", None) or new_request_id()
        bind_request_id(request_id)
        cause = unwrap(exc)
        if isinstance(cause, ServiceError):  # raised inside a replica and carried back by Ray
            response = _logged(request, service_error_response(cause), cause.code)
        else:
            logger.exception("unhandled error in %s %s", request.method, request.url.path)
            response = error_response(500, "internal_error", "Internal error; see the service logs.")
        # Also outside the request counter.
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        metrics.record_request(route, request.method, response.status_code)
        if getattr(request.state, "echo_request_id", True):
            response.headers[REQUEST_ID_HEADER] = request_id
        return response


def _logged(request: Request, response: Response, code: str) -> Response:
    level = logging.WARNING if response.status_code >= 500 else logging.INFO
    logger.log(level, "%s %s -> %d %s", request.method, request.url.path, response.status_code, code)
    return response


class UnknownPath(BaseRoute):
    """The route of every path no other route of the app knows, last in the app's routes: it
    answers our 404, and Serve's access log, which names a request by the route that matched it,
    then shows the path asked for (`GET /v1/models 404`) instead of the route prefix (`GET / 404`).
    A path another route matches in part (another method: 405) or by its trailing slash (a redirect)
    is left to Starlette."""

    def __init__(self, router: Router):
        self.router = router
        self._path = ""

    @property
    def path(self) -> str:  # read by Serve right after `matches` (one event loop thread)
        return self._path

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or self._known(scope):
            return Match.NONE, {}
        self._path = scope["path"]
        return Match.FULL, {}

    def _known(self, scope: Scope) -> bool:
        path = scope["path"]
        other = path[:-1] if path.endswith("/") else path + "/"
        return any(route.matches({**scope, "path": p})[0] != Match.NONE
                   for route in self.router.routes if route is not self for p in (path, other))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        response = service_error_response(NotFound(f"No route {request.url.path}."))
        await _logged(request, response, "not_found")(scope, receive, send)

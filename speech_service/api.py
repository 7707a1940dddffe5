"""The HTTP API (FastAPI). `create_app(settings, backends)` is served by the Ray ingress deployment;
`backends` is how it reaches the model replicas, so the API itself runs and tests without Ray."""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import audio, metrics
from .config import ServiceSettings
from .errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    error_type_for,
    unwrap,
)
from .jobs import JobRunner, JobStore
from .logs import REQUEST_ID_HEADER, bind_request_id, current_request_id, new_request_id, valid_request_id
from .schemas import (
    LANGUAGE_PATTERN,
    VOICE_NAME_PATTERN,
    ErrorResponse,
    Job,
    JobList,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechRequest,
    VoiceCreated,
    VoiceList,
    VoicePatch,
)
from .speech import Backends, SpeechService
from .store import VoiceRecord, VoiceStore, open_store
from .voices import correct_ref_text, register_voice

logger = logging.getLogger(__name__)

_DESCRIPTIONS = {
    400: "Bad request: malformed JSON, an invalid voice name, an upload that is no supported audio file, …",
    401: "Missing or unknown API key",
    404: "No such voice (or resource)",
    409: "The voice exists already, or is being replaced",
    413: "The upload or the input text is over its limit",
    422: "A field is out of range or implausible (the error's `param` names it)",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "A model, the store or capacity is unavailable for now (`Retry-After` when it will pass)",
    504: "The request did not finish within the configured time",
}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` put in place: an OpenAPI document has no `$defs` to point to."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return inline(defs[ref.split("/")[-1]]) if ref.startswith("#/$defs/") else {
                k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


# Each event of `stream_format: "sse"` (as OpenAPI 3.2 describes a server-sent event): its data is JSON.
SPEECH_EVENT_SCHEMA = {"type": "object", "required": ["data"], "properties": {"data": {
    "type": "string", "contentMediaType": "application/json",
    "contentSchema": _inlined(TypeAdapter(SpeechAudioDelta | SpeechAudioDone).json_schema())}}}

# What a route that reaches a model replica may answer besides its own errors.
MODEL_ERRORS = (429, 503, 504)


def errors_for(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer, all in OpenAI's error shape."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def error_response(status: int, code: str, message: str, *, error_type: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape; the message ends with the request id, so a report can be found in the logs."""
    error_type = error_type or error_type_for(status)
    request_id = current_request_id()
    body = {"message": f"{message} (request id: {request_id})", "type": error_type, "param": param, "code": code}
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, error_type=exc.type, param=exc.param,
                          headers=exc.headers)


# Validation failures of these fields keep the specific code (and 400) that the checks in the
# service raise for the same mistake, whichever layer catches it first.
_FIELD_CODES = {"name": "invalid_voice_name", "voice": "invalid_voice_name", "input": "empty_input",
                "language": "invalid_language"}
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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return _logged(request, service_error_response(exc), exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _logged(request, _validation_error(exc), "validation")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
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


def _document(app: FastAPI, settings: ServiceSettings) -> None:
    """Add what FastAPI cannot see to the OpenAPI document: `X-Request-ID` on every response, and the
    configured limits the service checks (accepted model names, input length)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        request_id = {"description": "The caller's X-Request-ID, or one made for this request",
                      "required": True, "schema": {"type": "string"}}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    response.setdefault("headers", {})[REQUEST_ID_HEADER] = request_id
        speech = schema.get("components", {}).get("schemas", {}).get("SpeechRequest", {}).get("properties", {})
        if speech:
            speech["model"]["enum"] = list(settings.accepted_models)
            speech["input"]["maxLength"] = settings.limits.max_input_chars
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def create_app(settings: ServiceSettings, backends: Backends, store: VoiceStore | None = None, *,
               echo_request_id: bool = True) -> FastAPI:
    store = store or open_store(settings.store)
    limits = settings.limits
    speech_service = SpeechService(settings, store, backends)
    jobs = JobStore(store.objects, settings.jobs)  # beside the voices: same bucket or directory
    job_runner = JobRunner(jobs, speech_service, settings.jobs)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await job_runner.start()  # picks up jobs a previous ingress left behind
        try:
            yield
        finally:
            await job_runner.stop()

    app = FastAPI(title="F5-TTS voice service", version="1", lifespan=lifespan)
    _install_error_handlers(app)
    _document(app, settings)

    def require_key(request: Request) -> None:
        if not settings.api_keys:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        known = any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys)
        if scheme.lower() != "bearer" or not known:
            raise Unauthorized("Send a valid API key as 'Authorization: Bearer <key>'.", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=errors_for(401))
    VoiceName = PathParam(pattern=VOICE_NAME_PATTERN, description="A voice name: 1-64 letters, digits, '_' or '-'")

    # The web page: public static files; the API calls it makes carry the key.
    web = Path(__file__).parent / "web"
    app.mount("/web", StaticFiles(directory=web), name="web")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(web / "index.html")

    app.add_middleware(UploadLimit, max_upload_bytes=limits.max_upload_bytes)
    app.add_middleware(RequestIdMiddleware, echo=echo_request_id)
    app.add_middleware(RequestCounter)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @v1.get("/status", responses=errors_for(503))
    async def status() -> dict:
        return {"voices": len(await asyncio.to_thread(store.list)), **(await backends.status())}

    @v1.post("/voices", status_code=201, response_model=VoiceCreated,
             responses=errors_for(400, 409, 413, 422, *MODEL_ERRORS))
    async def create_voice(
        name: str = Form(..., pattern=VOICE_NAME_PATTERN),
        file: UploadFile = File(...),
        ref_text: str | None = Form(None),
        language: str | None = Form(None, pattern=LANGUAGE_PATTERN),
        overwrite: bool = Form(False),
    ) -> VoiceCreated:
        data = await file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise PayloadTooLarge(f"The upload is over the {limits.max_upload_bytes} byte limit.",
                                  code="upload_too_large", param="file")
        return await register_voice(store, backends.transcribe, limits, name=name, data=data, ref_text=ref_text,
                                    language=language or None, overwrite=overwrite)

    @v1.get("/voices", response_model=VoiceList, responses=errors_for(503))
    async def list_voices() -> VoiceList:
        return VoiceList(voices=await asyncio.to_thread(store.list))

    @v1.get("/voices/{name}", response_model=VoiceRecord, responses=errors_for(400, 404, 503))
    async def get_voice(name: str = VoiceName) -> VoiceRecord:
        return await asyncio.to_thread(store.get, name)

    @v1.get("/voices/{name}/audio", response_class=Response, responses={
        200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The reference clip, 24 kHz mono WAV"},
        **errors_for(400, 404, 409, 503)})
    async def get_voice_audio(name: str = VoiceName) -> Response:
        _, wav = await asyncio.to_thread(store.reference, name)
        return Response(wav, media_type="audio/wav")

    @v1.patch("/voices/{name}", response_model=VoiceRecord, responses=errors_for(400, 404, 409, 422, 503))
    async def patch_voice(patch: VoicePatch, name: str = VoiceName) -> VoiceRecord:
        return await asyncio.to_thread(correct_ref_text, store, limits, name, patch.ref_text)

    @v1.delete("/voices/{name}", status_code=204, response_class=Response,
               responses=errors_for(400, 404, 409, 503))
    async def delete_voice(name: str = VoiceName) -> Response:
        await asyncio.to_thread(store.delete, name)
        return Response(status_code=204)

    @v1.post("/audio/speech", response_class=Response, responses={
        200: {"content": {**{media: {"schema": {"type": "string", "format": "binary"}}
                             for media, _ in audio.FORMATS.values()},
                          "text/event-stream": {"schema": SPEECH_EVENT_SCHEMA}},
              "description": "Speech in the requested format (streamed when `stream` is true); with "
                             "`stream_format: \"sse\"`, `text/event-stream` of OpenAI's `speech.audio.delta` "
                             "and `speech.audio.done` events",
              "headers": {"Server-Timing": {
                  "description": "Whole (not streamed) responses: where the time went, in ms: `model`, the "
                                 "model calls that made this speech; `total`, the request up to its encoded "
                                 "audio (`model;dur=93.1, total;dur=97.4`)",
                  "schema": {"type": "string"}}}},
        **errors_for(400, 404, 409, 413, 422, *MODEL_ERRORS)})
    async def speech(body: SpeechRequest) -> Response:
        media_type = audio.FORMATS[body.response_format][0]
        if body.stream_format == "sse":  # OpenAI's events: streamed whatever `stream` says
            return StreamingResponse(await speech_service.stream_events(body), media_type="text/event-stream")
        if body.stream:
            return StreamingResponse(await speech_service.stream(body), media_type=media_type)
        speech = await speech_service.synthesize(body)
        return Response(speech.data, media_type=media_type, headers={"Server-Timing": speech.server_timing()})

    # -- asynchronous jobs (docs/ARCHITECTURE.md, "Jobs") ------------------------------------------
    @v1.post("/jobs", status_code=202, response_model=Job,
             responses=errors_for(400, 404, 409, 413, 422, 503))
    async def create_job(body: SpeechRequest, response: Response) -> Job:
        record = await job_runner.submit(body)
        response.headers["Location"] = f"/v1/jobs/{record.id}"
        return record.view()

    @v1.get("/jobs", response_model=JobList, responses=errors_for(422, 503))
    async def list_jobs(limit: int = Query(20, ge=1, le=100),
                        after: str | None = Query(None, description="last_id of the previous page")) -> JobList:
        records, has_more = await asyncio.to_thread(jobs.list, limit, after)
        data = [r.view() for r in records]
        return JobList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                       has_more=has_more)

    @v1.get("/jobs/{job_id}", response_model=Job, responses=errors_for(404, 503))
    async def get_job(job_id: str) -> Job:
        return (await asyncio.to_thread(jobs.get, job_id)).view()

    @v1.get("/jobs/{job_id}/audio", response_class=Response, responses={
        200: {"content": {media: {"schema": {"type": "string", "format": "binary"}}
                          for media, _ in audio.FORMATS.values()},
              "description": "The job's speech, in the format it asked for"},
        **errors_for(404, 409, 503)})
    async def get_job_audio(job_id: str) -> Response:
        record, data = await asyncio.to_thread(jobs.result, job_id)
        return Response(data, media_type=audio.FORMATS[record.request.response_format][0])

    @v1.delete("/jobs/{job_id}", response_model=Job,
               responses={204: {"description": "removed"}, **errors_for(404, 503)})
    async def delete_job(job_id: str):
        cancelled = await asyncio.to_thread(jobs.cancel_or_remove, job_id)
        return cancelled.view() if cancelled else Response(status_code=204)

    app.include_router(v1)
    return app

"""The HTTP API (FastAPI). `create_app(settings, backends)` is served by the Ray ingress deployment;
`backends` is how it reaches the model replicas, so the API itself runs and tests without Ray."""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import audio
from .config import ServiceSettings
from .errors import PayloadTooLarge, ServiceError, Unauthorized, unwrap
from .jobs import JobRunner, JobStore
from .schemas import ErrorResponse, Job, JobList, SpeechRequest, VoiceCreated, VoiceList, VoicePatch
from .speech import Backends, SpeechService
from .store import VoiceRecord, VoiceStore, open_store
from .voices import correct_ref_text, register_voice

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}},
                        headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid_json", "The request body is not valid JSON."
    parts = []
    for e in errors:
        field = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",))
        parts.append(f"{field or 'body'}: {e.get('msg')}")
    return "invalid_request", "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError):
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        code, message = _validation_message(exc)
        return error_response(400 if code == "invalid_json" else 422, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        cause = unwrap(exc)
        if isinstance(cause, ServiceError):  # raised inside a replica and carried back by Ray
            return error_response(cause.status_code, cause.code, cause.message, cause.headers)
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "Internal error; see the service logs.")


def create_app(settings: ServiceSettings, backends: Backends, store: VoiceStore | None = None) -> FastAPI:
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

    app = FastAPI(title="F5-TTS voice service", version="1", responses={400: {"model": ErrorResponse}},
                  lifespan=lifespan)
    _install_error_handlers(app)

    def require_key(request: Request) -> None:
        if not settings.api_keys:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        known = any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys)
        if scheme.lower() != "bearer" or not known:
            raise Unauthorized("Send a valid API key as 'Authorization: Bearer <key>'.", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next):
        # Before the multipart body is read and spooled, not after.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_upload_bytes + 64 * 1024:
            return error_response(413, "upload_too_large",
                                  f"The upload is over the {limits.max_upload_bytes} byte limit.")
        return await call_next(request)

    # The web page: public static files; the API calls it makes carry the key.
    web = Path(__file__).parent / "web"
    app.mount("/web", StaticFiles(directory=web), name="web")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(web / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @v1.get("/status")
    async def status() -> dict:
        return {"voices": len(await asyncio.to_thread(store.list)), **(await backends.status())}

    @v1.post("/voices", status_code=201, response_model=VoiceCreated)
    async def create_voice(
        name: str = Form(...),
        file: UploadFile = File(...),
        ref_text: str | None = Form(None),
        language: str | None = Form(None),
        overwrite: bool = Form(False),
    ) -> VoiceCreated:
        data = await file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise PayloadTooLarge(f"The upload is over the {limits.max_upload_bytes} byte limit.",
                                  code="upload_too_large")
        return await register_voice(store, backends.transcribe, limits, name=name, data=data, ref_text=ref_text,
                                    language=language or None, overwrite=overwrite)

    @v1.get("/voices", response_model=VoiceList)
    async def list_voices() -> VoiceList:
        return VoiceList(voices=await asyncio.to_thread(store.list))

    @v1.get("/voices/{name}", response_model=VoiceRecord)
    async def get_voice(name: str) -> VoiceRecord:
        return await asyncio.to_thread(store.get, name)

    @v1.get("/voices/{name}/audio", response_class=Response)
    async def get_voice_audio(name: str) -> Response:
        _, wav = await asyncio.to_thread(store.reference, name)
        return Response(wav, media_type="audio/wav")

    @v1.patch("/voices/{name}", response_model=VoiceRecord)
    async def patch_voice(name: str, patch: VoicePatch) -> VoiceRecord:
        return await asyncio.to_thread(correct_ref_text, store, limits, name, patch.ref_text)

    @v1.delete("/voices/{name}", status_code=204, response_class=Response)
    async def delete_voice(name: str) -> Response:
        await asyncio.to_thread(store.delete, name)
        return Response(status_code=204)

    @v1.post("/audio/speech", response_class=Response)
    async def speech(body: SpeechRequest) -> Response:
        media_type = audio.FORMATS[body.response_format][0]
        if body.stream:
            return StreamingResponse(await speech_service.stream(body), media_type=media_type)
        return Response(await speech_service.synthesize(body), media_type=media_type)

    # -- asynchronous jobs (docs/ARCHITECTURE.md, "Jobs") ------------------------------------------
    not_found = {404: {"model": ErrorResponse}}

    @v1.post("/jobs", status_code=202, response_model=Job, responses={**not_found, 413: {"model": ErrorResponse}})
    async def create_job(body: SpeechRequest, response: Response) -> Job:
        record = await job_runner.submit(body)
        response.headers["Location"] = f"/v1/jobs/{record.id}"
        return record.view()

    @v1.get("/jobs", response_model=JobList)
    async def list_jobs(limit: int = Query(20, ge=1, le=100),
                        after: str | None = Query(None, description="last_id of the previous page")) -> JobList:
        records, has_more = await asyncio.to_thread(jobs.list, limit, after)
        data = [r.view() for r in records]
        return JobList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                       has_more=has_more)

    @v1.get("/jobs/{job_id}", response_model=Job, responses=not_found)
    async def get_job(job_id: str) -> Job:
        return (await asyncio.to_thread(jobs.get, job_id)).view()

    @v1.get("/jobs/{job_id}/audio", response_class=Response, responses={**not_found, 409: {"model": ErrorResponse}})
    async def get_job_audio(job_id: str) -> Response:
        record, data = await asyncio.to_thread(jobs.result, job_id)
        return Response(data, media_type=audio.FORMATS[record.request.response_format][0])

    @v1.delete("/jobs/{job_id}", response_model=Job, responses={**not_found, 204: {"description": "removed"}})
    async def delete_job(job_id: str):
        cancelled = await asyncio.to_thread(jobs.cancel_or_remove, job_id)
        return cancelled.view() if cancelled else Response(status_code=204)

    app.include_router(v1)
    return app

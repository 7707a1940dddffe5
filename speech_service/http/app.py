"""The HTTP API (FastAPI). `create_app(settings, backends)` is served by the Ray ingress deployment;
`backends` is how it reaches the model replicas, so the API itself runs and tests without Ray."""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from speech_service.audio import encoding
from speech_service.config import ServiceSettings
from speech_service.errors import (
    PayloadTooLarge,
    Unauthorized,
)
from speech_service.http.errors import _install_error_handlers
from speech_service.http.middleware import RequestCounter, RequestIdMiddleware, UploadLimit
from speech_service.http.openapi import MODEL_ERRORS, SPEECH_EVENT_SCHEMA, _document, errors_for
from speech_service.schemas import (
    LANGUAGE_PATTERN,
    VOICE_NAME_PATTERN,
    Job,
    JobList,
    SpeechRequest,
    VoiceCreated,
    VoiceList,
    VoicePatch,
)
from speech_service.service.jobs import JobRunner
from speech_service.service.speech import Backends, SpeechService
from speech_service.service.voices import correct_ref_text, register_voice
from speech_service.storage.jobs import JobStore
from speech_service.storage.voices import VoiceRecord, VoiceStore, open_store

logger = logging.getLogger(__name__)


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
                             for media, _ in encoding.FORMATS.values()},
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
        media_type = encoding.FORMATS[body.response_format][0]
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
                          for media, _ in encoding.FORMATS.values()},
              "description": "The job's speech, in the format it asked for"},
        **errors_for(404, 409, 503)})
    async def get_job_audio(job_id: str) -> Response:
        record, data = await asyncio.to_thread(jobs.result, job_id)
        return Response(data, media_type=encoding.FORMATS[record.request.response_format][0])

    @v1.delete("/jobs/{job_id}", response_model=Job,
               responses={204: {"description": "removed"}, **errors_for(404, 503)})
    async def delete_job(job_id: str):
        cancelled = await asyncio.to_thread(jobs.cancel_or_remove, job_id)
        return cancelled.view() if cancelled else Response(status_code=204)

    app.include_router(v1)
    return app

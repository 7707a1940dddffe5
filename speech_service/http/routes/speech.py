"""`POST /v1/audio/speech`: OpenAI's speech endpoint, whole, streamed or as server-sent events."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, StreamingResponse

from speech_service.audio import encoding
from speech_service.http.auth import Caller, require
from speech_service.http.openapi import MODEL_ERRORS, SPEECH_EVENT_SCHEMA, TIMESTAMPS_SCHEMA, errors_for
from speech_service.http.services import Services, services
from speech_service.schemas import SpeechRequest, SpeechWithTimestamps
from speech_service.service.dry_run import DryRun

router = APIRouter(prefix="/v1/audio", tags=["speech"])

_AUDIO = {media: {"schema": {"type": "string", "format": "binary"}} for media, _ in encoding.FORMATS.values()}
_SPEECH_RESPONSE = {
    "content": {**_AUDIO, "text/event-stream": {"schema": SPEECH_EVENT_SCHEMA},
                "application/json": {"schema": TIMESTAMPS_SCHEMA}},
    "description": "Speech in the requested format (streamed when `stream` is true); with "
                   "`stream_format: \"sse\"`, `text/event-stream` of OpenAI's `speech.audio.delta` "
                   "and `speech.audio.done` events (and `speech.audio.timestamps` / `speech.audio.quality` "
                   "when asked for); a whole response with `timestamps`, JSON with the audio and its words",
    "headers": {"Server-Timing": {
        "description": "Whole (not streamed) responses: where the time went, in ms: `model`, the model "
                       "calls that made this speech; `total`, the request up to its encoded audio "
                       "(`model;dur=93.1, total;dur=97.4`)",
        "schema": {"type": "string"}},
        "X-Speech-Quality": {
            "description": "After a quality check: `passed=true; max_wer=0.35; wer=0.0500,0.1200; attempts=1,2` "
                           "(per segment, in order)", "schema": {"type": "string"}},
        "X-Speech-Warning": {"description": "The segments that never passed the check (without `require`)",
                             "schema": {"type": "string"}},
        "X-Content-Credentials": {
            "description": "Streams, and whole opus, aac and pcm files: where the C2PA manifest bound to "
                           "these bytes is kept (`/v1/provenance/{id}`; also as `Link: <…>; rel=\"c2pa-manifest\"`). "
                           "Whole wav, mp3 and flac files carry theirs inside.", "schema": {"type": "string"}}},
}


@router.post("/speech", response_class=Response,
             responses={200: _SPEECH_RESPONSE, **errors_for(400, 403, 404, 409, 413, 422, *MODEL_ERRORS)})
async def speech(body: SpeechRequest, caller: Caller = Depends(require("speak")),
                 s: Services = Depends(services)) -> Response:
    media_type = encoding.FORMATS[body.response_format][0]
    if body.stream_format == "sse":  # OpenAI's events: streamed whatever `stream` says
        events, headers = await s.speech.stream_events(body, caller.name)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    if body.stream:
        audio, headers = await s.speech.stream(body, caller.name)
        return StreamingResponse(audio, media_type=media_type, headers=headers)
    spoken = await s.speech.synthesize(body, caller.name)
    if body.timestamps is None:
        return Response(spoken.data, media_type=media_type, headers=spoken.headers())
    listened = spoken.listened
    return JSONResponse(SpeechWithTimestamps(
        audio=base64.b64encode(spoken.data).decode(), response_format=body.response_format,
        duration=round(spoken.duration_s, 3), words=listened.words, quality=listened.quality,
        warnings=listened.warnings).model_dump(), headers=spoken.headers())


@router.post("/speech/dry-run", response_model=DryRun,
             responses=errors_for(400, 403, 404, 413, 422, *MODEL_ERRORS))
async def speech_dry_run(body: SpeechRequest, caller: Caller = Depends(require("speak")),
                         s: Services = Depends(services)) -> DryRun:
    """What `POST /v1/audio/speech` with this body would ask the model to read, segment by segment
    (speaker, style, speed, pauses, the text after markup, lexicons and numbers, each word's place in
    `input`), without synthesis. It plans on the Synthesizer, as the speech would."""
    return await s.speech.dry_run(body)

"""ElevenLabs' HTTP text-to-speech: `POST /v1/text-to-speech/{voice_id}` (the whole audio),
`/stream` (the same, streamed sentence by sentence), `/with-timestamps` (JSON: the audio in base64
and each character's times) and `/stream/with-timestamps` (newline-delimited JSON objects of that
shape, one per chunk, times from the start of the request's audio), in the `output_format` the query
names. Keys as ElevenLabs' clients send them (`xi-api-key`) or ours; errors in our (OpenAI's) shape
(docs/ARCHITECTURE.md, "ElevenLabs' HTTP endpoints")."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speech_service.audio.output_formats import SUPPORTED, OutputFormat, parse_output_format
from speech_service.errors import BadRequest, Unprocessable
from speech_service.http.auth import Caller, require
from speech_service.http.elevenlabs import DEFAULT_OUTPUT_FORMAT, VoiceSettings, model_for
from speech_service.http.openapi import MODEL_ERRORS, errors_for
from speech_service.http.services import Services, services
from speech_service.models import ModelRegistry
from speech_service.schemas import SpeechRequest
from speech_service.service.alignment import Alignment
from speech_service.service.text_to_speech import TextToSpeech, TimedAudio

router = APIRouter(prefix="/v1/text-to-speech", tags=["text-to-speech"])

NDJSON = "application/x-ndjson"
_ERRORS = errors_for(400, 403, 404, 413, 422, *MODEL_ERRORS)
_AUDIO = {"content": {media: {"schema": {"type": "string", "format": "binary"}}
                      for media in sorted({f.media_type for f in SUPPORTED.values()})},
          "description": "The audio in `output_format`: raw 16-bit little-endian PCM (`audio/pcm`), G.711 mu-law "
                         "(`audio/basic`) or an MP3 file (`audio/mpeg`)"}
_TIMED = {"type": "object", "properties": {
    "audio_base64": {"type": "string"},
    "alignment": {"type": "object", "properties": {
        "characters": {"type": "array", "items": {"type": "string"}},
        "character_start_times_seconds": {"type": "array", "items": {"type": "number"}},
        "character_end_times_seconds": {"type": "array", "items": {"type": "number"}}}},
    "normalized_alignment": {"type": "object"}}}
_WITH_TIMESTAMPS = {"content": {"application/json": {"schema": _TIMED}},
                    "description": "The audio (base64) and where each character sent falls in it"}
_STREAM_WITH_TIMESTAMPS = {"content": {NDJSON: {"schema": _TIMED}},
                           "description": "One JSON object a line: a chunk of the audio and its characters"}


class TextToSpeechBody(BaseModel):
    """ElevenLabs' body. Used: `text`, `model_id` (an ElevenLabs id such as `eleven_flash_v2_5`, or none,
    means the voice's model, as OpenAI's `tts-1` does; our model names as they are), `voice_settings.speed`
    and `seed`. Accepted and ignored: `voice_settings`' stability, similarity_boost, style and
    use_speaker_boost, `language_code`, `previous_text`, `next_text`, `previous_request_ids`,
    `next_request_ids`, `apply_text_normalization`, `pronunciation_dictionary_locators`, and any field
    this service does not know (clients send new ones); so are the query's `optimize_streaming_latency`
    and `enable_logging`."""

    model_config = ConfigDict(extra="allow")
    text: str = Field(..., description="The text to speak")
    model_id: str | None = None
    voice_settings: VoiceSettings | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="ElevenLabs' range; folded into ours")
    language_code: str | None = None
    previous_text: str | None = None
    next_text: str | None = None
    previous_request_ids: list | None = None
    next_request_ids: list | None = None
    apply_text_normalization: str | None = None
    pronunciation_dictionary_locators: list | None = None


def speech_request(voice_id: str, body: TextToSpeechBody, models: ModelRegistry) -> SpeechRequest:
    """Our speech request for ElevenLabs' (400 or 422 naming the field at fault)."""
    fields: dict = {"voice": voice_id, "input": body.text, "model": model_for(body.model_id, models),
                    "response_format": "pcm"}
    if body.voice_settings is not None and body.voice_settings.speed is not None:
        fields["speed"] = body.voice_settings.speed
    if body.seed is not None:
        fields["seed"] = body.seed % 2**31  # ours are 31-bit
    try:
        return SpeechRequest.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        if field == "voice":
            raise BadRequest(f"voice_id: {error['msg']}.", code="invalid_voice_name", param="voice_id") from None
        if field == "input":
            raise BadRequest("text is empty.", code="empty_input", param="text") from None
        param = "voice_settings.speed" if field == "speed" else field
        raise Unprocessable(f"{param}: {error['msg']}.", code="invalid_request", param=param) from None


def _output_format(output_format: str = Query(DEFAULT_OUTPUT_FORMAT, description="The audio's codec, rate and bitrate",
                                              json_schema_extra={"enum": list(SUPPORTED)})) -> OutputFormat:
    return parse_output_format(output_format)  # ours, not FastAPI's check: a 400 that lists the names


@router.post("/{voice_id}", response_class=Response, responses={200: _AUDIO, **_ERRORS})
async def text_to_speech(voice_id: str, body: TextToSpeechBody, fmt=Depends(_output_format),
                         caller: Caller = Depends(require("speak")), s: Services = Depends(services)) -> Response:
    """The whole audio, made as `/v1/audio/speech` makes it."""
    spoken = await TextToSpeech(s.speech).whole(speech_request(voice_id, body, s.models), fmt, caller.name)
    return Response(spoken.data, media_type=fmt.media_type, headers=spoken.headers())


@router.post("/{voice_id}/stream", response_class=StreamingResponse, responses={200: _AUDIO, **_ERRORS})
async def text_to_speech_stream(voice_id: str, body: TextToSpeechBody, fmt=Depends(_output_format),
                                caller: Caller = Depends(require("speak")),
                                s: Services = Depends(services)) -> StreamingResponse:
    """The audio as each sentence is made (an MP3 stream is one MP3 file per sentence, back to back)."""
    timed, headers = await TextToSpeech(s.speech).stream(speech_request(voice_id, body, s.models), body.text,
                                                         fmt, caller.name)
    return StreamingResponse(_audio(timed), media_type=fmt.media_type, headers=headers)


@router.post("/{voice_id}/with-timestamps", response_class=JSONResponse, responses={200: _WITH_TIMESTAMPS, **_ERRORS})
async def text_to_speech_with_timestamps(voice_id: str, body: TextToSpeechBody, fmt=Depends(_output_format),
                                         caller: Caller = Depends(require("speak")),
                                         s: Services = Depends(services)) -> JSONResponse:
    """The whole audio and each character's times (from the plan), on exactly the characters sent."""
    timed, headers = await TextToSpeech(s.speech).with_timestamps(speech_request(voice_id, body, s.models),
                                                                  body.text, fmt, caller.name)
    return JSONResponse(_timed_json(timed), headers=headers)


@router.post("/{voice_id}/stream/with-timestamps", response_class=StreamingResponse,
             responses={200: _STREAM_WITH_TIMESTAMPS, **_ERRORS})
async def text_to_speech_stream_with_timestamps(voice_id: str, body: TextToSpeechBody, fmt=Depends(_output_format),
                                                caller: Caller = Depends(require("speak")),
                                                s: Services = Depends(services)) -> StreamingResponse:
    """The stream's chunks as JSON lines, each with its characters' times from the request's start."""
    timed, headers = await TextToSpeech(s.speech).stream(speech_request(voice_id, body, s.models), body.text,
                                                         fmt, caller.name)
    return StreamingResponse(_lines(timed), media_type=NDJSON, headers=headers)


async def _audio(timed: AsyncIterator[TimedAudio]) -> AsyncIterator[bytes]:
    async for chunk in timed:
        yield chunk.audio


async def _lines(timed: AsyncIterator[TimedAudio]) -> AsyncIterator[bytes]:
    async for chunk in timed:
        yield (json.dumps(_timed_json(chunk)) + "\n").encode()


def _timed_json(timed: TimedAudio) -> dict:
    alignment = _seconds(timed.alignment)
    # Ours are the caller's characters either way: nothing normalised to show apart.
    return {"audio_base64": base64.b64encode(timed.audio).decode(), "alignment": alignment,
            "normalized_alignment": alignment}


def _seconds(alignment: Alignment) -> dict[str, list]:
    """ElevenLabs' HTTP alignment: each character's start and end, in seconds."""
    return {"characters": alignment.chars,
            "character_start_times_seconds": [round(s, 3) for s in alignment.starts_s],
            "character_end_times_seconds": [round(s + d, 3) for s, d in zip(alignment.starts_s,
                                                                             alignment.durations_s)]}

"""ElevenLabs' text-to-speech WebSocket protocol (`multi-stream-input`, and `stream-input`, its
one-context form): the settings a socket's URL carries, the messages a client sends, and the shapes
of what the service sends back (docs/ARCHITECTURE.md, "Live text in"). Framing only: contexts, cutting
and speech are `service.live`'s; the socket itself is `routes/live_socket.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from speech_service.audio.output_formats import OutputFormat, parse_output_format
from speech_service.errors import BadRequest, ServiceError
from speech_service.models import ModelRegistry
from speech_service.schemas import SpeechRequest

DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"  # ElevenLabs' own default
DEFAULT_INACTIVITY_S, MAX_INACTIVITY_S = 20, 180
# A hosted model's id (`eleven_flash_v2_5`, ...) means the voice's model, as OpenAI's `tts-1` does.
HOSTED_MODEL_PREFIX = "eleven_"


@dataclass(frozen=True)
class SocketSettings:
    """What a socket's query string asks for; every other ElevenLabs setting (`auto_mode`,
    `sync_alignment`, `enable_logging`, `apply_text_normalization`, ...) is accepted and ignored."""

    model: str
    output_format: OutputFormat
    inactivity_timeout_s: int
    seed: int | None
    heard: bool  # `alignment=heard` (ours): each piece's times heard by the Transcriber

    @classmethod
    def of(cls, query: Mapping[str, str], models: ModelRegistry) -> SocketSettings:
        return cls(model_for(query.get("model_id"), models),
                   parse_output_format(query.get("output_format") or DEFAULT_OUTPUT_FORMAT),
                   _whole(query, "inactivity_timeout", DEFAULT_INACTIVITY_S, 1, MAX_INACTIVITY_S),
                   _whole(query, "seed", None, 0, 2**31 - 1), _alignment(query.get("alignment")))


def model_for(model_id: str | None, models: ModelRegistry) -> str:
    """Our model name for a socket's `model_id`: a hosted id (or none) means the voice's model."""
    if model_id in models.names():
        return model_id
    if model_id is None or model_id.startswith(HOSTED_MODEL_PREFIX):
        return models.generic[0] if models.generic else models.default
    raise BadRequest(f"Unknown model_id '{model_id}'; use one of {json.dumps(models.names())}, or an "
                     f"ElevenLabs model id ({HOSTED_MODEL_PREFIX}...) for the voice's model.",
                     code="unknown_model", param="model_id")


def _whole(query: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    value = query.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not '{value[:32]}'.",
                         code=f"invalid_{name}", param=name)
    return int(value)


def _alignment(value: str | None) -> bool:
    if value not in (None, "plan", "heard"):
        raise BadRequest(f"alignment is 'plan' (the default: times from the model's plan) or 'heard' (times "
                         f"heard in the audio, a Transcriber pass per piece), not '{value[:32]}'.",
                         code="invalid_alignment", param="alignment")
    return value == "heard"


class VoiceSettings(BaseModel):
    """ElevenLabs' `voice_settings`: `speed` is ours too; stability, similarity_boost, style and
    use_speaker_boost have no F5-TTS counterpart and are ignored."""

    model_config = ConfigDict(extra="ignore")
    speed: float | None = None


class ClientMessage(BaseModel):
    """One message a client sends; fields this service has no use for (`generation_config`,
    `try_trigger_generation`, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")
    text: str | None = None
    context_id: str | None = Field(None, min_length=1, max_length=128)
    flush: bool = False
    close_context: bool = False
    close_socket: bool = False
    voice_settings: VoiceSettings | None = None
    xi_api_key: str | None = None

    @property
    def keeps_alive(self) -> bool:
        """`{"text": ""}`: says the client is there, and ends nothing on `multi-stream-input`."""
        return self.text == ""


def parse_message(raw: str | bytes, limit: int) -> ClientMessage:
    """A client's message, read only if at most `limit` long (400 otherwise)."""
    if len(raw) > limit:
        raise BadRequest(f"A message holds at most {limit} bytes of JSON; send the text in smaller chunks.",
                         code="message_too_large")
    try:
        return ClientMessage.model_validate(json.loads(raw))
    except (ValueError, RecursionError) as exc:  # bad JSON, or valid JSON of the wrong shape
        detail = _first_problem(exc) if isinstance(exc, ValidationError) else "not valid JSON"
        raise BadRequest(f"Unreadable message: {detail}.", code="invalid_message") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc']) or 'message'}: {error['msg']}"


def context_body(voice_id: str, settings: SocketSettings, voice: VoiceSettings | None) -> dict:
    """The speech request fields a context's pieces are spoken with, checked now (400 naming the field)."""
    body: dict = {"voice": voice_id, "model": settings.model}
    if settings.seed is not None:
        body["seed"] = settings.seed
    if voice is not None and voice.speed is not None:
        body["speed"] = voice.speed
    try:
        SpeechRequest.model_validate({**body, "input": "."})
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        raise BadRequest(f"Cannot speak with these settings: {_first_problem(exc)}.",
                         code="invalid_voice_name" if field == "voice" else "invalid_voice_settings",
                         param="voice_id" if field == "voice" else f"voice_settings.{field}") from None
    return body


def _ids(context_id: str | None) -> dict:
    """Both spellings: Pipecat reads `contextId`, LiveKit either; `stream-input` sends none."""
    return {} if context_id is None else {"contextId": context_id, "context_id": context_id}


def audio_message(audio_b64: str, alignment: dict, context_id: str | None) -> dict:
    """One piece: its audio and its characters' times, relative to this message's audio (Pipecat
    adds each message's length to its clock). Both alignments: Pipecat reads `alignment`, LiveKit
    `normalizedAlignment`; ours are the caller's characters either way."""
    return {"audio": audio_b64, "alignment": alignment, "normalizedAlignment": alignment, **_ids(context_id)}


def final_message(context_id: str | None) -> dict:
    return {"isFinal": True, **_ids(context_id)}


def error_message(error: ServiceError, context_id: str | None) -> dict:
    """The protocol's error: LiveKit fails the context it names with `error`."""
    return {"message": error.message, "error": error.code, "code": error.status_code, **_ids(context_id)}

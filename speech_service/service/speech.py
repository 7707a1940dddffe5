"""The speech steps of one request, without HTTP: check it, load the voice, call the Synthesizer,
encode. Routes (`api.py`) and jobs both go through `SpeechService`."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel

from speech_service import audio, metrics
from speech_service.audio import encoding
from speech_service.audio.output_formats import OutputFormat, encode_piece
from speech_service.config import QualityCheck, ServiceSettings, SynthesisOptions
from speech_service.errors import BadRequest, PayloadTooLarge, ReferenceMissing, ServiceError, Unprocessable
from speech_service.logs import current_request_id, with_request_id
from speech_service.models import ModelRegistry
from speech_service.plans import SpeechPlan
from speech_service.provenance.credentials import ContentCredentials
from speech_service.references import Reference
from speech_service.schemas import (
    ErrorBody,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechRequest,
    SpeechStreamError,
    SpeechUsage,
)
from speech_service.service import marking
from speech_service.service.audit import AuditLog
from speech_service.service.direction import Director
from speech_service.service.dry_run import DryRun, dry_run
from speech_service.service.lexicons import LexiconService
from speech_service.service.listened import Listened, ListenedSpeech
from speech_service.storage.audit import AuditStore
from speech_service.storage.provenance import ProvenanceStore
from speech_service.storage.voices import VoiceStore
from speech_service.text.script import Script
from speech_service.transcription.heard import HeardWord

T = TypeVar("T")
Headers = dict[str, str]
# pcm/wav of up to 30 s of speech are encoded on the event loop (about 2 ms at most); longer ones
# and the compressed formats (libsndfile or ffmpeg) in a thread, so one long response does not
# stall the others.
_INLINE_ENCODE_SAMPLES = 30 * audio.SAMPLE_RATE


class Backends(Protocol):
    """The model side of the service, as the API sees it."""

    async def synthesize(self, reference: Reference, text: str | Script, options: SynthesisOptions) -> audio.Speech:
        """The whole speech of plain text in `reference`'s voice, or of a script (its references
        `reference`'s model); `options` are the request's sampling overrides. Raises
        `ReferenceMissing` when a reference comes without its clip and the model side lacks it."""

    def stream(self, reference: Reference, text: str | Script, options: SynthesisOptions) -> AsyncIterator[np.ndarray]:
        """The same speech as `synthesize`, one piece per text segment as each is ready."""

    async def plan(self, reference: Reference, text: str | Script, options: SynthesisOptions,
                   streaming: bool = False) -> SpeechPlan:
        """The plan `synthesize` (or with `streaming`, `stream`) would follow: its segments, knobs, seed."""

    async def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int) -> audio.Speech:
        """Segment `index` of `plan` in `reference`'s voice (its segment's), as `synthesize` has it
        before the seams."""

    async def transcribe(self, audio: np.ndarray, language: str | None) -> str: ...

    async def listen(self, clips: list[np.ndarray], language: str | None) -> list[list[HeardWord]]:
        """The words heard in each clip of speech made, timed (`transcription.heard`)."""

    async def status(self) -> dict[str, Any]:
        """Deployment and model state; must not wake any model replica."""


@dataclass(frozen=True)
class EncodedSpeech:
    data: bytes
    model_s: float  # the model calls' wall time (`audio.Speech`)
    total_s: float  # from the request's start to its encoded audio
    duration_s: float
    listened: Listened | None = None  # captions and the quality check, when asked for
    sidecar_id: str | None = None  # where its Content Credentials are kept, when not inside `data`

    def headers(self) -> dict[str, str]:
        """`Server-Timing` (where the time went, in ms) and, after a quality check,
        `X-Speech-Quality` (`passed=true; max_wer=0.35; wer=0.05,0.12; attempts=1,2`, per segment)
        and `X-Speech-Warning` for the segments that never passed."""
        headers = {"Server-Timing": f"model;dur={1000 * self.model_s:.1f}, total;dur={1000 * self.total_s:.1f}"}
        quality = self.listened.quality if self.listened else None
        if quality is not None:
            headers["X-Speech-Quality"] = (
                f"passed={str(quality.passed).lower()}; max_wer={quality.max_wer:g}; "
                f"wer={','.join(f'{q.wer:.4f}' for q in quality.segments)}; "
                f"attempts={','.join(str(q.attempts) for q in quality.segments)}")
        if self.listened and self.listened.warnings:
            headers["X-Speech-Warning"] = " | ".join(self.listened.warnings)
        if self.sidecar_id:
            headers.update(marking.sidecar_headers(self.sidecar_id))
        return headers


class SpeechService:
    def __init__(self, settings: ServiceSettings, store: VoiceStore, backends: Backends):
        self.settings = settings
        self.store = store
        self.backends = backends
        self.models = ModelRegistry.of(settings)
        self.director = Director(settings, store, self.models, LexiconService(store.objects, settings.limits))
        self.listened = ListenedSpeech(self)
        self.audit = AuditLog(AuditStore(store.objects), settings.audit)
        self.marker = marking.SpeechMarker(ContentCredentials(settings.provenance), ProvenanceStore(
            store.objects, settings.provenance.sidecar_ttl_s), self.audit, settings.provenance.landing_wait_s)

    def check(self, body: SpeechRequest) -> None:
        if body.model not in self.models.generic:
            self.models.canonical(body.model)  # 400 unknown_model
        if not body.input.strip():
            raise BadRequest("input is empty.", code="empty_input", param="input")
        limit = self.settings.limits.max_input_chars
        if len(body.input) > limit:
            raise PayloadTooLarge(f"input has {len(body.input)} characters; the limit is {limit}.",
                                  code="input_too_long", param="input")
        cap = self.settings.quality.max_retries
        if isinstance(body.quality, QualityCheck) and (body.quality.retries or 0) > cap:
            raise Unprocessable(f"quality.retries is {body.quality.retries}; this service allows at most {cap}.",
                                code="too_many_retries", param="quality")
        if body.timestamps and body.stream and body.stream_format != "sse":
            raise BadRequest('timestamps of a stream come as events: send stream_format "sse" (a stream of '
                             "audio bytes has no room for them), or ask for the whole response.",
                             code="timestamps_need_events", param="timestamps")

    async def send(self, script: Script, call: Callable[[Script], Awaitable[T]]) -> T:
        """`call(script)` with its clips named only; sent again with the clips when the replica
        lacks one (once per voice and replica). A script that came without its clips takes the
        voices' current records and clips then (`Director.with_clips`)."""
        try:
            return await call(replace(script, references=tuple(r.named() for r in script.references)))
        except ReferenceMissing:
            if any(reference.wav is None for reference in script.references):
                script = await self.director.with_clips(script)
            return await call(script)

    async def dry_run(self, body: SpeechRequest) -> DryRun:
        """What the model would be asked to read, segment by segment, and nothing synthesized."""
        self.check(body)
        script = await self.director.script(body)
        options = body.options()
        plan = await self.send(script, lambda s: self.backends.plan(s.references[0], s.sent(), options, body.stream))
        return dry_run(body.input, script, plan)

    async def synthesize(self, body: SpeechRequest, key: str | None = None,
                         output: OutputFormat | None = None) -> EncodedSpeech:
        """The whole speech, encoded in the requested format (ElevenLabs' `output`, when given), with
        its Content Credentials; `key` is the caller's key name."""
        started = time.monotonic()
        self.check(body)
        options, listened = body.options(), None
        script = await self.director.script(body)
        fmt = body.response_format if output is None else output.credentials_format
        # A sidecar's id is claimed in the store while the speech is made.
        reserved = self.marker.reserve(current_request_id(), fmt)
        try:
            if self.listened.wanted(body):
                speech, listened = await self.listened.whole(body, script)
            else:
                speech = await self.send(script, lambda s: self.backends.synthesize(s.references[0], s.sent(), options))
            metrics.record_first_audio(started, stream=False)
            wave = speech.wave
            metrics.record_speech(len(wave) / audio.SAMPLE_RATE, time.monotonic() - started, stream=False)
            if output is not None:
                data = await asyncio.to_thread(encode_piece, wave, output)
            elif body.response_format in encoding.RAW_FORMATS and len(wave) <= _INLINE_ENCODE_SAMPLES:
                data = encoding.encode(wave, body.response_format)  # cheaper than the hop to a thread
            else:
                data = await asyncio.to_thread(encoding.encode, wave, body.response_format)
            facts = marking.facts(body, script, current_request_id(), key)
            marked = await self.marker.response(data, fmt, facts, reserved)
        except BaseException:
            await asyncio.shield(self.marker.give_back(reserved))  # before the error goes out
            raise
        return EncodedSpeech(marked.data, speech.model_s, time.monotonic() - started, len(wave) / audio.SAMPLE_RATE,
                             listened, marked.sidecar_id)

    async def stream(self, body: SpeechRequest, key: str | None = None) -> tuple[AsyncIterator[bytes], Headers]:
        """Encoded audio as segments are ready, and the headers that say where its sidecar manifest
        will be. The first piece is awaited before this returns, so errors surface here (and keep
        their HTTP status) rather than inside a started response."""
        encoded, _, script, reserved = await self._open_stream(body)
        encoded, sidecar_id = await self.marker.stream(
            encoded, marking.facts(body, script, current_request_id(), key), body.response_format,
            reserved)
        return encoded, marking.sidecar_headers(sidecar_id)

    async def stream_events(self, body: SpeechRequest, key: str | None = None) -> tuple[AsyncIterator[bytes], Headers]:
        """OpenAI's `stream_format: "sse"`: the audio of `stream`, base64 in `speech.audio.delta`
        events, then `speech.audio.done` with the usage in F5's units: the input's characters and
        the mel frames made (F5 reads characters and writes frames); or, when the stream broke off,
        an `error` event instead of `speech.audio.done`. The sidecar manifest binds the audio the
        deltas carry, decoded and joined."""
        encoded, pieces, script, reserved = await self._open_stream(body)
        encoded, sidecar_id = await self.marker.stream(
            encoded, marking.facts(body, script, current_request_id(), key), body.response_format,
            reserved)
        return _events(encoded, pieces, len(body.input)), marking.sidecar_headers(sidecar_id)

    async def _open_stream(self, body: SpeechRequest) -> tuple[AsyncIterator[bytes], _SpokenPieces, Script,
                                                               asyncio.Future[str]]:
        """The encoded stream, its first piece made, and its sidecar's id being reserved."""
        started = time.monotonic()
        self.check(body)
        script = await self.director.script(body)
        reserved = self.marker.reserve(current_request_id())  # while the first piece is made
        encoder = encoding.StreamEncoder(body.response_format)
        encoder.start()  # ffmpeg starts while the first segment is made
        try:
            pieces = _SpokenPieces(started)
            fill = self._listened_pieces if self.listened.wanted(body) else self._model_pieces
            await fill(body, script, pieces)
        except BaseException:
            await asyncio.shield(self.marker.give_back(reserved))  # before the error goes out
            await encoder.close()
            raise
        metrics.record_first_audio(started, stream=True)
        return encoder.encode(pieces), pieces, script, reserved

    async def _model_pieces(self, body: SpeechRequest, script: Script, pieces: _SpokenPieces) -> None:
        """The Synthesizer's own stream, its first piece made."""
        async def first_piece(script: Script) -> tuple[AsyncIterator[np.ndarray], np.ndarray]:
            stream = self.backends.stream(script.references[0], script.sent(), body.options())
            return stream, await anext(stream)

        pieces.rest, pieces.first = await self.send(script, first_piece)

    async def _listened_pieces(self, body: SpeechRequest, script: Script, pieces: _SpokenPieces) -> None:
        """Segments made and heard here (`ListenedSpeech.stream`), the first made; each segment's
        events are queued as its audio goes to the encoder."""
        listened = self.listened.stream(body, script)
        first = await anext(listened)
        pieces.first = first.wave
        pieces.events.extend(first.events)

        async def rest() -> AsyncIterator[np.ndarray]:
            async for piece in listened:
                pieces.events.extend(piece.events)
                if piece.wave is not None:
                    yield piece.wave

        pieces.rest = rest()


async def _events(encoded: AsyncIterator[bytes], pieces: _SpokenPieces, input_tokens: int) -> AsyncIterator[bytes]:
    """Audio deltas, each followed by the events (timestamps, quality) of the audio fed so far."""
    try:
        async for data in encoded:
            yield _event(SpeechAudioDelta(audio=base64.b64encode(data).decode()))
            while pieces.events:
                yield _event(pieces.events.popleft())
    except ServiceError as exc:  # the stream broke off (StreamInterrupted), or a required check failed
        yield _event(SpeechStreamError(error=ErrorBody(
            message=with_request_id(exc.message), type=exc.type, param=exc.param, code=exc.code)))
        return
    while pieces.events:
        yield _event(pieces.events.popleft())
    output_tokens = pieces.samples // audio.HOP_LENGTH
    yield _event(SpeechAudioDone(usage=SpeechUsage(input_tokens=input_tokens, output_tokens=output_tokens,
                                                   total_tokens=input_tokens + output_tokens)))


def _event(event: BaseModel) -> bytes:
    return f"data: {event.model_dump_json()}\n\n".encode()


class _SpokenPieces:
    """A stream's pieces, its first already made (None: held back by a seam), and the events that
    go after the audio fed so far; counts the samples and records them at the end."""

    def __init__(self, started: float):
        self.started, self.samples = started, 0
        self.first: np.ndarray | None = None
        self.rest: AsyncIterator[np.ndarray] | None = None
        self.events: deque[BaseModel] = deque()

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        if self.first is not None:
            self.samples = len(self.first)
            yield self.first
        async for piece in self.rest:
            self.samples += len(piece)
            yield piece
        metrics.record_speech(self.samples / audio.SAMPLE_RATE, time.monotonic() - self.started, stream=True)

"""The speech steps of one request, without HTTP: check it, load the voice, call the Synthesizer,
encode. Routes (`api.py`) and jobs both go through `SpeechService`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import numpy as np

from . import audio, metrics
from .config import ServiceSettings, SynthesisOptions
from .errors import BadRequest, PayloadTooLarge, ReferenceMissing
from .references import Reference
from .schemas import SpeechRequest
from .store import VoiceStore

T = TypeVar("T")
# pcm/wav of up to 30 s of speech are encoded on the event loop (about 2 ms at most); longer ones
# and the ffmpeg formats in a thread, so one long response does not stall the others.
_INLINE_ENCODE_SAMPLES = 30 * audio.SAMPLE_RATE


class Backends(Protocol):
    """The model side of the service, as the API sees it."""

    async def synthesize(self, reference: Reference, text: str, options: SynthesisOptions) -> np.ndarray:
        """24 kHz mono float32 speech; `options` are the request's sampling overrides. Raises
        `ReferenceMissing` when `reference` comes without its clip and the model side lacks it."""

    def stream(self, reference: Reference, text: str, options: SynthesisOptions) -> AsyncIterator[np.ndarray]:
        """The same speech as `synthesize`, one piece per text segment as each is ready."""

    async def transcribe(self, audio: np.ndarray, language: str | None) -> str: ...

    async def status(self) -> dict[str, Any]:
        """Deployment and model state; must not wake any model replica."""


class SpeechService:
    def __init__(self, settings: ServiceSettings, store: VoiceStore, backends: Backends):
        self.settings = settings
        self.store = store
        self.backends = backends

    def check(self, body: SpeechRequest) -> None:
        accepted = self.settings.accepted_models
        if body.model not in accepted:
            raise BadRequest(f"Unknown model '{body.model}'; use one of {json.dumps(accepted)}.",
                             code="unknown_model", param="model")
        if not body.input.strip():
            raise BadRequest("input is empty.", code="empty_input", param="input")
        limit = self.settings.limits.max_input_chars
        if len(body.input) > limit:
            raise PayloadTooLarge(f"input has {len(body.input)} characters; the limit is {limit}.",
                                  code="input_too_long", param="input")

    async def reference(self, voice: str) -> Reference:
        """The voice's transcript and its clip's sha256, from one record; the clip is not read."""
        record = await asyncio.to_thread(self.store.get, voice)
        return Reference(voice, record.sha256, record.ref_text)

    async def reference_with_clip(self, voice: str) -> Reference:
        record, wav = await asyncio.to_thread(self.store.reference, voice)
        return Reference(voice, record.sha256, record.ref_text, wav)

    async def send(self, reference: Reference, call: Callable[[Reference], Awaitable[T]]) -> T:
        """`call(reference)` with the clip named only; sent again with the clip when the replica
        lacks it (once per voice and replica). A reference that came without its clip takes the
        voice's current record and clip then, both together."""
        try:
            return await call(reference.named())
        except ReferenceMissing:
            if reference.wav is None:
                reference = await self.reference_with_clip(reference.voice)
            return await call(reference)

    async def synthesize(self, body: SpeechRequest) -> bytes:
        """The whole speech, encoded in the requested format."""
        started = time.monotonic()
        self.check(body)
        options = body.options()
        speech = await self.send(await self.reference(body.voice),
                                 lambda reference: self.backends.synthesize(reference, body.input, options))
        metrics.record_first_audio(started, stream=False)
        metrics.record_speech(len(speech) / audio.SAMPLE_RATE, time.monotonic() - started, stream=False)
        if body.response_format in audio.RAW_FORMATS and len(speech) <= _INLINE_ENCODE_SAMPLES:
            return audio.encode(speech, body.response_format)  # cheaper than the hop to a thread
        return await asyncio.to_thread(audio.encode, speech, body.response_format)

    async def stream(self, body: SpeechRequest) -> AsyncIterator[bytes]:
        """Encoded audio as segments are ready. The first piece is awaited before this returns, so
        errors surface here (and keep their HTTP status) rather than inside a started response."""
        started = time.monotonic()
        self.check(body)
        options = body.options()

        async def first_piece(reference: Reference) -> tuple[AsyncIterator[np.ndarray], np.ndarray]:
            pieces = self.backends.stream(reference, body.input, options)
            return pieces, await anext(pieces)

        encoder = audio.StreamEncoder(body.response_format)
        encoder.start()  # ffmpeg starts while the first segment is made
        try:
            pieces, first = await self.send(await self.reference(body.voice), first_piece)
        except BaseException:
            await encoder.close()
            raise
        metrics.record_first_audio(started, stream=True)
        return encoder.encode(_prepend(first, pieces, started))


async def _prepend(first: np.ndarray, rest: AsyncIterator[np.ndarray], started: float) -> AsyncIterator[np.ndarray]:
    samples = len(first)
    yield first
    async for piece in rest:
        samples += len(piece)
        yield piece
    metrics.record_speech(samples / audio.SAMPLE_RATE, time.monotonic() - started, stream=True)

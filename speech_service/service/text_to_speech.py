"""ElevenLabs' HTTP text-to-speech over the speech service (docs/ARCHITECTURE.md, "ElevenLabs' HTTP
endpoints"): the whole audio is `SpeechService.synthesize`'s, encoded in an ElevenLabs output format;
the whole audio with its characters' times is one `LiveSpeech` piece; a stream is a `LiveSession` of
one context, so it is cut and spoken sentence by sentence as the socket's contexts are. Every response
is marked as `/v1/audio/speech`'s are: an audit entry, and Content Credentials over the audio bytes
(inside an MP3 file, else a sidecar named in the headers)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from speech_service.audio import SAMPLE_RATE
from speech_service.audio.output_formats import OutputFormat, encode_piece
from speech_service.logs import current_request_id
from speech_service.provenance.credentials import SpeechFacts
from speech_service.schemas import SpeechRequest
from speech_service.service import marking
from speech_service.service.alignment import Alignment
from speech_service.service.live import ContextDone, ContextFailed, LiveSession, LiveSpeech, Spoken
from speech_service.service.speech import EncodedSpeech, Headers, SpeechService

# Bytes of audio in one streamed chunk at most: a line of the timestamped stream (base64, about 90 kB)
# stays well under what an HTTP client reads as one line (aiohttp's default: 512 KiB).
CHUNK_BYTES = 64 * 1024
_CONTEXT = "http"  # the one context of a streamed request


@dataclass(frozen=True)
class TimedAudio:
    """Encoded audio and its characters' times, in seconds from the start of the request's audio."""

    audio: bytes
    alignment: Alignment


class TextToSpeech:
    def __init__(self, speech: SpeechService):
        self.speech = speech

    async def whole(self, body: SpeechRequest, output: OutputFormat, key: str | None) -> EncodedSpeech:
        return await self.speech.synthesize(body, key, output)

    async def _facts(self, body: SpeechRequest, key: str | None) -> SpeechFacts:
        """What the audit entry and the credentials say of the speech; its voice is looked up now, so
        a refusal (404, 403) comes before any audio. Its pieces are plain text (`LiveSpeech`), so is this."""
        self.speech.check(body)
        script = await self.speech.director.script(body, markup=False)
        return marking.facts(body, script, current_request_id(), key)

    async def with_timestamps(self, body: SpeechRequest, text: str, output: OutputFormat,
                              key: str | None) -> tuple[TimedAudio, Headers]:
        """The whole audio, made as one piece, and where each character of `text` (the caller's, as
        sent) falls in it, from the plan."""
        speech, facts = self.speech, await self._facts(body, key)
        reserved = speech.marker.reserve(current_request_id(), output.credentials_format)
        try:
            wave, alignment = await LiveSpeech(speech).speak(_fields(body), text)
            data = await asyncio.to_thread(encode_piece, wave, output)
            marked = await speech.marker.response(data, output.credentials_format, facts, reserved)
        except BaseException:
            await asyncio.shield(speech.marker.give_back(reserved))
            raise
        headers = marking.sidecar_headers(marked.sidecar_id) if marked.sidecar_id else {}
        return TimedAudio(marked.data, alignment), headers

    async def stream(self, body: SpeechRequest, text: str, output: OutputFormat,
                     key: str | None) -> tuple[AsyncIterator[TimedAudio], Headers]:
        """The audio in chunks of at most `CHUNK_BYTES` as each sentence is made, each with its
        characters' times. The first sentence is made before this returns, so a refusal keeps its
        HTTP status; the sidecar binds the audio bytes of every chunk, joined."""
        speech, facts = self.speech, await self._facts(body, key)
        pieces = _pieces(speech, _fields(body), text)
        reserved = speech.marker.reserve(current_request_id())
        try:
            first = await anext(pieces)
        except BaseException:
            await asyncio.shield(speech.marker.give_back(reserved))
            await pieces.aclose()
            raise
        alignments: deque[Alignment] = deque()
        audio = _encoded(first, pieces, output, alignments)
        marked, sidecar_id = await speech.marker.stream(audio, facts, output.name, reserved)
        return _timed(marked, alignments), marking.sidecar_headers(sidecar_id)


def _fields(body: SpeechRequest) -> dict:
    """What `LiveSpeech.speak` speaks each piece with: the request's settings, without its text."""
    return body.model_dump(exclude_unset=True, exclude={"input", "response_format"})


async def _pieces(speech: SpeechService, fields: dict, text: str) -> AsyncIterator[Spoken]:
    """`text` spoken piece by piece by a session of one context, which ends with the generator."""
    session = LiveSession(LiveSpeech(speech).speak, max_contexts=1,
                          max_pending_chars=speech.settings.limits.max_input_chars)
    try:
        context = session.context(_CONTEXT, fields)
        context.add(text)
        context.close()
        while not isinstance(event := await session.outbox.get(), ContextDone):
            if isinstance(event, ContextFailed):
                raise event.error
            yield event
    finally:
        await session.close()


async def _encoded(first: Spoken, rest: AsyncIterator[Spoken], output: OutputFormat,
                   alignments: deque[Alignment]) -> AsyncIterator[bytes]:
    """Each piece's bytes in chunks, each chunk's alignment queued in `alignments` as it goes."""
    at_s = 0.0
    try:
        piece: Spoken | None = first
        while piece is not None:
            data = await asyncio.to_thread(encode_piece, piece.wave, output)
            for chunk, alignment in _chunks(data, piece.alignment, len(piece.wave) / SAMPLE_RATE, output):
                alignments.append(alignment.shifted(at_s))
                yield chunk
            at_s += len(piece.wave) / SAMPLE_RATE
            piece = await anext(rest, None)
    finally:
        await rest.aclose()


def _chunks(data: bytes, alignment: Alignment, duration_s: float,
            output: OutputFormat) -> list[tuple[bytes, Alignment]]:
    """`data` cut into chunks of at most `CHUNK_BYTES` (whole samples of raw audio; an MP3 piece's
    bytes anywhere, they join again), each with the characters that start in its share of the time."""
    step = CHUNK_BYTES - CHUNK_BYTES % (2 if output.codec == "pcm" else 1)
    cuts = list(range(0, len(data), step)) or [0]
    ends_s = [min(cut + step, len(data)) / max(len(data), 1) * duration_s for cut in cuts]
    ends_s[-1] = np.inf
    chunks, i = [], 0
    for cut, end_s in zip(cuts, ends_s):
        j = i
        while j < len(alignment.chars) and alignment.starts_s[j] < end_s:
            j += 1
        chunks.append((data[cut:cut + step], Alignment(alignment.chars[i:j], alignment.starts_s[i:j],
                                                       alignment.durations_s[i:j])))
        i = j
    return chunks


async def _timed(audio: AsyncIterator[bytes], alignments: deque[Alignment]) -> AsyncIterator[TimedAudio]:
    try:
        async for chunk in audio:
            yield TimedAudio(chunk, alignments.popleft())
    finally:
        await audio.aclose()  # a client gone: the session's pieces stop now, not when collected

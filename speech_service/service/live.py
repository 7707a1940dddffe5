"""Live text in: one socket's contexts, each text that arrives a few characters at a time, spoken piece
by piece as the pieces complete (docs/ARCHITECTURE.md, "Live text in").

A context cuts its text (`text.incremental.TextCutter`); each piece goes the way any request goes
(`Director.script`: markup-free plain text, lexicons, then the Synthesizer's numbers and segments,
its segments batched with everyone's) and is started as soon as it is cut, at most
`PIECES_AHEAD` ahead of the one being delivered, so a context's audio leaves in order. What a session
sends goes through one bounded queue (`outbox`): a client that reads nothing stops its contexts'
synthesis instead of piling up audio. Protocol framing (ElevenLabs' messages) is the HTTP layer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from speech_service.audio import seams
from speech_service.errors import BadRequest, ServiceError
from speech_service.schemas import SpeechRequest
from speech_service.service.alignment import Alignment, heard_alignment, planned_alignment
from speech_service.text.incremental import TextCutter

logger = logging.getLogger(__name__)

# Pieces of one context made ahead of the one being delivered: enough to keep the model busy while
# the client plays, few enough that a hang-up wastes little.
PIECES_AHEAD = 3
# Messages a session holds for a client that is slow to read them; beyond it synthesis waits.
OUTBOX_SIZE = 16


@dataclass(frozen=True)
class Spoken:
    """One piece's audio (24 kHz float) and where its characters fall in it."""

    context_id: str
    wave: np.ndarray
    alignment: Alignment


@dataclass(frozen=True)
class ContextDone:
    context_id: str  # all its audio was sent


@dataclass(frozen=True)
class ContextFailed:
    context_id: str
    error: ServiceError


Event = Spoken | ContextDone | ContextFailed


class LiveContext:
    def __init__(self, session: LiveSession, context_id: str, body: dict):
        self.session, self.id, self.body = session, context_id, body
        self.cutter = TextCutter()
        self.pieces: asyncio.Queue[asyncio.Task[Spoken] | None] = asyncio.Queue()
        self.ahead = asyncio.Semaphore(PIECES_AHEAD)
        self.closing = False
        self.delivery = asyncio.create_task(self._deliver())

    def add(self, text: str, flush: bool = False) -> None:
        if self.cutter.pending + len(text) > self.session.max_pending_chars:
            raise BadRequest(f"Context '{self.id}' holds over {self.session.max_pending_chars} characters not yet "
                             "spoken (limits.max_input_chars); send flush, or less text at once.",
                             code="input_too_long", param="text")
        for span in self.cutter.feed(text):
            self._start(span)
        if flush:
            self.flush()

    def flush(self) -> None:
        for span in self.cutter.flush():
            self._start(span)

    def close(self) -> None:
        """No more text: speak what is left, then say the context is done."""
        if not self.closing:
            self.flush()
            self.closing = True
            self.pieces.put_nowait(None)

    def cancel(self) -> None:
        self.closing = True
        self.delivery.cancel()
        while not self.pieces.empty():
            if (piece := self.pieces.get_nowait()) is not None:
                piece.cancel()

    def _start(self, span: tuple[int, int]) -> None:
        self.pieces.put_nowait(asyncio.create_task(self._speak(*span)))

    async def _speak(self, start: int, end: int) -> Spoken:
        async with self.ahead:
            text = self.cutter.text[start:end]
            wave, alignment = await self.session.speak(self.body, text)
            return Spoken(self.id, wave, alignment)

    async def _deliver(self) -> None:
        """Each piece's audio in order, then `ContextDone`; a failed piece ends the context."""
        try:
            while (piece := await self.pieces.get()) is not None:
                await self.session.outbox.put(await piece)
            await self.session.outbox.put(ContextDone(self.id))
        except ServiceError as exc:
            await self.session.outbox.put(ContextFailed(self.id, exc))
            self.cancel()
        finally:
            self.session.ended(self)


class LiveSession:
    """The contexts of one socket over the speech service; `outbox` is what to send, in order per context."""

    def __init__(self, speak: Callable, *, max_contexts: int = 5, max_pending_chars: int = 4096):
        self.speak = speak  # (request body, text) -> (wave, Alignment): `LiveSpeech.speak`
        self.max_contexts, self.max_pending_chars = max_contexts, max_pending_chars
        self.contexts: dict[str, LiveContext] = {}
        self.outbox: asyncio.Queue[Event] = asyncio.Queue(OUTBOX_SIZE)

    def context(self, context_id: str, body: dict | None = None) -> LiveContext:
        """The open context `context_id`, opened with `body` (a speech request's fields) if need be."""
        if (context := self.contexts.get(context_id)) is not None and not context.closing:
            return context
        if body is None:
            raise BadRequest(f"No open context '{context_id}'.", code="context_not_found", param="context_id")
        if len([c for c in self.contexts.values() if not c.closing]) >= self.max_contexts:
            raise BadRequest(f"A socket holds at most {self.max_contexts} open contexts; close one first.",
                             code="too_many_contexts", param="context_id")
        context = self.contexts[context_id] = LiveContext(self, context_id, body)
        return context

    def ended(self, context: LiveContext) -> None:
        if self.contexts.get(context.id) is context:
            del self.contexts[context.id]

    async def close(self) -> None:
        """Stop everything: the socket is gone."""
        for context in list(self.contexts.values()):
            context.cancel()
        tasks = [c.delivery for c in self.contexts.values()]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        self.contexts.clear()


class LiveSpeech:
    """How a piece is spoken: as a speech request of its own text, planned and made segment by segment
    (`ListenedSpeech`'s listener), joined as a whole response is, with its characters' times from the
    plan, or heard in the audio when the session asked for that (a Transcriber call per piece)."""

    def __init__(self, speech, heard: bool = False):
        self.speech, self.heard = speech, heard

    async def speak(self, fields: dict, text: str) -> tuple[np.ndarray, Alignment]:
        body = SpeechRequest.model_validate({**fields, "input": text, "response_format": "pcm",
                                             **({"timestamps": "word"} if self.heard else {})})
        speech = self.speech
        speech.check(body)
        script = await speech.director.script(body)
        options = body.options()
        plan = await speech.send(script, lambda s: speech.backends.plan(s.references[0], s.sent(), options))
        listener = speech.listened.listener(body, script)
        made = await asyncio.gather(*(listener.make(plan, i) for i in range(len(plan.segments))))
        wave = seams.join([s.wave for s in made], plan.cross_fade_samples, plan.pause_samples)
        if self.heard:
            return wave, heard_alignment(text, speech.listened.found(body, made, plan, None, script).words or [],
                                         len(wave))
        return wave, planned_alignment(text, plan, [s.wave for s in made])

"""Live text in: one socket's contexts, each text that arrives a few characters at a time, spoken piece
by piece as the pieces complete (docs/ARCHITECTURE.md, "Live text in").

A context cuts its text (`text.incremental.TextCutter`); each piece goes the way any request goes
(`Director.script`: markup-free plain text, lexicons, then the Synthesizer's numbers and segments,
its segments batched with everyone's) and is started as soon as it is cut (a context's first piece
before its others), at most `PIECES_AHEAD` ahead of the one being delivered; audio leaves in order. What a session
sends goes through one bounded queue (`outbox`): a client that reads nothing stops its contexts'
synthesis instead of piling up audio. Protocol framing (ElevenLabs' messages) is the HTTP layer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

import numpy as np

from speech_service.audio import seams
from speech_service.errors import BadRequest, Overloaded, ReplicaStopping, ServiceError
from speech_service.schemas import SpeechRequest
from speech_service.service.alignment import Alignment, heard_alignment, planned_alignment
from speech_service.text.incremental import TextCutter

logger = logging.getLogger(__name__)

# Pieces of one context made ahead of the one being delivered: enough to keep the model busy while
# the client plays, few enough that a hang-up wastes little.
PIECES_AHEAD = 3
# Messages a session holds for a client that is slow to read them; beyond it synthesis waits.
OUTBOX_SIZE = 16
# While sockets are open, how often `LiveSessions` asks whether its replica is stopping: well inside the
# 2 s a stopping Ingress replica stays reachable before Serve shuts its sockets (config/ray.env).
STOP_CHECK_S = 0.5


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
        self.owed = 0  # pieces started whose audio is not yet in the outbox
        # The context's first piece is made before any other: under load the first audio is what a
        # listener waits for, and pieces made beside it in one batch would slow it.
        self.first_made = asyncio.Event()
        self.cut_any = False
        self.delivery = session.spawn(self._deliver())

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
        self.owed += 1
        first = not self.cut_any
        self.cut_any = True
        self.pieces.put_nowait(self.session.spawn(self._speak(*span, first=first)))

    async def _speak(self, start: int, end: int, first: bool) -> Spoken:
        if not first:
            await self.first_made.wait()
        try:
            async with self.ahead, self.session.slots:  # this context's few ahead, within all sockets' share
                text = self.cutter.text[start:end]
                wave, alignment = await self.session.speak(self.body, text)
                return Spoken(self.id, wave, alignment)
        finally:
            if first:
                self.first_made.set()

    async def _deliver(self) -> None:
        """Each piece's audio in order, then `ContextDone`; a failed piece ends the context."""
        try:
            while (piece := await self.pieces.get()) is not None:
                await self.session.outbox.put(await piece)
                self.owed -= 1
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
        self.tasks: set[asyncio.Task] = set()  # its contexts' deliveries and pieces (held: the replica's, `Seat.hold`)
        self.slots: contextlib.AbstractAsyncContextManager = contextlib.nullcontext()  # see `Seat.hold`

    def spawn(self, work: Coroutine) -> asyncio.Task:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

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

    def owes_audio(self) -> bool:
        """Whether a piece was cut and its audio is still being made (the client waits on us, not we on it)."""
        return any(context.owed for context in self.contexts.values())

    def ended(self, context: LiveContext) -> None:
        if self.contexts.get(context.id) is context:
            del self.contexts[context.id]

    async def close(self) -> None:
        """Stop everything: the socket is gone."""
        for context in list(self.contexts.values()):
            context.cancel()
        await asyncio.gather(*[c.delivery for c in self.contexts.values()], return_exceptions=True)
        self.contexts.clear()


class Seat:
    """One open socket's place in `LiveSessions`: its session, and whether its replica is stopping."""

    def __init__(self, sessions: LiveSessions):
        self.sessions, self.session = sessions, None
        self.stopping = asyncio.Event()  # set when the replica stops: the socket closes with an error, 1012

    def hold(self, session: LiveSession) -> LiveSession:
        """`session` (before it made any task) counted with this replica's sessions, its pieces within
        their share of the Synthesizer."""
        self.session, session.tasks, session.slots = session, self.sessions.tasks, self.sessions.slots
        return session

    def close(self) -> None:
        self.sessions.seats.discard(self)


class LiveSessions:
    """The open sockets of one Ingress replica: at most `max_sockets` (each holds one of the replica's
    Serve request slots for its life), with at most `max_pieces` pieces at the Synthesizer at once (the
    rest wait here, not in its queue, which keeps room for HTTP speech), counted for `/v1/status`, and
    told when the replica stops.
    `stopping` (blocking, run in a thread) is the deployment's look at whether Serve is stopping this
    replica, asked every `STOP_CHECK_S` while sockets are open (docs/ARCHITECTURE.md, "Live text in")."""

    def __init__(self, max_sockets: int, max_pieces: int = 16, stopping: Callable[[], bool] | None = None):
        self.max_sockets, self.max_pieces, self.stopping = max_sockets, max_pieces, stopping
        self.slots = asyncio.Semaphore(max_pieces)
        self.seats: set[Seat] = set()
        self.tasks: set[asyncio.Task] = set()  # every socket's, closed ones' included until each ends
        self.stopped = False
        self._watching: asyncio.Task | None = None

    def open(self) -> Seat:
        if self.stopped:
            raise restarting()
        if len(self.seats) >= self.max_sockets:
            raise Overloaded(f"This server holds its limit of {self.max_sockets} sockets (limits.max_sockets); "
                             "connect again later.", code="too_many_sockets", retry_after_s=5)
        seat = Seat(self)
        self.seats.add(seat)
        if self.stopping is not None and (self._watching is None or self._watching.done()):
            self._watching = asyncio.create_task(self._watch())
        return seat

    def stop(self) -> None:
        """Every socket closes with the protocol's error; new ones are refused."""
        self.stopped = True
        for seat in self.seats:
            seat.stopping.set()

    def counts(self) -> dict:
        sessions = [seat.session for seat in self.seats if seat.session is not None]
        return {"sockets": len(self.seats), "max_sockets": self.max_sockets,
                "contexts": sum(len(session.contexts) for session in sessions),
                "pieces_in_flight": sum(t.get_coro().__name__ == "_speak" for t in self.tasks),
                "tasks": len(self.tasks), "stopping": self.stopped}

    async def _watch(self) -> None:
        while self.seats and not self.stopped:
            await asyncio.sleep(STOP_CHECK_S)
            try:
                stopping = await asyncio.to_thread(self.stopping)
            except Exception:  # noqa: BLE001 - no answer is no verdict: ask again
                logger.warning("could not tell whether this replica is stopping", exc_info=True)
                continue
            if stopping:
                logger.info("replica stopping: closing %d live sockets", len(self.seats))
                self.stop()


def restarting() -> ReplicaStopping:
    return ReplicaStopping("This server is restarting; connect again.", retry_after_s=1)


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
        script = await speech.director.script(body, markup=False)  # a piece of a text, never a document
        options = body.options()
        plan = await speech.send(script, lambda s: speech.backends.plan(s.references[0], s.sent(), options))
        listener = speech.listened.listener(body, script)
        made = await asyncio.gather(*(listener.make(plan, i) for i in range(len(plan.segments))))
        wave = seams.join([s.wave for s in made], plan.cross_fade_samples, plan.pause_samples)
        if self.heard:
            return wave, heard_alignment(text, speech.listened.found(body, made, plan, None, script).words or [],
                                         len(wave))
        return wave, planned_alignment(text, plan, [s.wave for s in made])

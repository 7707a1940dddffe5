"""Live text in over ElevenLabs' WebSocket protocol: `/v1/text-to-speech/{voice_id}/multi-stream-input`
(up to five contexts on one socket) and `/stream-input` (one context, no ids). A socket is four tasks
over one `LiveSession`: the reader turns messages into context calls, the writer sends the session's
outbox (audio with its alignment, `isFinal`, a context's error), the watchdog closes a socket that
has been silent for `inactivity_timeout`, and one closes it when Serve stops the replica; the first
to end ends the socket, and `session.close()` leaves nothing behind. Each socket holds a seat of the
replica's `LiveSessions` (docs/ARCHITECTURE.md, "Live text in").

The key is checked here (the `KeyGate` middleware sees HTTP only): `xi-api-key` or `Authorization:
Bearer` at the handshake, else the first message's `xi_api_key`, before that message is acted on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from speech_service.audio.output_formats import encode_piece
from speech_service.errors import BadRequest, Forbidden, ReplicaStopping, ServiceError
from speech_service.http.auth import Caller, presented
from speech_service.http.elevenlabs import (
    ClientMessage,
    SocketSettings,
    audio_message,
    context_body,
    error_message,
    final_message,
    parse_message,
)
from speech_service.service.live import (
    ContextDone,
    ContextFailed,
    LiveContext,
    LiveSession,
    LiveSpeech,
    Seat,
    Spoken,
    restarting,
)

logger = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

# A client that reads nothing for this long (a send blocked on its full buffers) is dropped.
SEND_TIMEOUT_S = 30.0
# Pieces a context may have cut but not yet delivered; past it its text is refused until audio catches up.
MAX_PIECES_BEHIND = 64
DEFAULT_CONTEXT = "default"  # the context of messages without a `context_id`
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_RESTART, CLOSE_TRY_LATER = 1000, 1008, 1011, 1012, 1013


class SocketEnds(Exception):
    """How a socket ends: the close code (None: the client is gone) and the error to send first."""

    def __init__(self, code: int | None, error: ServiceError | None = None):
        super().__init__(code)
        self.code, self.error = code, error


@router.websocket("/v1/text-to-speech/{voice_id}/multi-stream-input")
async def multi_stream_input(websocket: WebSocket, voice_id: str) -> None:
    await LiveSocket(websocket, voice_id, multi=True).run()


@router.websocket("/v1/text-to-speech/{voice_id}/stream-input")
async def stream_input(websocket: WebSocket, voice_id: str) -> None:
    await LiveSocket(websocket, voice_id, multi=False).run()


class LiveSocket:
    def __init__(self, websocket: WebSocket, voice_id: str, *, multi: bool):
        self.ws, self.voice_id, self.multi = websocket, voice_id, multi
        self.services = websocket.app.state.services
        limits = self.services.settings.limits
        # Room for a message of max_input_chars, each character escaped (as config checks max_json_bytes).
        self.max_message_bytes = max(64 * 1024, 6 * limits.max_input_chars + 16 * 1024)
        self.session: LiveSession | None = None
        self.settings: SocketSettings | None = None
        self.send_lock = asyncio.Lock()
        self.last_activity = asyncio.get_running_loop().time()
        self.input_ended = False  # stream-input: `{"text": ""}` came

    async def run(self) -> None:
        await self.ws.accept()
        try:  # a seat among this replica's sockets: bounded (1013 past it), told when the replica stops
            seat = self.services.live.open()
        except ServiceError as exc:
            await self._close(SocketEnds(CLOSE_RESTART if isinstance(exc, ReplicaStopping) else CLOSE_TRY_LATER, exc))
            return
        try:
            first = await self._admit()
            speech = LiveSpeech(self.services.speech, heard=self.settings.heard)
            self.session = seat.hold(LiveSession(speech.speak,
                                                 max_pending_chars=self.services.settings.limits.max_input_chars))
            ending = await self._serve(first, seat)
        except SocketEnds as exc:
            ending = exc
        finally:
            seat.close()
            if self.session is not None:
                await self.session.close()
        await self._close(ending)

    async def _admit(self) -> ClientMessage | None:
        """The socket's settings and caller (1008 with the protocol's error if either is refused); the
        first message, when it had to be read for its key."""
        try:
            self.settings = SocketSettings.of(self.ws.query_params, self.services.models)
            keys, first, headers = self.services.keys, None, self.ws.headers
            authorization = presented(headers.get("authorization"), headers.get("xi-api-key"))
            if authorization is None and not keys.open:
                first = await self._next_message(self.settings.inactivity_timeout_s)
                authorization = presented(None, first.xi_api_key)
            caller: Caller = keys.caller(keys.find(authorization))
            if not caller.can("speak"):
                raise Forbidden(f"The key '{caller.name}' may not speak: it needs the 'speak' scope.",
                                code="insufficient_scope")
            return first
        except ServiceError as exc:
            raise SocketEnds(CLOSE_POLICY, exc) from None

    async def _serve(self, first: ClientMessage | None, seat: Seat) -> SocketEnds:
        tasks = [asyncio.create_task(self._read(first)), asyncio.create_task(self._write()),
                 asyncio.create_task(self._watch()), asyncio.create_task(self._stopped(seat))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        exc = next(iter(done)).exception()
        if isinstance(exc, SocketEnds):
            return exc
        logger.error("live socket failed", exc_info=exc)
        return SocketEnds(CLOSE_ERROR, ServiceError("The service failed; the socket is closed."))

    # Reading: each message becomes context calls; a context's refusal is sent and the socket goes on.

    async def _next_message(self, timeout_s: float | None = None) -> ClientMessage:
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout_s)
        except TimeoutError:
            raise SocketEnds(CLOSE_POLICY, inactivity(timeout_s)) from None
        if message["type"] == "websocket.disconnect":
            raise SocketEnds(None)
        self.last_activity = asyncio.get_running_loop().time()
        raw = message.get("text") if message.get("text") is not None else message.get("bytes") or b""
        return parse_message(raw, self.max_message_bytes)

    async def _read(self, first: ClientMessage | None) -> None:
        while True:
            context_id = None
            try:
                message = first or await self._next_message()
                first = None
                context_id = message.context_id or DEFAULT_CONTEXT if self.multi else None
                if message.close_socket:
                    raise SocketEnds(CLOSE_NORMAL)  # as ElevenLabs: everything stops now
                self._act(message, context_id or DEFAULT_CONTEXT)
            except ServiceError as exc:
                await self._send(error_message(exc, context_id))

    def _act(self, message: ClientMessage, context_id: str) -> None:
        if self.input_ended:
            return
        context = self.session.contexts.get(context_id)
        if context is not None and context.closing:
            context = None  # closed: its id opens a new context once its isFinal is out
        if message.text:
            context = context or self._open(context_id, message)
            if context.pieces.qsize() >= MAX_PIECES_BEHIND:
                raise BadRequest(f"Context '{context_id}' is {MAX_PIECES_BEHIND} pieces ahead of its audio; "
                                 "wait for audio before sending more text.", code="context_backlog", param="text")
            context.add(message.text, message.flush)
        elif message.flush and context is not None:
            context.flush()
        if message.close_context and context is not None:
            context.close()
        elif message.keeps_alive and not self.multi:  # stream-input: `{"text": ""}` ends the text
            (context or self._open(context_id, message)).close()
            self.input_ended = True

    def _open(self, context_id: str, message: ClientMessage) -> LiveContext:
        if context_id in self.session.contexts:  # closed, still speaking: one id is one context at a time
            raise BadRequest(f"Context '{context_id}' is still finishing; wait for its isFinal before using "
                             "its id again.", code="context_finishing", param="context_id")
        if len(self.session.contexts) >= 2 * self.session.max_contexts:
            raise BadRequest("Too many contexts still finishing on this socket; wait for an isFinal.",
                             code="too_many_contexts", param="context_id")
        body = context_body(self.voice_id, self.settings, message.voice_settings)
        return self.session.context(context_id, body)

    # Writing: the session's outbox, in order per context.

    async def _write(self) -> None:
        while True:
            event = await self.session.outbox.get()
            context_id = event.context_id if self.multi else None
            if isinstance(event, Spoken):
                audio = await asyncio.to_thread(encode_piece, event.wave, self.settings.output_format)
                await self._send(audio_message(base64.b64encode(audio).decode(), event.alignment.milliseconds(),
                                               context_id))
            elif isinstance(event, ContextDone):
                await self._send(final_message(context_id))
                if not self.multi:
                    raise SocketEnds(CLOSE_NORMAL)
            elif isinstance(event, ContextFailed):
                if not self.multi:
                    raise SocketEnds(CLOSE_POLICY if event.error.status_code < 500 else CLOSE_ERROR, event.error)
                # isFinal after the error: the client's context ends now, not on its own timeout
                await self._send(error_message(event.error, context_id))
                await self._send(final_message(context_id))

    async def _send(self, payload: dict) -> None:
        async with self.send_lock:
            try:
                await asyncio.wait_for(self.ws.send_text(json.dumps(payload)), SEND_TIMEOUT_S)
            except TimeoutError:
                raise SocketEnds(CLOSE_POLICY) from None  # it reads nothing: an error would not reach it
            except (WebSocketDisconnect, OSError, RuntimeError):
                raise SocketEnds(None) from None
        self.last_activity = asyncio.get_running_loop().time()

    async def _watch(self) -> None:
        """Ends the socket once nothing was received or sent for `inactivity_timeout` seconds, and no
        audio is being made for it (under load a client may wait longer than that for audio owed)."""
        loop, timeout = asyncio.get_running_loop(), self.settings.inactivity_timeout_s
        while (left := self.last_activity + timeout - loop.time()) > 0 or self.session.owes_audio():
            await asyncio.sleep(left if left > 0 else 1.0)
        raise SocketEnds(CLOSE_POLICY, inactivity(timeout))

    async def _stopped(self, seat: Seat) -> None:
        """Serve is stopping this replica: each context not yet final is told, then the socket closes
        with 1012, before Serve would cut it without a word (docs/ARCHITECTURE.md, "Live text in")."""
        await seat.stopping.wait()
        error, contexts = restarting(), list(self.session.contexts) if self.multi else []
        for context_id in contexts:
            await self._send(error_message(error, context_id))
        raise SocketEnds(CLOSE_RESTART, None if contexts else error)

    async def _close(self, ending: SocketEnds) -> None:
        if ending.code is None:
            return
        with contextlib.suppress(SocketEnds, WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
            if ending.error is not None:
                await self._send(error_message(ending.error, None))
            await asyncio.wait_for(self.ws.close(ending.code, ending.error.code if ending.error else None),
                                   SEND_TIMEOUT_S)


def inactivity(timeout_s: float) -> ServiceError:
    return BadRequest(f"Nothing was received for {timeout_s} s (inactivity_timeout); the socket is closed.",
                      code="input_timeout_exceeded")

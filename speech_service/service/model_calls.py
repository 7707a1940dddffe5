"""How the Ingress calls the model replicas: `ModelBackends`, the service's `Backends`.

Every call goes through `ModelCalls.call`: one retry when the replica dies or its node is lost
(`replica_lost`, asked every `NODE_CHECK_S` while a call waits), a full queue as 503
`overloaded`, a bounded wait (`limits.request_timeout_s`) and, when no node can host the deployment,
503 `capacity_unavailable` after `limits.capacity_wait_s`. A replica's refusal comes back as a
returned `ServiceError` and is raised here (`errors.refusal`).

Nothing here knows Ray: the deployment (`deployments/ingress.py`) passes objects that make its
handle calls, a `classify` that names Ray's failures, and the capacity and status checks. Tests
pass the replica classes themselves (`SynthesisReplica`, `TranscriptionReplica`), so an in-process
request takes this same path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol

import numpy as np

from speech_service.audio import Speech
from speech_service.config import LimitSettings, SynthesisOptions
from speech_service.errors import (
    CapacityUnavailable,
    Overloaded,
    RequestTimeout,
    ServiceError,
    StreamInterrupted,
    SynthesizerUnavailable,
    TranscriberUnavailable,
    unwrap,
)
from speech_service.plans import SpeechPlan
from speech_service.references import Reference
from speech_service.transcription.heard import HeardWord

logger = logging.getLogger("ray.serve")

# What a failed call means: its replica went away (the call may be sent again), its deployment's
# queue is full, or anything else (raised as it is).
Failure = Literal["replica_gone", "backpressure"] | None
# After `capacity_wait_s`, how often a waiting request asks again whether its replica can be placed.
CAPACITY_RECHECK_S = 5.0
# Before a call whose replica died is sent again: the router then knows the replica is gone and
# sends the retry to a live one (or waits for the one Serve starts in its place).
REPLICA_RETRY_DELAY_S = 1.0
# While a call waits on its replica, how often it asks whether that replica's node was lost: a node
# cut off the network fails no call by itself (docs/ARCHITECTURE.md, "Losing a node").
NODE_CHECK_S = 2.0


class ReplicaLost(Exception):
    """The node of the replica serving a call was declared dead while the call waited."""


class Synthesizer(Protocol):
    """A Synthesizer as the Ingress calls it: a replica, or the handle calls that reach one."""

    def synthesize(self, reference: Reference, text: str, options: SynthesisOptions) -> Awaitable[Any]: ...

    def synthesize_stream(self, reference: Reference, text: str, options: SynthesisOptions) -> AsyncIterator[Any]: ...

    def plan(self, reference: Reference, text: str, options: SynthesisOptions, streaming: bool = False) -> Any: ...

    def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int) -> Awaitable[Any]: ...


class Transcriber(Protocol):
    def transcribe(self, audio: np.ndarray, language: str | None) -> Awaitable[Any]: ...

    def listen(self, clips: list[np.ndarray], language: str | None) -> Awaitable[Any]: ...


class ModelCalls:
    def __init__(self, limits: LimitSettings, *, classify: Callable[[BaseException], Failure] = lambda exc: None,
                 capacity_problem: Callable[[str], str | None] = lambda deployment: None,
                 replica_lost: Callable[[Any, float], bool] = lambda response, since: False):
        self.limits = limits
        self.classify = classify
        self.capacity_problem = capacity_problem  # blocking: run in a thread
        # (a call's response, when it began by time.monotonic()) -> whether its replica is gone; never blocks
        self.replica_lost = replica_lost

    async def call(self, deployment: str, unavailable: type[ServiceError], start: Callable[[], Any],
                   first_audio: bool = False) -> Any:
        """Start the call with `start()` and await it; started again once if its replica dies."""
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        for attempt in (1, 2):
            try:
                answer = await self._await(deployment, start(), deadline, first_audio)
            except ServiceError as exc:  # ours, or one a replica raised (carried in Ray's wrapper)
                raise unwrap(exc) from None
            except Exception as exc:  # noqa: BLE001 - sorted out below, the rest re-raised
                cause = unwrap(exc)
                failure = "replica_gone" if isinstance(cause, ReplicaLost) else self.classify(cause)
                if failure == "backpressure":
                    raise Overloaded(f"The {deployment} has too many queued requests; retry later.",
                                     retry_after_s=getattr(cause, "retry_after_s", None) or self.limits.retry_after_s
                                     ) from None
                if failure != "replica_gone":
                    raise cause from None
                logger.warning("%s replica stopped during a request (attempt %d): %s", deployment, attempt, cause)
                if attempt == 1:
                    left = deadline - asyncio.get_running_loop().time()
                    await asyncio.sleep(min(REPLICA_RETRY_DELAY_S, max(0.0, left)))
                continue
            if isinstance(answer, ServiceError):  # a replica's refusal, returned (`errors.refusal`)
                raise answer
            return answer
        raise unavailable(f"The {deployment} replica stopped while serving this request, twice; retry later.",
                          retry_after_s=self.limits.retry_after_s)

    async def _await(self, deployment: str, response: Any, deadline: float, first_audio: bool) -> Any:
        """Await a call until `deadline`; give up early if no node can host the deployment."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(response)
        check_at = loop.time() + self.limits.capacity_wait_s
        call = response.pieces if isinstance(response, FirstPiece) else response
        began = time.monotonic()
        try:
            while True:
                wake = min(deadline, check_at, loop.time() + NODE_CHECK_S)
                done, _ = await asyncio.wait({task}, timeout=max(0.0, wake - loop.time()))
                if done:
                    return task.result()
                if self.replica_lost(call, began):
                    raise ReplicaLost(f"a node was lost while this {deployment} call waited")
                if loop.time() >= deadline:
                    what = "send its first audio" if first_audio else "answer"
                    raise RequestTimeout(f"The {deployment} did not {what} within "
                                         f"{self.limits.request_timeout_s:g} s (limits.request_timeout_s).")
                if loop.time() < check_at:
                    continue
                problem = await self._capacity_problem(deployment)
                if problem:
                    raise CapacityUnavailable(problem, retry_after_s=self.limits.capacity_wait_s)
                check_at = loop.time() + CAPACITY_RECHECK_S
        finally:
            if not task.done():
                if hasattr(response, "cancel"):  # a Ray response: cancel the call in the replica too
                    response.cancel()
                task.cancel()

    async def _capacity_problem(self, deployment: str) -> str | None:
        """Why `deployment` cannot serve, or None; a failed look (the cluster's state could not be
        read) is no verdict: the call goes on waiting, still bounded by its deadline."""
        try:
            return await asyncio.to_thread(self.capacity_problem, deployment)
        except Exception:  # noqa: BLE001 - any failure of the look; the request itself is fine
            logger.warning("could not tell whether the %s can be placed", deployment, exc_info=True)
            return None

    async def stream(self, deployment: str, unavailable: type[ServiceError],
                     open_pieces: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
        """The pieces of a streamed call. Until its first piece, it is a call like any other (retry,
        timeout, capacity); after it, a failure raises `StreamInterrupted` (its headers are sent, so
        the response can only say so in its body)."""
        current: FirstPiece | None = None

        def start() -> FirstPiece:
            nonlocal current
            current = FirstPiece(open_pieces())
            return current

        first = await self.call(deployment, unavailable, start, first_audio=True)
        if first is NO_PIECE:
            return
        yield first
        sent = 1
        try:
            while (piece := await self._next_piece(deployment, current.pieces)) is not NO_PIECE:
                if isinstance(piece, ServiceError):  # refusals come first or not at all; never mid-stream
                    raise piece
                yield piece
                sent += 1
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, the caller must not take a prefix for the whole
            logger.error("speech stream ended early after %d pieces: %s", sent, unwrap(exc))
            raise StreamInterrupted(
                f"The {deployment} stopped after {sent} pieces of this stream; the audio sent is incomplete. "
                "Retry the request.", retry_after_s=self.limits.retry_after_s) from None

    async def _next_piece(self, deployment: str, pieces: AsyncIterator[Any]) -> Any:
        """The stream's next piece (NO_PIECE at its end), checking while it waits that its replica's
        node is still there."""
        task = asyncio.ensure_future(anext(pieces, NO_PIECE))
        began = time.monotonic()
        try:
            while not (await asyncio.wait({task}, timeout=NODE_CHECK_S))[0]:
                if self.replica_lost(pieces, began):
                    raise ReplicaLost(f"the {deployment} replica's node was lost")
            return task.result()
        finally:
            task.cancel()


NO_PIECE = object()  # the end of a stream (before its first piece: a stream with none)


class FirstPiece:
    """The first piece of a streamed call, awaitable and cancellable like a response."""

    def __init__(self, pieces: AsyncIterator[Any]):
        self.pieces = pieces

    def __await__(self):
        return self._first().__await__()

    async def _first(self) -> Any:
        try:
            return await anext(self.pieces)
        except StopAsyncIteration:
            return NO_PIECE

    def cancel(self) -> None:
        """Cancel a Ray streamed call in its replica; an in-process generator stops with its task."""
        cancel = getattr(self.pieces, "cancel", None)
        if cancel is not None:
            cancel()


class ModelBackends:
    """`service.speech.Backends` over a Synthesizer and a Transcriber, every call through `calls`;
    `status()` is the deployment's (it must not wake a replica)."""

    def __init__(self, synthesizer: Synthesizer, transcriber: Transcriber, calls: ModelCalls,
                 status: Callable[[], Awaitable[dict[str, Any]]] | None = None):
        self.synthesizer = synthesizer
        self.transcriber = transcriber
        self.calls = calls
        self._status = status

    async def synthesize(self, reference: Reference, text: str, options: SynthesisOptions) -> Speech:
        return await self.calls.call("Synthesizer", SynthesizerUnavailable,
                                     lambda: self.synthesizer.synthesize(reference, text, options))

    async def plan(self, reference: Reference, text: str, options: SynthesisOptions,
                   streaming: bool = False) -> SpeechPlan:
        return await self.calls.call("Synthesizer", SynthesizerUnavailable,
                                     lambda: _awaitable(self.synthesizer.plan(reference, text, options, streaming)))

    async def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int) -> Speech:
        return await self.calls.call("Synthesizer", SynthesizerUnavailable,
                                     lambda: self.synthesizer.synthesize_segment(reference, plan, index))

    def stream(self, reference: Reference, text: str, options: SynthesisOptions) -> AsyncIterator[np.ndarray]:
        return self.calls.stream("Synthesizer", SynthesizerUnavailable,
                                 lambda: self.synthesizer.synthesize_stream(reference, text, options))

    async def transcribe(self, audio: np.ndarray, language: str | None) -> str:
        return await self.calls.call("Transcriber", TranscriberUnavailable,
                                     lambda: self.transcriber.transcribe(audio, language))

    async def listen(self, clips: list[np.ndarray], language: str | None) -> list[list[HeardWord]]:
        return await self.calls.call("Transcriber", TranscriberUnavailable,
                                     lambda: self.transcriber.listen(clips, language))

    async def status(self) -> dict[str, Any]:
        return await self._status() if self._status else {"deployments": {}}



def _awaitable(result: Any) -> Awaitable[Any]:
    """A Ray response is awaitable; a replica's plain (cheap) method has answered already."""
    return result if hasattr(result, "__await__") else _answered(result)


async def _answered(value: Any) -> Any:
    return value

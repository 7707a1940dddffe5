"""Ingress deployment: serves the FastAPI app of `speech_service.api` and reaches the model
deployments through handles. It never calls them at start-up or for status, so they can rest at zero."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.serve_state import capacity_problem, deployment_status
from speech_service.api import create_app
from speech_service.audio import Speech
from speech_service.coldstart import last_cold_starts, open_status_store
from speech_service.config import LimitSettings, ServiceSettings, SynthesisOptions
from speech_service.errors import (
    CapacityUnavailable,
    Overloaded,
    RequestTimeout,
    ServiceError,
    SynthesizerUnavailable,
    TranscriberUnavailable,
    unwrap,
)
from speech_service.logs import route_to_serve_logs
from speech_service.objects import ObjectStore
from speech_service.references import Reference

logger = logging.getLogger("ray.serve")


# A replica that died (its process was killed, its node went away): the request may be sent again.
_REPLICA_GONE = (RayActorError, ReplicaUnavailableError)
# After `capacity_wait_s`, how often a waiting request asks again whether its replica can be placed.
_CAPACITY_RECHECK_S = 5.0


class ServeBackends:
    """`speech_service.speech.Backends` over Ray Serve deployment handles.

    Every model call goes through `_call`: one retry when the replica dies, Serve's backpressure as
    503 `overloaded`, a bounded wait (`limits.request_timeout_s`) and, when the deployment cannot be
    placed on any node, 503 `capacity_unavailable` after `limits.capacity_wait_s`."""

    def __init__(self, synthesizer: DeploymentHandle, transcriber: DeploymentHandle, status_store: ObjectStore,
                 limits: LimitSettings, app_name: str):
        self.synthesizer = synthesizer
        self.transcriber = transcriber
        self.status_store = status_store
        self.limits = limits
        self.app_name = app_name

    async def synthesize(self, reference: Reference, text: str, options: SynthesisOptions) -> Speech:
        return await self._call("Synthesizer", SynthesizerUnavailable,
                                lambda: self.synthesizer.synthesize.remote(reference, text, options,
                                                                           dispatched_at=time.time()))

    async def stream(self, reference: Reference, text: str, options: SynthesisOptions) -> AsyncIterator[np.ndarray]:
        handle = self.synthesizer.options(stream=True)
        current: _FirstPiece | None = None

        def start() -> _FirstPiece:
            nonlocal current
            current = _FirstPiece(handle.synthesize_stream.remote(reference, text, options,
                                                                  dispatched_at=time.time()))
            return current

        # Until the first piece, the stream is a call like any other (retry, timeout, capacity).
        first = await self._call("Synthesizer", SynthesizerUnavailable, start, first_audio=True)
        if first is _NO_PIECE:
            return
        yield first
        sent = 1
        try:
            async for piece in current.pieces:
                yield piece
                sent += 1
        except Exception as exc:  # noqa: BLE001 - headers are sent: end the response, keep the connection
            logger.error("speech stream ended early after %d pieces: %s", sent, unwrap(exc))

    async def transcribe(self, audio: np.ndarray, language: str | None) -> str:
        return await self._call("Transcriber", TranscriberUnavailable,
                                lambda: self.transcriber.transcribe.remote(audio, language))

    async def status(self) -> dict[str, Any]:
        status = await asyncio.to_thread(deployment_status, self.app_name)
        # Written by the replicas when they became ready; reading them wakes nobody.
        status["cold_starts"] = await asyncio.to_thread(last_cold_starts, self.status_store)
        return status

    async def _call(self, deployment: str, unavailable: type[ServiceError], start: Callable[[], Any],
                    first_audio: bool = False) -> Any:
        """Start the call with `start()` and await it; retried once if its replica dies."""
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        for attempt in (1, 2):
            try:
                answer = await self._await(deployment, start(), deadline, first_audio)
            except ServiceError as exc:  # ours, or one a replica chose (carried in Ray's wrapper)
                raise unwrap(exc) from None
            except Exception as exc:  # noqa: BLE001 - sorted out below, the rest re-raised
                cause = unwrap(exc)
                if isinstance(cause, BackPressureError):
                    raise Overloaded(f"The {deployment} has too many queued requests; retry later.",
                                     retry_after_s=cause.retry_after_s or self.limits.retry_after_s) from None
                if not isinstance(cause, _REPLICA_GONE):
                    raise cause from None
                logger.warning("%s replica stopped during a request (attempt %d): %s", deployment, attempt, cause)
                continue
            if isinstance(answer, ServiceError):  # a replica's refusal, returned (`errors.refusal`)
                raise answer
            return answer
        raise unavailable(f"The {deployment} replica stopped while serving this request, twice; retry later.",
                          retry_after_s=self.limits.retry_after_s)

    async def _await(self, deployment: str, response: Any, deadline: float, first_audio: bool) -> Any:
        """Await a handle call until `deadline`; give up early if no node can host the deployment."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(response)
        check_at = loop.time() + self.limits.capacity_wait_s
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, min(deadline, check_at) - loop.time()))
                if done:
                    return task.result()
                if loop.time() >= deadline:
                    what = "send its first audio" if first_audio else "answer"
                    raise RequestTimeout(f"The {deployment} did not {what} within "
                                         f"{self.limits.request_timeout_s:g} s (limits.request_timeout_s).")
                problem = await asyncio.to_thread(capacity_problem, self.app_name, deployment)
                if problem:
                    raise CapacityUnavailable(problem, retry_after_s=self.limits.capacity_wait_s)
                check_at = loop.time() + _CAPACITY_RECHECK_S
        finally:
            if not task.done():
                response.cancel()
                task.cancel()


_NO_PIECE = object()  # a stream that ended before its first piece


class _FirstPiece:
    """The first piece of a streamed handle call, awaitable and cancellable like a response."""

    def __init__(self, pieces: DeploymentResponseGenerator):
        self.pieces = pieces

    def __await__(self):
        return self._first().__await__()

    async def _first(self) -> Any:
        try:
            return await anext(self.pieces)
        except StopAsyncIteration:
            return _NO_PIECE

    def cancel(self) -> None:
        self.pieces.cancel()


@serve.deployment(max_ongoing_requests=200, autoscaling_config={"min_replicas": 1, "max_replicas": 4})
@serve.ingress()
class Ingress:
    def __init__(self, settings: dict[str, Any], synthesizer: DeploymentHandle, transcriber: DeploymentHandle):
        route_to_serve_logs()
        self.settings = ServiceSettings.model_validate(settings)
        self.backends = ServeBackends(synthesizer, transcriber, open_status_store(self.settings.store),
                                      self.settings.limits, serve.get_replica_context().app_name)

    def __serve_build_asgi_app__(self):
        # Serve's proxy takes or makes X-Request-ID, returns it and carries it through the handles.
        return create_app(self.settings, self.backends, echo_request_id=False)

    def info(self) -> dict[str, Any]:
        """Operator info: which replica, in which process."""
        return {"replica": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid()}

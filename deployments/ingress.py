"""Ingress deployment: serves the FastAPI app of `speech_service/http/app.py` and reaches the model
deployments through handles, by way of `service.model_calls.ModelBackends`. It never calls them at
start-up or for status, so they can rest at zero."""

from __future__ import annotations

import asyncio
import os
import time
from functools import partial
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from deployments.dead_replicas import LostReplicas
from deployments.profiles import deployment_options
from deployments.serve_state import capacity_problem, deployment_status, http_host, replica_stopping, running_replicas
from speech_service.coldstart import last_cold_starts, open_status_store
from speech_service.config import ServiceSettings, SynthesisOptions
from speech_service.http.app import create_app
from speech_service.http.auth import KeyRing, anonymous_admin_refusal
from speech_service.logs import route_to_serve_logs
from speech_service.model_status import held_models
from speech_service.models import ModelRegistry
from speech_service.plans import SpeechPlan
from speech_service.references import Reference
from speech_service.service.model_calls import Failure, ModelBackends, ModelCalls


def classify(exc: BaseException) -> Failure:
    """Ray's failures as the call policy names them."""
    if isinstance(exc, BackPressureError):
        return "backpressure"
    if isinstance(exc, (RayActorError, ReplicaUnavailableError)):  # its process was killed, its node went away
        return "replica_gone"
    return None


class SynthesizerHandle:
    """The Synthesizer deployment's handle calls, as `ModelBackends` makes them; each routed by its
    reference's model (Serve's `multiplexed_model_id`) to a replica that holds it when there is one."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle
        self._routed: dict[tuple[str, bool], DeploymentHandle] = {}

    def _to(self, reference: Reference, stream: bool = False) -> DeploymentHandle:
        key = (reference.model, stream)
        if key not in self._routed:  # one handle per model and kind: `options` is not free
            self._routed[key] = self.handle.options(multiplexed_model_id=reference.model, stream=stream)
        return self._routed[key]

    def synthesize(self, reference: Reference, text: str, options: SynthesisOptions) -> DeploymentResponse:
        return self._to(reference).synthesize.remote(reference, text, options, dispatched_at=time.time())

    def plan(self, reference: Reference, text: str, options: SynthesisOptions,
             streaming: bool = False) -> DeploymentResponse:
        return self._to(reference).plan.remote(reference, text, options, streaming)

    def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int) -> DeploymentResponse:
        return self._to(reference).synthesize_segment.remote(reference, plan, index, dispatched_at=time.time())

    def synthesize_stream(self, reference: Reference, text: str,
                          options: SynthesisOptions) -> DeploymentResponseGenerator:
        return self._to(reference, stream=True).synthesize_stream.remote(reference, text, options,
                                                                         dispatched_at=time.time())


class TranscriberHandle:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    def transcribe(self, audio: np.ndarray, language: str | None) -> DeploymentResponse:
        return self.handle.transcribe.remote(audio, language)

    def listen(self, clips: list[np.ndarray], language: str | None) -> DeploymentResponse:
        return self.handle.listen.remote(clips, language)


@serve.deployment(**deployment_options("Ingress"))  # config/serve.yaml's, the one source
@serve.ingress()
class Ingress:
    def __init__(self, settings: dict[str, Any], synthesizer: DeploymentHandle, transcriber: DeploymentHandle):
        route_to_serve_logs()
        self.settings = ServiceSettings.model_validate(settings)
        refusal = anonymous_admin_refusal(KeyRing(self.settings.keys()), http_host(),
                                          self.settings.allow_anonymous_admin)
        if refusal:  # secure by default: `serve run` shows this as the deployment's failure
            raise RuntimeError(refusal)
        app_name = serve.get_replica_context().app_name
        status_store = open_status_store(self.settings.store)
        default_model = ModelRegistry.of(self.settings).default

        async def status() -> dict[str, Any]:
            status = await asyncio.to_thread(deployment_status, app_name)
            # Written by the replicas when they became ready or their models changed; reading them wakes nobody.
            status["cold_starts"] = await asyncio.to_thread(last_cold_starts, status_store)
            synthesizer = status["deployments"].get("Synthesizer")
            if synthesizer is not None and synthesizer["model"] is None:  # an older user_config names it
                synthesizer["model"] = default_model
            running = await asyncio.to_thread(running_replicas, app_name, "Synthesizer")
            status["synthesizer_replicas"] = await asyncio.to_thread(held_models, status_store, running)
            return status

        calls = ModelCalls(self.settings.limits, classify=classify,
                           capacity_problem=lambda deployment: capacity_problem(app_name, deployment),
                           replica_lost=LostReplicas().holds)
        self.backends = ModelBackends(SynthesizerHandle(synthesizer), TranscriberHandle(transcriber), calls, status)

    def __serve_build_asgi_app__(self):
        # Serve's proxy takes or makes X-Request-ID, returns it and carries it through the handles.
        app = create_app(self.settings, self.backends, echo_request_id=False)
        context = serve.get_replica_context()
        app.state.services.live.stopping = partial(replica_stopping, context.app_name, context.deployment,
                                                   context.replica_id.unique_id)
        return app

    def info(self) -> dict[str, Any]:
        """Operator info: which replica, in which process."""
        return {"replica": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid()}

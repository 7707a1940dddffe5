"""Ingress deployment: serves the FastAPI app of `speech_service.api` and reaches the model
deployments through handles. It never calls them at start-up or for status, so they can rest at zero."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from speech_service.api import create_app
from speech_service.coldstart import last_cold_starts, open_status_store
from speech_service.config import ServiceSettings
from speech_service.errors import unwrap
from speech_service.objects import ObjectStore

logger = logging.getLogger("ray.serve")


class ServeBackends:
    """`speech_service.api.Backends` over Ray Serve deployment handles."""

    def __init__(self, synthesizer: DeploymentHandle, transcriber: DeploymentHandle, status_store: ObjectStore):
        self.synthesizer = synthesizer
        self.transcriber = transcriber
        self.status_store = status_store

    async def synthesize(self, reference: np.ndarray, ref_text: str, text: str, options: dict[str, Any]) -> np.ndarray:
        return await _call(self.synthesizer.synthesize.remote(reference, ref_text, text, options))

    async def stream(self, reference: np.ndarray, ref_text: str, text: str,
                     options: dict[str, Any]) -> AsyncIterator[np.ndarray]:
        pieces = self.synthesizer.options(stream=True).synthesize_stream.remote(reference, ref_text, text, options)
        try:
            async for piece in pieces:
                yield piece
        except Exception as exc:
            raise unwrap(exc) from None

    async def transcribe(self, audio: np.ndarray, language: str | None) -> str:
        return await _call(self.transcriber.transcribe.remote(audio, language))

    async def status(self) -> dict[str, Any]:
        status = await asyncio.to_thread(deployment_status, serve.get_replica_context().app_name)
        # Written by the replicas when they became ready; reading them wakes nobody.
        status["cold_starts"] = await asyncio.to_thread(last_cold_starts, self.status_store)
        return status


async def _call(response):
    """Await a handle call; re-raise the replica's own exception (e.g. a 4xx it chose) unwrapped."""
    try:
        return await response
    except Exception as exc:
        raise unwrap(exc) from None


def deployment_status(app_name: str) -> dict[str, Any]:
    """Replica counts and configured models, read from the Serve controller (no replica is called)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app = details["applications"][app_name]
    deployments = {}
    for name, d in app["deployments"].items():
        states: dict[str, int] = {}
        for replica in d.get("replicas", []):
            states[replica["state"]] = states.get(replica["state"], 0) + 1
        user_config = (d.get("deployment_config") or {}).get("user_config") or {}
        deployments[name] = {
            "status": d["status"],
            "target_replicas": d.get("target_num_replicas"),
            "replicas": states,
            "model": user_config.get("model_name") or user_config.get("model"),
        }
    return {"application": app_name, "app_status": app["status"], "deployments": deployments}


@serve.deployment(max_ongoing_requests=200, autoscaling_config={"min_replicas": 1, "max_replicas": 4})
@serve.ingress()
class Ingress:
    def __init__(self, settings: dict[str, Any], synthesizer: DeploymentHandle, transcriber: DeploymentHandle):
        self.settings = ServiceSettings.model_validate(settings)
        self.backends = ServeBackends(synthesizer, transcriber, open_status_store(self.settings.store))

    def __serve_build_asgi_app__(self):
        return create_app(self.settings, self.backends)

    def info(self) -> dict[str, Any]:
        """Operator info: which replica, in which process."""
        return {"replica": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid()}

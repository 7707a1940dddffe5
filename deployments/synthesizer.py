"""Synthesizer deployment: a thin Ray Serve shell around `SynthesisReplica`
(`speech_service/synthesis/replica.py`), one per replica, on a GPU when there is one. It is bound
with the application's model registry; the models it holds are reported to Serve's router
(`deployments/model_routing.py`), to `/v1/status` (`speech_service/model_status.py`) and to the
metrics."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import ray
from ray import serve

from deployments.model_routing import report_held_models
from deployments.profiles import deployment_options
from deployments.replica import replica_hooks
from speech_service import metrics, model_status
from speech_service.audio import Speech
from speech_service.coldstart import open_status_store
from speech_service.config import ServiceSettings, StoreSettings, SynthesisOptions
from speech_service.errors import ServiceError
from speech_service.logs import route_to_serve_logs
from speech_service.models import ModelRegistry
from speech_service.plans import SpeechPlan
from speech_service.references import Reference
from speech_service.synthesis.replica import SynthesisReplica


@serve.deployment(**deployment_options("Synthesizer"))  # config/serve.yaml's, the one source
class Synthesizer:
    def __init__(self, store: dict[str, Any] | None = None, models: dict[str, Any] | None = None) -> None:
        hooks = replica_hooks("Synthesizer", store)  # first: the worker's start ends here
        route_to_serve_logs()
        self._status = open_status_store(StoreSettings.model_validate(store)) if store is not None else None
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        registry = ModelRegistry.of(ServiceSettings.model_validate(models or {}))
        self.replica = SynthesisReplica(registry, **hooks, on_batch=metrics.record_batch_size,
                                        on_change=self._held_changed, on_load=metrics.record_model_load,
                                        on_evict=metrics.record_model_eviction)

    def _held_changed(self, names: list[str]) -> None:
        report_held_models(names)
        if self._status is not None:
            model_status.save(self._status, self._replica_id, self.replica.models.held(), self.replica.models.stats())


    def __del__(self) -> None:  # Serve's graceful shutdown: this replica's status record goes with it
        if getattr(self, "_status", None) is not None:
            try:
                self._status.delete(f"{model_status.PREFIX}{self._replica_id}.json")
            except Exception:  # noqa: BLE001 - status readers skip replicas Serve does not run anyway
                pass

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.replica.reconfigure(config)

    async def synthesize(self, reference: Reference, text: str, options: SynthesisOptions,
                         dispatched_at: float | None = None) -> Speech | ServiceError:
        metrics.record_queue_wait(dispatched_at)
        metrics.record_model_request(reference.model)
        return await self.replica.synthesize(reference, text, options)

    def plan(self, reference: Reference, text: str, options: SynthesisOptions,
             streaming: bool = False) -> SpeechPlan | ServiceError:
        return self.replica.plan(reference, text, options, streaming)

    async def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int,
                                 dispatched_at: float | None = None) -> Speech | ServiceError:
        metrics.record_queue_wait(dispatched_at)
        metrics.record_model_request(reference.model)
        return await self.replica.synthesize_segment(reference, plan, index)

    async def synthesize_stream(self, reference: Reference, text: str, options: SynthesisOptions,
                                dispatched_at: float | None = None) -> AsyncIterator[np.ndarray | ServiceError]:
        metrics.record_queue_wait(dispatched_at)
        metrics.record_model_request(reference.model)
        async for piece in self.replica.synthesize_stream(reference, text, options):
            yield piece

    def batch_sizes(self) -> dict[int, int]:
        """Operator info: model calls by number of segments sampled together."""
        return self.replica.batch_sizes()

    def info(self) -> dict[str, Any]:
        """Operator info: which replica on which Ray node, and what `SynthesisReplica.info` says."""
        context = ray.get_runtime_context()
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "node_id": context.get_node_id(),
            "actor_id": context.get_actor_id(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            **self.replica.info(),
        }

"""Synthesizer deployment: a thin shell around `SynthesisEngine` (one per replica, on a GPU when there is one).

The engine (torch, f5-tts, Vocos) is imported in `reconfigure`, not with this module, so the cold-start
record shows the cost of the imports as its own phase.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve

from deployments.replica import cold_start_clock, report_cold_start, threads
from speech_service import metrics
from speech_service.config import SynthesizerSettings
from speech_service.errors import ModelUnavailable
from speech_service.logs import route_to_serve_logs

if TYPE_CHECKING:
    from speech_service.engine import SynthesisEngine, SynthesisParams

logger = logging.getLogger("ray.serve")

# Fields whose change means new weights; the rest (sampling defaults) apply to the loaded engine.
_RELOAD_FIELDS = set(SynthesizerSettings.model_fields) - {"defaults"}


@serve.deployment(
    ray_actor_options={"num_gpus": 1},
    autoscaling_config={"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1},
    max_ongoing_requests=8,
)
class Synthesizer:
    def __init__(self, store: dict[str, Any] | None = None) -> None:
        self._clock = cold_start_clock("Synthesizer")  # first: the worker's start ends here
        self._store = store  # the app's StoreSettings, where the cold-start record goes
        route_to_serve_logs()
        self._lock = threading.Lock()
        self._settings: SynthesizerSettings | None = None
        self._engine: SynthesisEngine | None = None
        self._load_error = "the Synthesizer has no user_config yet"

    def reconfigure(self, config: dict[str, Any]) -> None:
        settings = SynthesizerSettings.model_validate(config or {})
        with self._lock:
            weights = settings.model_dump(include=_RELOAD_FIELDS)
            if self._settings is None or weights != self._settings.model_dump(include=_RELOAD_FIELDS):
                self._load(settings)
            elif self._engine is not None:
                self._engine.defaults = settings.defaults
            self._settings = settings

    def _load(self, settings: SynthesizerSettings) -> None:
        cold, self._clock = self._clock, None  # only the first load is a cold start
        clock = cold or cold_start_clock("Synthesizer")
        try:
            with clock.phase("imports"):
                from speech_service.engine import SynthesisEngine
            settings = settings.model_copy(update={"cpu_threads": threads(settings.cpu_threads)})
            self._engine = SynthesisEngine.load(settings, clock)
            if cold:
                report_cold_start(cold, self._store)
        except Exception as exc:  # stay up: /healthz works and synthesis explains what is missing
            logger.error("could not load %s: %s", settings.model_name, exc)
            self._engine = None
            self._load_error = (
                f"F5-TTS weights could not be loaded ({exc}). Provide them: set the Synthesizer's "
                "user_config `checkpoint` (and `vocoder`) in config/serve.yaml to a local path or an "
                "s3:// URI holding the files, or make the model hub reachable; `make demo` serves "
                "the offline profile."
            )

    def _ready(self, options: dict[str, Any]) -> tuple[SynthesisEngine, SynthesisParams]:
        engine = self._engine
        if engine is None:
            raise ModelUnavailable(self._load_error)
        from speech_service.engine import SynthesisParams

        return engine, SynthesisParams.from_request(engine.defaults, **options)

    def synthesize(self, reference: np.ndarray, ref_text: str, text: str, options: dict[str, Any],
                   dispatched_at: float | None = None) -> np.ndarray:
        metrics.record_queue_wait(dispatched_at)
        engine, params = self._ready(options)
        return engine.synthesize(reference, ref_text, text, params)

    def synthesize_stream(self, reference: np.ndarray, ref_text: str, text: str,
                          options: dict[str, Any], dispatched_at: float | None = None) -> Iterator[np.ndarray]:
        metrics.record_queue_wait(dispatched_at)
        engine, params = self._ready(options)
        yield from engine.stream(reference, ref_text, text, params)

    def info(self) -> dict[str, Any]:
        """Operator info: which replica on which Ray node, which model on which device."""
        engine = self._engine
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "pid": os.getpid(),
            "defaults": engine.defaults.model_dump() if engine else None,
            "model": engine.model_name if engine else None,
            "device": engine.device if engine else None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_threads": _torch_threads() if engine else None,
            "load_error": None if engine else self._load_error,
        }


def _torch_threads() -> int:
    import torch  # already imported with the engine

    return torch.get_num_threads()

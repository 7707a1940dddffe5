"""Synthesizer deployment: a thin shell around `SynthesisEngine` (one per replica, on a GPU when there is one).

Every request is planned into segments (`BatchItem`s) and each segment goes through the replica's
`ContinuousBatcher`: the model starts on a segment as soon as it is free, and segments that arrive
while it is busy are sampled together in its next call (`SynthesisEngine.synthesize_batch`, which
groups by sampling knobs and splits by the frame budget). So segments of concurrent requests, and all
segments of one non-streamed request, share model calls. A stream submits its segments one at a time,
so its first piece leaves after its first sentence; when its client hangs up, Serve cancels the
generator, its queued segment is dropped and no later one is queued.

The engine (torch, f5-tts, Vocos) is imported in `reconfigure`, not with this module, so the cold-start
record shows the cost of the imports as its own phase.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
from ray import serve

from deployments.replica import cold_start_clock, report_cold_start, threads
from speech_service import metrics
from speech_service.batcher import ContinuousBatcher
from speech_service.config import F5_DEFAULTS, SynthesisOptions, SynthesizerSettings
from speech_service.errors import ModelUnavailable, ServiceError, refusal
from speech_service.logs import route_to_serve_logs
from speech_service.references import Reference

if TYPE_CHECKING:
    from speech_service.audio import Speech
    from speech_service.engine import BatchItem, SynthesisEngine

logger = logging.getLogger("ray.serve")

# A segment's waveform, and the (start, end) of the model call that made it (shared by its batch).
_Sampled = tuple[np.ndarray, tuple[float, float]]

# Fields whose change means new weights; the rest (sampling defaults, batching) apply to the loaded engine.
_LIVE_FIELDS = {"defaults", "max_batch_size", "batch_wait_timeout_s", "max_batch_frames", "normalize_text",
                "reference_cache_size"}
_RELOAD_FIELDS = set(SynthesizerSettings.model_fields) - _LIVE_FIELDS


@serve.deployment(
    ray_actor_options={"num_gpus": 1},
    # The same as config/serve.yaml (which overrides these); no `initial_replicas`: see its comment.
    autoscaling_config={"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 8,
                        "metrics_interval_s": 0.25},
    # >= max_batch_size, or no call could be full (a stream has one segment in the batcher at a
    # time); 2 x: one full call running while the next one's segments queue.
    max_ongoing_requests=16,
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
        # Knobs are set from user_config in reconfigure; one model call at a time on this replica.
        self._batcher: ContinuousBatcher[BatchItem, _Sampled] = ContinuousBatcher(self._sample_batch)

    def reconfigure(self, config: dict[str, Any]) -> None:
        settings = SynthesizerSettings.model_validate(config or {})
        with self._lock:
            weights = settings.model_dump(include=_RELOAD_FIELDS)
            if self._settings is None or weights != self._settings.model_dump(include=_RELOAD_FIELDS):
                self._load(settings)
            elif self._engine is not None:
                self._engine.defaults = settings.defaults
            if self._engine is not None:
                self._engine.max_batch_size = settings.max_batch_size
                self._engine.max_batch_frames = settings.max_batch_frames
                self._engine.normalize_text = settings.normalize_text
                self._engine.clips.size = settings.reference_cache_size
            self._settings = settings
        self._batcher.max_batch_size = settings.max_batch_size
        self._batcher.wait_s = settings.batch_wait_timeout_s  # how long an idle model waits for company

    def _load(self, settings: SynthesizerSettings) -> None:
        cold, self._clock = self._clock, None  # only the first load is a cold start
        clock = cold or cold_start_clock("Synthesizer")
        try:
            with clock.phase("imports"):
                from speech_service import f5_modules  # noqa: F401  before torch: see there
                from speech_service.engine import SynthesisEngine
            settings = settings.model_copy(update={"cpu_threads": threads(settings.cpu_threads)})
            self._engine = SynthesisEngine.load(settings, clock)
            self._engine.on_batch = metrics.batch_size().observe  # segments per model call
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

    def _ready(self) -> SynthesisEngine:
        engine = self._engine
        if engine is None:
            raise ModelUnavailable(self._load_error)
        return engine

    def _items(self, reference: Reference, text: str, options: SynthesisOptions, *,
               streaming: bool) -> list[BatchItem] | ServiceError:
        """The request's segments, or the refusal to answer the caller with (`refusal`)."""
        engine = self._ready()  # ModelUnavailable is raised: a replica without its model has failed
        try:
            clip = engine.clips.get(reference)  # ReferenceMissing: the caller sends the clip
            return engine.items(clip, reference.ref_text, text, SynthesisOptions.model_validate(options),
                                streaming=streaming)
        except ServiceError as exc:
            return refusal(exc)

    async def _sample(self, item: BatchItem) -> _Sampled:
        """One segment, sampled together with whatever else is queued."""
        return await self._batcher.submit(item)

    async def _sample_batch(self, items: list[BatchItem]) -> list[_Sampled]:
        return await asyncio.to_thread(self._timed_batch, items)  # the engine call blocks

    def _timed_batch(self, items: list[BatchItem]) -> list[_Sampled]:
        started = time.perf_counter()
        waves = self._ready().synthesize_batch(items)
        span = (started, time.perf_counter())
        return [(wave, span) for wave in waves]

    async def synthesize(self, reference: Reference, text: str, options: SynthesisOptions,
                         dispatched_at: float | None = None) -> Speech:
        from speech_service.audio import Speech, join
        from speech_service.engine import cross_fade_samples

        metrics.record_queue_wait(dispatched_at)
        items = await asyncio.to_thread(self._items, reference, text, options, streaming=False)
        if isinstance(items, ServiceError):
            return items
        sampled = await asyncio.gather(*(self._sample(item) for item in items))
        model_s = sum(end - start for start, end in {span for _, span in sampled})  # each call once
        return Speech(join([wave for wave, _ in sampled], cross_fade_samples(items)), model_s)

    async def synthesize_stream(self, reference: Reference, text: str, options: SynthesisOptions,
                                dispatched_at: float | None = None) -> AsyncIterator[np.ndarray]:
        from speech_service.audio import CrossFade
        from speech_service.engine import cross_fade_samples

        metrics.record_queue_wait(dispatched_at)
        items = await asyncio.to_thread(self._items, reference, text, options, streaming=True)
        if isinstance(items, ServiceError):
            yield items  # as the first piece
            return
        seams = CrossFade(cross_fade_samples(items))
        for item in items:
            wave, _ = await self._sample(item)
            if (piece := seams.push(wave)) is not None:
                yield piece
        if (piece := seams.finish()) is not None:
            yield piece

    def batch_sizes(self) -> dict[int, int]:
        """Model calls by number of segments sampled together, since this replica started; for operators."""
        engine = self._engine
        return dict(engine.batch_sizes) if engine else {}

    def info(self) -> dict[str, Any]:
        """Operator info: which replica on which Ray node, which model on which device."""
        engine = self._engine
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "pid": os.getpid(),
            "defaults": engine.defaults.over(F5_DEFAULTS).model_dump() if engine else None,  # in effect
            "model": engine.model_name if engine else None,
            "device": engine.device if engine else None,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_threads": _torch_threads() if engine else None,
            "batch_sizes": self.batch_sizes(),
            "reference_cache": engine.clips.stats() if engine else None,
            "load_error": None if engine else self._load_error,
        }


def _torch_threads() -> int:
    import torch  # already imported with the engine

    return torch.get_num_threads()

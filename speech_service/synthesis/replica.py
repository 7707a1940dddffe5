"""What one Synthesizer replica does, without Ray: `deployments/synthesizer.py` only wraps it.

Every request is planned into segments (`BatchItem`s) and each segment goes through the replica's
`ContinuousBatcher`: the model starts on a segment as soon as it is free, and segments that arrive
while it is busy are sampled together in its next call (`SynthesisEngine.synthesize_batch`, which
groups by sampling knobs and splits by the frame budget). So segments of concurrent requests, and
all segments of one whole response, share model calls. A stream submits its segments one at a
time, so its first piece leaves after its first sentence; when its client hangs up, the generator
is cancelled, its queued segment is dropped and no later one is queued.

A replica that cannot load its weights stays up and refuses synthesis with a 503 that says how to
provide them. A request's own fault (a 4xx) and a clip-cache miss are answered, not raised (see
`errors.refusal`). The engine (torch, f5-tts, Vocos) is imported in `reconfigure`, so a cold-start
record shows the imports as their own phase.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from speech_service.audio import Speech
from speech_service.audio.seams import CrossFade, join
from speech_service.batching import ContinuousBatcher
from speech_service.config import F5_DEFAULTS, SynthesisOptions, SynthesizerSettings
from speech_service.errors import ServiceError, refusal
from speech_service.loaded_model import LoadedModel
from speech_service.plans import SpeechPlan
from speech_service.references import Reference

if TYPE_CHECKING:
    from speech_service.coldstart import ColdStartClock
    from speech_service.synthesis.engine import BatchItem, SynthesisEngine

logger = logging.getLogger("ray.serve")

# A segment's waveform, and the (start, end) of the model call that made it (shared by its batch).
_Sampled = tuple[np.ndarray, tuple[float, float]]

# Fields whose change means new weights; the rest (sampling defaults, batching) apply to the loaded engine.
LIVE_FIELDS = {"defaults", "max_batch_size", "batch_wait_timeout_s", "max_batch_frames", "normalize_text",
               "reference_cache_size"}
RELOAD_FIELDS = set(SynthesizerSettings.model_fields) - LIVE_FIELDS


def load_engine(settings: SynthesizerSettings, clock: ColdStartClock | None) -> SynthesisEngine:
    """The engine, its imports timed as a phase of `clock`."""
    from speech_service.coldstart import ColdStartClock

    clock = clock or ColdStartClock("Synthesizer", "")
    with clock.phase("imports"):
        from speech_service.synthesis import f5_modules  # noqa: F401  before torch: see there
        from speech_service.synthesis.engine import SynthesisEngine
    return SynthesisEngine.load(settings, clock)


class SynthesisReplica:
    """One replica's engine, its live settings and its batcher.

    `threads(configured)` turns `cpu_threads` into a thread count (the deployment: the CPUs Ray gave
    it); `on_cold_start(clock)` is told when the first load succeeded; `on_batch(size)` sees each
    model call's size (metrics)."""

    def __init__(self, *, clock: ColdStartClock | None = None, threads: Callable[[int | None], int] = lambda n: n or 1,
                 on_cold_start: Callable[[ColdStartClock], None] | None = None,
                 on_batch: Callable[[int], object] | None = None,
                 loader: Callable[[SynthesizerSettings, ColdStartClock | None], SynthesisEngine] = load_engine):
        self.loaded: LoadedModel[SynthesizerSettings, SynthesisEngine] = LoadedModel(
            "Synthesizer", loader, advice=_advice, clock=clock, threads=threads, on_cold_start=on_cold_start)
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self.settings: SynthesizerSettings | None = None
        # Knobs are set from user_config in reconfigure; one model call at a time on this replica.
        self._batcher: ContinuousBatcher[BatchItem, _Sampled] = ContinuousBatcher(self._sample_batch)

    @property
    def engine(self) -> SynthesisEngine | None:
        return self.loaded.model

    # -- configuration ---------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any] | SynthesizerSettings) -> None:
        """Apply a new `user_config`: new weights only when a weight field changed."""
        settings = SynthesizerSettings.model_validate(config or {})
        with self._lock:
            weights = settings.model_dump(include=RELOAD_FIELDS)
            if self.settings is None or weights != self.settings.model_dump(include=RELOAD_FIELDS):
                if (engine := self.loaded.load(settings)) is not None:
                    engine.on_batch = self._on_batch
            if self.engine is not None:  # the live fields, on new and kept weights alike
                self.engine.defaults = settings.defaults
                self.engine.max_batch_size = settings.max_batch_size
                self.engine.max_batch_frames = settings.max_batch_frames
                self.engine.normalize_text = settings.normalize_text
                self.engine.clips.size = settings.reference_cache_size
            self.settings = settings
        self._batcher.max_batch_size = settings.max_batch_size
        self._batcher.wait_s = settings.batch_wait_timeout_s  # how long an idle model waits for company

    def _ready(self) -> SynthesisEngine:
        return self.loaded.ready()

    # -- requests --------------------------------------------------------------------------
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

    async def synthesize(self, reference: Reference, text: str, options: SynthesisOptions) -> Speech | ServiceError:
        """The whole speech, or the refusal to answer the caller with."""
        from speech_service.synthesis.engine import cross_fade_samples

        items = await asyncio.to_thread(self._items, reference, text, options, streaming=False)
        if isinstance(items, ServiceError):
            return items
        sampled = await asyncio.gather(*(self._sample(item) for item in items))
        model_s = sum(end - start for start, end in {span for _, span in sampled})  # each call once
        return Speech(join([wave for wave, _ in sampled], cross_fade_samples(items)), model_s)

    def plan(self, reference: Reference, text: str, options: SynthesisOptions,
             streaming: bool = False) -> SpeechPlan | ServiceError:
        """The plan of a whole response (what a job speaks), or of a stream; or the refusal."""
        engine = self._ready()
        try:
            clip = engine.clips.get(reference)
            return engine.plan_speech(clip, reference.ref_text, text, SynthesisOptions.model_validate(options),
                                      streaming=streaming)
        except ServiceError as exc:
            return refusal(exc)

    async def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int) -> Speech | ServiceError:
        """Segment `index` of `plan` alone: what the whole response has there (batched items equal
        their solo results), not yet cross-faded."""
        engine = self._ready()
        try:
            clip = await asyncio.to_thread(engine.clips.get, reference)
        except ServiceError as exc:
            return refusal(exc)
        item = engine.plan_items(clip, reference.ref_text, plan)[index]
        wave, (start, end) = await self._sample(item)
        return Speech(wave, end - start)

    async def synthesize_stream(self, reference: Reference, text: str,
                                options: SynthesisOptions) -> AsyncIterator[np.ndarray | ServiceError]:
        """The speech in pieces as segments are made; a refusal comes as the first and only piece."""
        from speech_service.synthesis.engine import cross_fade_samples

        items = await asyncio.to_thread(self._items, reference, text, options, streaming=True)
        if isinstance(items, ServiceError):
            yield items
            return
        seams = CrossFade(cross_fade_samples(items))
        for item in items:
            wave, _ = await self._sample(item)
            if (piece := seams.push(wave)) is not None:
                yield piece
        if (piece := seams.finish()) is not None:
            yield piece

    # -- for operators ---------------------------------------------------------------------
    def batch_sizes(self) -> dict[int, int]:
        """Model calls by number of segments sampled together, since this replica started."""
        engine = self.engine
        return dict(engine.batch_sizes) if engine else {}

    def info(self) -> dict[str, Any]:
        """Which model on which device, with which defaults in effect, and how its cache does."""
        engine = self.engine
        return {
            "defaults": engine.defaults.over(F5_DEFAULTS).model_dump() if engine else None,
            "model": engine.model_name if engine else None,
            "device": engine.device if engine else None,
            "cpu_threads": _torch_threads() if engine else None,
            "batch_sizes": self.batch_sizes(),
            "reference_cache": engine.clips.stats() if engine else None,
            "load_error": None if engine else self.loaded.error,
        }


def _advice(settings: SynthesizerSettings, exc: Exception) -> str:
    return (f"F5-TTS weights could not be loaded ({exc}). Provide them: set the Synthesizer's user_config "
            "`checkpoint` (and `vocoder`) in config/serve.yaml to a local path or an s3:// URI holding the "
            "files, or make the model hub reachable; `make demo` serves the offline profile.")


def _torch_threads() -> int:
    import torch  # already imported with the engine

    return torch.get_num_threads()

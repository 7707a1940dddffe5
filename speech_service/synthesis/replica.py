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
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from speech_service.audio import Speech
from speech_service.audio.seams import CrossFade, join
from speech_service.batching import ContinuousBatcher
from speech_service.config import F5_DEFAULTS, ServiceSettings, SynthesisOptions, SynthesizerSettings
from speech_service.errors import ModelUnavailable, ServiceError, refusal
from speech_service.models import ModelRegistry, ModelSpec
from speech_service.plans import SpeechPlan
from speech_service.references import Reference
from speech_service.synthesis.engines import EngineCache, Loader
from speech_service.text.script import Script

if TYPE_CHECKING:
    from speech_service.coldstart import ColdStartClock
    from speech_service.synthesis.engine import BatchItem, SynthesisEngine

logger = logging.getLogger("ray.serve")

# A segment's waveform, and the (start, end) of the model call that made it (shared by its batch).
_Sampled = tuple[np.ndarray, tuple[float, float]]
# What the batcher queues: a segment and the engine of its model (held by it until it is made, so an
# unloaded model finishes what it started).
_Queued = tuple["SynthesisEngine", "BatchItem"]

# Fields whose change means new weights or a new device; the rest apply to the loaded engines.
LIVE_FIELDS = {"defaults", "max_batch_size", "batch_wait_timeout_s", "max_batch_frames", "normalize_text",
               "reference_cache_size", "max_models", "preload", "load_retry_s"}
RELOAD_FIELDS = set(SynthesizerSettings.model_fields) - LIVE_FIELDS


def load_engine(settings: SynthesizerSettings, spec: ModelSpec, clock: ColdStartClock | None) -> SynthesisEngine:
    """The engine of one model, its imports timed as a phase of `clock`."""
    from speech_service.coldstart import ColdStartClock

    clock = clock or ColdStartClock("Synthesizer", "")
    with clock.phase("imports"):
        from speech_service.synthesis import f5_modules  # noqa: F401  before torch: see there
        from speech_service.synthesis.engine import SynthesisEngine
    return SynthesisEngine.load(settings, clock, spec)


class SynthesisReplica:
    """One replica's models (`EngineCache`), its live settings and its batcher.

    `registry` is the application's models (the deployment is bound with it); `threads`,
    `on_cold_start`, `on_change`, `on_load` and `on_evict` go to the `EngineCache`; `on_batch(size)`
    sees each model call's size (metrics)."""

    def __init__(self, registry: ModelRegistry | None = None, *, clock: ColdStartClock | None = None,
                 threads: Callable[[int | None], int] = lambda n: n or 1,
                 on_cold_start: Callable[[ColdStartClock], None] | None = None,
                 on_batch: Callable[[int], object] | None = None,
                 loader: Loader = load_engine, **reports: Callable[..., object]):
        self.models = EngineCache(registry or ModelRegistry.of(ServiceSettings()), loader, clock=clock,
                                  threads=threads, on_cold_start=on_cold_start, **reports)
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self.settings: SynthesizerSettings | None = None
        # Knobs are set from user_config in reconfigure; one model call at a time on this replica,
        # whichever models its segments are of (each call takes one model's).
        self._batcher: ContinuousBatcher[_Queued, _Sampled] = ContinuousBatcher(self._sample_batch)

    # -- configuration ---------------------------------------------------------------------
    def reconfigure(self, config: dict[str, Any] | SynthesizerSettings) -> None:
        """Apply a new `user_config`: the models reload only when a weight or device field changed;
        then the ones to preload are loaded (a failure is kept as that model's refusal)."""
        settings = SynthesizerSettings.model_validate(config or {})
        with self._lock:
            weights = settings.model_dump(include=RELOAD_FIELDS)
            reload = self.settings is not None and weights != self.settings.model_dump(include=RELOAD_FIELDS)
            self.models.configure(settings, reload)
            self.settings = settings
            for name, engine in self.models.held_engines():
                self._apply(name, engine)
            for name in self._preloaded(settings):
                try:
                    self._engine(name)
                except ModelUnavailable:
                    continue  # logged; its requests get the 503
        self._batcher.max_batch_size = settings.max_batch_size
        self._batcher.wait_s = settings.batch_wait_timeout_s  # how long an idle model waits for company

    def _preloaded(self, settings: SynthesizerSettings) -> list[str]:
        names = [self.models.registry.default] if settings.preload is None else settings.preload
        return [self.models.registry.canonical(name) for name in names][:settings.max_models]

    def _apply(self, name: str, engine: SynthesisEngine) -> None:
        """The live fields, on new and kept engines alike (the model's own defaults over the replica's)."""
        settings = self.settings
        engine.live_settings = settings
        engine.defaults = self.models.spec(name).defaults.over(settings.defaults)
        engine.max_batch_size = settings.max_batch_size
        engine.max_batch_frames = settings.max_batch_frames
        engine.normalize_text = settings.normalize_text
        engine.clips.size = settings.reference_cache_size
        engine.on_batch = self._on_batch

    def _engine(self, name: str) -> SynthesisEngine:
        """`name`'s engine, loaded if need be (blocking); `ModelUnavailable` names the model."""
        engine = self.models.get(name)
        if getattr(engine, "live_settings", None) is not self.settings:
            self._apply(name, engine)  # loaded just now
        return engine

    # -- requests --------------------------------------------------------------------------
    def _planned(self, reference: Reference, text: str | Script, options: SynthesisOptions, *,
                 streaming: bool) -> tuple[SpeechPlan, list[_Queued]] | ServiceError:
        """The request's plan and its segments as queued items, or the refusal to answer the caller
        with (`refusal`). `text` is plain text in `reference`'s voice, or a script (its references
        all of `reference`'s model)."""
        engine = self._engine(reference.model)  # ModelUnavailable is raised: the replica failed at it
        script = text if isinstance(text, Script) else Script.plain(text, (reference,))
        try:
            clips = [engine.clips.get(one) for one in script.references]  # ReferenceMissing: the caller sends them
            ref_texts = [one.ref_text for one in script.references]
            plan = engine.plan_script(clips, ref_texts, script.lines, SynthesisOptions.model_validate(options),
                                      streaming=streaming)
        except ServiceError as exc:
            return refusal(exc)
        return plan, [(engine, item) for item in engine.plan_items(clips, ref_texts, plan)]

    async def _sample(self, queued: _Queued) -> _Sampled:
        """One segment, sampled together with whatever else is queued."""
        return await self._batcher.submit(queued)

    async def _sample_batch(self, queued: list[_Queued]) -> list[_Sampled]:
        return await asyncio.to_thread(self._timed_batch, queued)  # the engine calls block

    def _timed_batch(self, queued: list[_Queued]) -> list[_Sampled]:
        """Each model's segments in its own call (`synthesize_batch`), in the order they queued."""
        sampled: list[_Sampled | None] = [None] * len(queued)
        for engine in {id(engine): engine for engine, _ in queued}.values():
            mine = [i for i, (owner, _) in enumerate(queued) if owner is engine]
            started = time.perf_counter()
            waves = engine.synthesize_batch([queued[i][1] for i in mine])
            span = (started, time.perf_counter())
            for i, wave in zip(mine, waves):
                sampled[i] = (wave, span)
        return sampled

    async def synthesize(self, reference: Reference, text: str | Script,
                         options: SynthesisOptions) -> Speech | ServiceError:
        """The whole speech, or the refusal to answer the caller with."""
        planned = await asyncio.to_thread(self._planned, reference, text, options, streaming=False)
        if isinstance(planned, ServiceError):
            return planned
        plan, queued = planned
        sampled = await asyncio.gather(*(self._sample(one) for one in queued))
        model_s = sum(end - start for start, end in {span for _, span in sampled})  # each call once
        return Speech(join([wave for wave, _ in sampled], plan.cross_fade_samples, plan.pause_samples), model_s)

    def plan(self, reference: Reference, text: str | Script, options: SynthesisOptions,
             streaming: bool = False) -> SpeechPlan | ServiceError:
        """The plan of a whole response (what a job speaks), or of a stream; or the refusal."""
        planned = self._planned(reference, text, options, streaming=streaming)
        return planned if isinstance(planned, ServiceError) else planned[0]

    async def synthesize_segment(self, reference: Reference, plan: SpeechPlan, index: int) -> Speech | ServiceError:
        """Segment `index` of `plan` alone, in `reference`'s voice (the one its segment names): what
        the whole response has there (batched items equal their solo results), not yet joined."""
        engine = await asyncio.to_thread(self._engine, reference.model)
        try:
            clip = await asyncio.to_thread(engine.clips.get, reference)
        except ServiceError as exc:
            return refusal(exc)
        segment = replace(plan.segments[index], reference=0)
        item = engine.plan_items([clip], [reference.ref_text], replace(plan, segments=[segment]))[0]
        wave, (start, end) = await self._sample((engine, item))
        return Speech(wave, end - start)

    async def synthesize_stream(self, reference: Reference, text: str | Script,
                                options: SynthesisOptions) -> AsyncIterator[np.ndarray | ServiceError]:
        """The speech in pieces as segments are made; a refusal comes as the first and only piece."""
        planned = await asyncio.to_thread(self._planned, reference, text, options, streaming=True)
        if isinstance(planned, ServiceError):
            yield planned
            return
        plan, queued = planned
        seams = CrossFade(plan.cross_fade_samples)
        for one, pause in zip(queued, plan.pause_samples):
            wave, _ = await self._sample(one)
            if (piece := seams.push(wave, pause)) is not None:
                yield piece
        if (piece := seams.finish()) is not None:
            yield piece

    # -- for operators ---------------------------------------------------------------------
    def batch_sizes(self) -> dict[int, int]:
        """Model calls by number of segments sampled together, over the models held."""
        sizes: Counter[int] = Counter()
        for engine in self.models.engines():
            sizes.update(engine.batch_sizes)
        return dict(sizes)

    def info(self) -> dict[str, Any]:
        """Which models are held on which device, with which defaults, and how their caches do."""
        engines = dict(self.models.held_engines())
        default = engines.get(self.models.registry.default) or next(iter(engines.values()), None)
        return {
            "model": next((name for name, engine in engines.items() if engine is default), None),
            "device": default.device if default else None,
            "defaults": default.defaults.over(F5_DEFAULTS).model_dump() if default else None,
            "cpu_threads": _torch_threads() if engines else None,
            "held": self.models.held(),
            "models": {name: {**stats, "reference_cache": engines[name].clips.stats() if name in engines else None}
                       for name, stats in self.models.stats().items()},
            "batch_sizes": self.batch_sizes(),
            "queued_segments": self._batcher.queued(),  # waiting for a model call: none once callers are gone
            "reference_cache": default.clips.stats() if default else None,
            "load_error": None if default else next(
                (s["load_error"] for s in self.models.stats().values() if s["load_error"]), None),
        }


def _torch_threads() -> int:
    import torch  # already imported with the engine

    return torch.get_num_threads()

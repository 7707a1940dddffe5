"""The models one Synthesizer replica holds: loaded on demand by registry name, least recently used
unloaded beyond `max_models` (its GPU memory released), and a model that cannot be loaded refused
with a 503 that names it while the others keep working (docs/ARCHITECTURE.md, "Models").

Plain Python: `SynthesisReplica` owns one. `on_change(names)` is told the names held (and being
loaded) whenever they change, so the deployment can tell Serve's router where each model is warm.
The replica's first load is its cold start (`on_cold_start(clock)`), whichever model it is.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from speech_service.config import SynthesizerSettings
from speech_service.errors import ModelUnavailable
from speech_service.models import ModelRegistry, ModelSpec
from speech_service.weights.source import fetch_weights

if TYPE_CHECKING:
    from speech_service.coldstart import ColdStartClock
    from speech_service.synthesis.engine import SynthesisEngine

logger = logging.getLogger("ray.serve")

Loader = Callable[[SynthesizerSettings, ModelSpec, "ColdStartClock | None"], "SynthesisEngine"]


def fetch_local(spec: ModelSpec, cache_dir: str) -> ModelSpec:
    """`spec` with its checkpoint, vocoder and vocab on this node's disk (fetched when remote)."""
    weights = fetch_weights(spec.checkpoint, spec.vocoder, spec.vocab, cache_dir)
    return spec.model_copy(update={"checkpoint": str(weights.checkpoint), "vocoder": str(weights.vocoder),
                                   "vocab": weights.vocab})


class EngineCache:
    def __init__(self, registry: ModelRegistry, loader: Loader, *, clock: ColdStartClock | None = None,
                 threads: Callable[[int | None], int] = lambda n: n or 1,
                 on_cold_start: Callable[[ColdStartClock], None] | None = None,
                 on_change: Callable[[list[str]], object] | None = None,
                 on_load: Callable[[str, float, bool], object] | None = None,
                 on_evict: Callable[[str], object] | None = None):
        self.registry, self.loader, self.threads = registry, loader, threads
        self.on_cold_start, self.on_change, self.on_load, self.on_evict = on_cold_start, on_change, on_load, on_evict
        self._clock = clock  # the cold start, until the first load that works
        self.settings: SynthesizerSettings | None = None
        self._engines: OrderedDict[str, SynthesisEngine] = OrderedDict()  # least recently used first
        self._failed: dict[str, tuple[float, str]] = {}  # name -> (when, why), refused until load_retry_s
        self._loading: str | None = None
        self._lock = threading.Lock()  # the dict and counters
        self._load_lock = threading.Lock()  # one load at a time: two models' weights never arrive at once
        self.loads: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.load_s: dict[str, float] = {}  # each model's last load

    # -- what the replica asks --------------------------------------------------------------
    def get(self, name: str) -> SynthesisEngine:
        """The engine of `name`, loaded now if it is not held (blocking); `ModelUnavailable` names
        the model when it cannot be."""
        with self._lock:
            self.requests[name] += 1
            if (engine := self._held(name)) is not None:
                return engine
        with self._load_lock:
            with self._lock:
                if (engine := self._held(name)) is not None:  # loaded while this one waited
                    return engine
            return self._load(name)

    def held(self) -> list[str]:
        """The names held, least recently used first."""
        with self._lock:
            return list(self._engines)

    def engines(self) -> list[SynthesisEngine]:
        with self._lock:
            return list(self._engines.values())

    def held_engines(self) -> list[tuple[str, SynthesisEngine]]:
        with self._lock:
            return list(self._engines.items())

    # -- configuration ----------------------------------------------------------------------
    def configure(self, settings: SynthesizerSettings, reload: bool) -> None:
        """New settings; with `reload` (a weight or device field changed) every model is unloaded,
        to be loaded again with them. Then the replica keeps at most `max_models`."""
        self.settings = settings
        with self._lock:
            self._failed.clear()
            if reload:
                dropped = list(self._engines)
                self._engines.clear()
            else:
                dropped = self._evict_beyond(settings.max_models)
        self._released(dropped)

    def spec(self, name: str) -> ModelSpec:
        """`name`'s weights and defaults; the user_config's older weight fields apply to the default."""
        if name not in self.registry.specs:
            raise ModelUnavailable(f"This Synthesizer has no model '{name}' (it serves "
                                   f"{', '.join(self.registry.specs)}).")
        return self._settings().weights_of(self.registry.specs[name], default=name == self.registry.default)

    # -- loading and unloading ----------------------------------------------------------------
    def _held(self, name: str) -> SynthesisEngine | None:
        engine = self._engines.get(name)
        if engine is not None:
            self._engines.move_to_end(name)
            return engine
        failed = self._failed.get(name)
        if failed and time.monotonic() - failed[0] < self._settings().load_retry_s:
            raise ModelUnavailable(failed[1])
        return None

    def _load(self, name: str) -> SynthesisEngine:
        settings = self._settings()
        spec = self.spec(name)
        with self._lock:
            self._loading = name
        cold, started = self._clock, time.perf_counter()
        try:
            # The files first, while every model is still held: one whose weights are missing or
            # unreachable costs the others nothing.
            with cold.phase("fetch") if cold else nullcontext():
                local = fetch_local(spec, settings.cache_dir)
            with self._lock:
                dropped = self._evict_beyond(settings.max_models - 1)
            self._released(dropped)
            resolved = settings.model_copy(update={"cpu_threads": self.threads(settings.cpu_threads)})
            engine = self.loader(resolved, local, cold)
        except Exception as exc:  # stay up: the other models work, and this one's requests are told why
            message = _advice(name, exc)
            logger.error("could not load model %s: %s", name, exc)
            with self._lock:
                self._failed[name] = (time.monotonic(), message)
                self._loading = None
            self._report(self.on_load, name, time.perf_counter() - started, False)
            self._changed()
            raise ModelUnavailable(message) from None
        seconds = time.perf_counter() - started
        with self._lock:
            self._engines[name] = engine
            self._loading = None
            self.loads[name] += 1
            self.load_s[name] = round(seconds, 3)
        logger.info("model %s loaded in %.2f s; this replica holds %s", name, seconds, ", ".join(self.held()))
        if cold is not None:
            self._clock = None
            if self.on_cold_start:
                self.on_cold_start(cold)
        self._report(self.on_load, name, seconds, True)
        self._changed()
        return engine

    def _evict_beyond(self, keep: int) -> list[str]:
        """Drop the least recently used until at most `keep` are held (under `_lock`)."""
        dropped = []
        while len(self._engines) > max(keep, 0):
            name, _ = self._engines.popitem(last=False)
            self.evictions[name] += 1
            dropped.append(name)
        return dropped

    def _released(self, dropped: list[str]) -> None:
        """After engines were dropped: their memory back (requests still running on one keep it
        until they finish), and the router told."""
        if not dropped:
            return
        logger.info("unloaded model(s) %s", ", ".join(dropped))
        gc.collect()
        _trim_heap()
        _empty_device_cache()
        for name in dropped:
            self._report(self.on_evict, name)
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            names = list(self._engines) + ([self._loading] if self._loading else [])
        self._report(self.on_change, names)

    @staticmethod
    def _report(callback: Callable[..., object] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception as exc:  # a report must never cost a request
            logger.warning("could not report a model change: %s", exc)

    def _settings(self) -> SynthesizerSettings:
        if self.settings is None:
            raise ModelUnavailable("The Synthesizer has no user_config yet.")
        return self.settings

    def stats(self) -> dict[str, Any]:
        """For operators: per model, whether it is held, its loads, evictions, requests, last load time."""
        with self._lock:
            return {name: {"loaded": name in self._engines, "loads": self.loads[name],
                           "evictions": self.evictions[name], "requests": self.requests[name],
                           "load_s": self.load_s.get(name), "load_error": self._failed.get(name, (0, None))[1]}
                    for name in self.registry.specs}


def _advice(name: str, exc: Exception) -> str:
    return (f"Model '{name}' could not be loaded ({exc}). Provide its weights: set `checkpoint` (and `vocab`, "
            "`vocoder`) of its entry in the application's `models` (config/serve.yaml) to a local path or an "
            "s3:// URI holding the files, or make the model hub reachable; `make demo` serves the offline profile.")


def _trim_heap() -> None:
    """The freed weights back to the OS: glibc keeps freed heap for reuse, most of a base model's
    CPU copy (about 800 MB) until told otherwise."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _empty_device_cache() -> None:
    import torch  # already imported with the engines

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

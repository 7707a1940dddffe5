"""A model replica's model, as both replica classes hold it (`SynthesisReplica`,
`TranscriptionReplica`): loaded from its settings, the first load timed as the replica's cold start,
and a failed load kept as the reason every request is refused with a 503 (the replica stays up)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import BaseModel

from speech_service.errors import ModelUnavailable

if TYPE_CHECKING:
    from speech_service.coldstart import ColdStartClock

logger = logging.getLogger("ray.serve")

Settings = TypeVar("Settings", bound=BaseModel)
Model = TypeVar("Model")


class LoadedModel(Generic[Settings, Model]):
    """`loader(settings, clock)` builds the model; `threads(cpu_threads)` resolves the setting (the
    deployment: the CPUs Ray gave it); `on_cold_start(clock)` is told when the first load worked;
    `advice(settings, exc)` says how to fix a failed load."""

    def __init__(self, deployment: str, loader: Callable[[Settings, ColdStartClock | None], Model], *,
                 advice: Callable[[Settings, Exception], str], clock: ColdStartClock | None = None,
                 threads: Callable[[int | None], int] = lambda n: n or 1,
                 on_cold_start: Callable[[ColdStartClock], None] | None = None):
        self.loader, self.advice, self.threads, self.on_cold_start = loader, advice, threads, on_cold_start
        self._clock = clock  # the cold start, until the first load
        self.model: Model | None = None
        self.error = f"the {deployment} has no user_config yet"

    def load(self, settings: Settings) -> Model | None:
        """Load for `settings` (its `cpu_threads` resolved); None, with `error` set, when it failed."""
        cold, self._clock = self._clock, None  # only the first load is a cold start
        try:
            resolved = settings.model_copy(update={"cpu_threads": self.threads(settings.cpu_threads)})
            self.model = self.loader(resolved, cold)
            if cold and self.on_cold_start:
                self.on_cold_start(cold)
        except Exception as exc:  # stay up: /healthz works and requests are told what is missing
            logger.error("could not load %s: %s", type(settings).__name__, exc)
            self.model = None
            self.error = self.advice(settings, exc)
        return self.model

    def ready(self) -> Model:
        model = self.model
        if model is None:
            raise ModelUnavailable(self.error)
        return model

"""Transcriber deployment: a thin shell around a transcription backend (Whisper)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
from ray import serve

from deployments.replica import cold_start_clock, report_cold_start, threads
from speech_service import metrics
from speech_service.config import TranscriberSettings
from speech_service.errors import ModelUnavailable, ServiceError, refusal
from speech_service.logs import route_to_serve_logs
from speech_service.transcription import WhisperBackend

logger = logging.getLogger("ray.serve")


@serve.deployment(
    # The same as config/serve.yaml (which overrides these); no `initial_replicas`: see its comment.
    autoscaling_config={"min_replicas": 0, "max_replicas": 2, "target_ongoing_requests": 2,
                        "metrics_interval_s": 0.25},
    max_ongoing_requests=4,
)
class Transcriber:
    def __init__(self, store: dict[str, Any] | None = None) -> None:
        self._clock = cold_start_clock("Transcriber")  # first: the worker's start ends here
        self._store = store  # the app's StoreSettings, where the cold-start record goes
        route_to_serve_logs()
        self._lock = threading.Lock()
        self._settings: TranscriberSettings | None = None
        self._backend: WhisperBackend | None = None
        self._load_error = "the Transcriber has no user_config yet"
        self._calls = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        settings = TranscriberSettings.model_validate(config or {})
        with self._lock:
            if settings == self._settings:
                return
            cold, self._clock = self._clock, None  # only the first load is a cold start
            try:
                resolved = settings.model_copy(update={"cpu_threads": threads(settings.cpu_threads)})
                self._backend = WhisperBackend(resolved, cold)
                if cold:
                    report_cold_start(cold, self._store)
            except Exception as exc:  # stay up; uploads that need a transcript get a 503 saying why
                logger.error("could not load Whisper %s: %s", settings.model, exc)
                self._backend = None
                self._load_error = (
                    f"Whisper model {settings.model!r} could not be loaded ({exc}). Set the Transcriber's "
                    "user_config `model` in config/serve.yaml to a local faster-whisper directory, or send "
                    "ref_text with uploads that are not clipped."
                )
            self._settings = settings

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str | ServiceError:
        """The text, or the refusal to answer the caller with (`refusal`)."""
        with self._lock:
            self._calls += 1
        if self._backend is None:
            metrics.transcriptions().inc(1, tags={"outcome": "model_unavailable"})
            raise ModelUnavailable(self._load_error)
        try:
            text = self._backend.transcribe(audio, language)
        except ServiceError as exc:
            metrics.transcriptions().inc(1, tags={"outcome": "refused"})
            return refusal(exc)
        except Exception:
            metrics.transcriptions().inc(1, tags={"outcome": "error"})
            raise
        metrics.transcriptions().inc(1, tags={"outcome": "ok"})
        return text

    def stats(self) -> dict[str, Any]:
        """How many transcriptions this replica has served (the tests count them), in which process."""
        return {"calls": self._calls, "model": self._settings.model if self._settings else None,
                "pid": os.getpid()}

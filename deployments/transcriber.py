"""Transcriber deployment: a thin Ray Serve shell around `TranscriptionReplica`
(`speech_service/transcription/replica.py`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ray import serve

from deployments.profiles import deployment_options
from deployments.replica import replica_hooks
from speech_service.errors import ServiceError
from speech_service.logs import route_to_serve_logs
from speech_service.transcription.heard import HeardWord
from speech_service.transcription.replica import TranscriptionReplica


@serve.deployment(**deployment_options("Transcriber"))  # config/serve.yaml's, the one source
class Transcriber:
    def __init__(self, store: dict[str, Any] | None = None) -> None:
        hooks = replica_hooks("Transcriber", store)  # first: the worker's start ends here
        route_to_serve_logs()
        self.replica = TranscriptionReplica(**hooks)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.replica.reconfigure(config)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str | ServiceError:
        return self.replica.transcribe(audio, language)

    def listen(self, clips: list[np.ndarray], language: str | None = None) -> list[list[HeardWord]] | ServiceError:
        return self.replica.listen(clips, language)

    def stats(self) -> dict[str, Any]:
        """Operator info: how many transcriptions this replica has served, with which model, where."""
        settings = self.replica.settings
        return {"calls": self.replica.calls, "model": settings.model if settings else None, "pid": os.getpid()}

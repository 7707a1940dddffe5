"""What one Transcriber replica does, without Ray: `deployments/transcriber.py` only wraps it.

A replica that cannot load Whisper stays up and answers each transcription with a 503 saying why;
a request's own fault (an unknown language) is answered, not raised (`errors.refusal`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from speech_service import metrics
from speech_service.config import TranscriberSettings
from speech_service.errors import ServiceError, refusal
from speech_service.loaded_model import LoadedModel
from speech_service.transcription.heard import HeardWord
from speech_service.transcription.whisper import WhisperBackend

if TYPE_CHECKING:
    from speech_service.coldstart import ColdStartClock

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


class TranscriptionReplica:
    """One replica's Whisper and its settings; see `SynthesisReplica` for the callbacks."""

    def __init__(self, *, clock: ColdStartClock | None = None, threads: Callable[[int | None], int] = lambda n: n or 1,
                 on_cold_start: Callable[[ColdStartClock], None] | None = None,
                 loader: Callable[[TranscriberSettings, ColdStartClock | None], WhisperBackend] = WhisperBackend):
        self.loaded: LoadedModel[TranscriberSettings, WhisperBackend] = LoadedModel(
            "Transcriber", loader, advice=_advice, clock=clock, threads=threads, on_cold_start=on_cold_start)
        self._lock = threading.Lock()
        self.settings: TranscriberSettings | None = None
        self.calls = 0

    def reconfigure(self, config: dict[str, Any] | TranscriberSettings) -> None:
        settings = TranscriberSettings.model_validate(config or {})
        with self._lock:
            if settings != self.settings:
                self.loaded.load(settings)
                self.settings = settings

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str | ServiceError:
        """The text, or the refusal to answer the caller with (`refusal`)."""
        return self._run(lambda whisper: whisper.transcribe(audio, language))

    def listen(self, clips: list[np.ndarray], language: str | None = None) -> list[list[HeardWord]] | ServiceError:
        """The words heard in each clip (speech the service made), timed; or the refusal."""
        return self._run(lambda whisper: whisper.listen_all(clips, language))

    def _run(self, work: Callable[[WhisperBackend], T]) -> T | ServiceError:
        with self._lock:
            self.calls += 1
        if self.loaded.model is None:
            metrics.record_transcription("model_unavailable")
        whisper = self.loaded.ready()  # a replica without its model has failed: raised
        try:
            result = work(whisper)
        except ServiceError as exc:
            metrics.record_transcription("refused")
            return refusal(exc)
        except Exception:
            metrics.record_transcription("error")
            raise
        metrics.record_transcription("ok")
        return result


def _advice(settings: TranscriberSettings, exc: Exception) -> str:
    return (f"Whisper model {settings.model!r} could not be loaded ({exc}). Set the Transcriber's user_config "
            "`model` in config/serve.yaml to a local faster-whisper directory, or send ref_text with uploads "
            "that are not clipped.")

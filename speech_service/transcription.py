"""Transcription backends. The default is faster-whisper (CTranslate2)."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
from scipy.signal import resample_poly

from .audio import SAMPLE_RATE
from .config import TranscriberSettings
from .engine import pick_device
from .errors import BadRequest

logger = logging.getLogger(__name__)
WHISPER_RATE = 16_000  # Whisper listens at 16 kHz; references are stored at SAMPLE_RATE


class TranscriptionBackend(Protocol):
    model_name: str

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Text spoken in mono float32 24 kHz `audio`."""


class WhisperBackend:
    def __init__(self, settings: TranscriberSettings):
        from faster_whisper import WhisperModel

        device = pick_device(settings.device)
        self.model_name = settings.model
        self.beam_size = settings.beam_size
        logger.info("loading Whisper %s on %s", settings.model, device)
        self.model = WhisperModel(settings.model, device=device, compute_type=settings.compute_type,
                                  download_root=settings.cache_dir)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        if language is not None and language not in self.model.supported_languages:
            raise BadRequest(f"Whisper does not know the language code '{language}'.", code="unsupported_language")
        audio16k = resample_poly(audio, WHISPER_RATE, SAMPLE_RATE).astype(np.float32)
        segments, _ = self.model.transcribe(audio16k, language=language, beam_size=self.beam_size,
                                            condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()

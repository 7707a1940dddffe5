"""Transcription backends. The default is faster-whisper (CTranslate2)."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Protocol

import numpy as np

from .audio import SAMPLE_RATE
from .config import TranscriberSettings
from .devices import whisper_device
from .errors import BadRequest

logger = logging.getLogger(__name__)


class _NoClock:
    def phase(self, name: str):
        return nullcontext()

WHISPER_RATE = 16_000  # Whisper listens at 16 kHz; references are stored at SAMPLE_RATE


class TranscriptionBackend(Protocol):
    model_name: str

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Text spoken in mono float32 24 kHz `audio`."""


class WhisperBackend:
    def __init__(self, settings: TranscriberSettings, clock=None):
        """`clock` (a `coldstart.ColdStartClock`) times the phases of the start."""
        clock = clock or _NoClock()
        with clock.phase("imports"):
            from faster_whisper import WhisperModel
        device = whisper_device(settings.device)
        self.model_name = settings.model
        self.beam_size = settings.beam_size
        logger.info("loading Whisper %s on %s with %s CPU threads", settings.model, device, settings.cpu_threads)
        with clock.phase("weights"):  # a model name is fetched from the hub here, once
            self.model = WhisperModel(settings.model, device=device, compute_type=settings.compute_type,
                                      cpu_threads=settings.cpu_threads or 0, download_root=settings.cache_dir)
        with clock.phase("warm_up"):
            self.warm_up()

    def warm_up(self) -> None:
        """One encoder pass and one decoder step, so the first upload does not pay for lazy
        initialisation. Bounded on purpose: on a tone, a full beam search can hallucinate for a
        long time."""
        t = np.arange(WHISPER_RATE // 2, dtype=np.float32) / WHISPER_RATE
        segments, _ = self.model.transcribe(0.1 * np.sin(2 * np.pi * 220 * t).astype(np.float32), language="en",
                                            beam_size=1, max_new_tokens=1, without_timestamps=True,
                                            condition_on_previous_text=False)
        list(segments)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        if language is not None and language not in self.model.supported_languages:
            raise BadRequest(f"Whisper does not know the language code '{language}'.", code="unsupported_language")
        audio16k = resample_poly(audio, WHISPER_RATE, SAMPLE_RATE)
        segments, _ = self.model.transcribe(audio16k, language=language, beam_size=self.beam_size,
                                            condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()


def resample_poly(audio: np.ndarray, up: int, down: int) -> np.ndarray:
    """`scipy.signal.resample_poly(audio, up, down)` with its default filter (Kaiser-windowed sinc,
    beta 5, 10 zero crossings per side) in NumPy: importing scipy.signal costs the Transcriber
    replica ~70 MB of memory for this one call."""
    g = math.gcd(up, down)
    up, down = up // g, down // g
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(taps / max_rate) * np.kaiser(2 * half_len + 1, 5.0)
    h *= up / h.sum()
    upsampled = np.zeros(len(audio) * up, dtype=np.float64)
    upsampled[::up] = audio
    filtered = np.convolve(upsampled, h)  # full: output sample k sits at k * down + half_len
    n_out = -(-len(audio) * up // down)
    return filtered[half_len::down][:n_out].astype(np.float32)

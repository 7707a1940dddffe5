"""Audio in and out. All audio inside the service is mono float32 at 24 kHz (F5-TTS's mel rate).

`uploads` decodes what callers upload, `preparation` makes a reference clip of it, `encoding` writes
the response formats and `seams` joins segments; this module holds what they all share.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

SAMPLE_RATE = 24_000
HOP_LENGTH = 256  # samples per mel frame, F5's unit of output


@dataclass(frozen=True)
class Speech:
    """A request's whole waveform (mono float32, 24 kHz), and the wall time of the model calls that
    made it: what the service spent on the model, apart from queues, hops and encoding."""

    wave: np.ndarray
    model_s: float


def read_wav_bytes(data: bytes) -> np.ndarray:
    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"stored reference has {sr} Hz, expected {SAMPLE_RATE}")
    return audio

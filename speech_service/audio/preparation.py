"""A reference clip made of decoded audio: silent edges trimmed, clipped at a pause to the
length F5 conditions on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech_service.audio import SAMPLE_RATE
from speech_service.errors import BadRequest

FRAME_S = 0.01  # analysis frame for silence detection


def _frame_db(audio: np.ndarray) -> np.ndarray:
    """Level of each 10 ms frame in dBFS."""
    hop = int(FRAME_S * SAMPLE_RATE)
    n = max(1, len(audio) // hop)
    frames = audio[: n * hop].reshape(n, hop) if len(audio) >= hop else audio.reshape(1, -1)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def _silent_runs(db: np.ndarray, threshold_db: float, min_frames: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges of silence at least `min_frames` long."""
    quiet = np.concatenate([[False], db < threshold_db, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = zip(edges[::2], edges[1::2])
    return [(int(s), int(e)) for s, e in runs if e - s >= min_frames]


def _cut_at_silence(db: np.ndarray, max_frames: int, threshold_db: float, min_silence_s: float) -> int | None:
    """Latest cut point (frame) inside a silence that keeps the clip within max_frames and over half of it."""
    best = None
    for start, end in _silent_runs(db, threshold_db, int(min_silence_s / FRAME_S)):
        cut = min((start + end) // 2, start + int(0.5 / FRAME_S))  # keep at most 0.5 s of the pause
        if max_frames // 2 <= cut <= max_frames:
            best = cut
    return best


def _trim_edges(audio: np.ndarray, threshold_db: float = -42.0) -> np.ndarray:
    db = _frame_db(audio)
    loud = np.flatnonzero(db >= threshold_db)
    if loud.size == 0:
        return audio[:0]
    hop = int(FRAME_S * SAMPLE_RATE)
    return audio[loud[0] * hop : (loud[-1] + 1) * hop]


@dataclass(frozen=True)
class PreparedReference:
    audio: np.ndarray  # mono float32, 24 kHz
    original_duration_s: float
    clipped: bool

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def prepare_reference(audio: np.ndarray, *, max_clip_s: float = 12.0, min_s: float = 0.3) -> PreparedReference:
    """Trim silent edges and clip to at most `max_clip_s`, cutting at a pause where there is one.

    Follows the rules of f5-tts's own preprocessing: prefer a long pause (1 s at -50 dBFS), then a
    short one (0.1 s at -40 dBFS), else cut hard; finish with 50 ms of silence.
    """
    original_s = len(audio) / SAMPLE_RATE
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-3 or float(np.max(_frame_db(audio))) < -50:
        raise BadRequest("The reference audio is silent.", code="silent_audio", param="file")

    trimmed = _trim_edges(audio)
    clipped = False
    max_samples = int(max_clip_s * SAMPLE_RATE)
    if len(trimmed) > max_samples:
        clipped = True
        db = _frame_db(trimmed)
        max_frames = int(max_clip_s / FRAME_S)
        cut = _cut_at_silence(db, max_frames, -50, 1.0) or _cut_at_silence(db, max_frames, -40, 0.1)
        end = cut * int(FRAME_S * SAMPLE_RATE) if cut else max_samples
        trimmed = _trim_edges(trimmed[:end])
    if len(trimmed) < min_s * SAMPLE_RATE:
        raise BadRequest(
            f"The reference audio holds less than {min_s:g} s of sound.", code="audio_too_short", param="file"
        )
    tail = np.zeros(int(0.05 * SAMPLE_RATE), dtype=np.float32)
    return PreparedReference(np.concatenate([trimmed, tail]).astype(np.float32), original_s, clipped)

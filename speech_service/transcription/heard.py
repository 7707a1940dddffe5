"""What Whisper heard in a clip, word by word, with times that the clip's own silences correct.

Whisper's word times come from its cross-attention: each word starts where the one before ended,
so a pause is counted in the word after it, and words end a little early. Where the clip is silent
between two words, the boundary is moved to that silence: the word before ends where the silence
starts and the word after starts where it ends. Plain NumPy: it runs in the Transcriber and its
type travels to the Ingress.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_S = 0.01
# A silence is a run of frames this far below the clip's loud frames, at least this long.
SILENCE_DB = 35.0
MIN_SILENCE_S = 0.05
# A boundary moves to a silence at most this far from where Whisper put it.
MAX_SHIFT_S = 0.35


@dataclass(frozen=True)
class HeardWord:
    word: str  # as Whisper wrote it, e.g. " $5.20,"
    start: float  # seconds from the clip's start
    end: float


def silences(audio: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """The clip's silent runs, as (start, end) seconds."""
    hop = max(1, int(FRAME_S * rate))
    n = len(audio) // hop
    if n == 0:
        return []
    rms = np.sqrt(np.mean(np.square(audio[: n * hop].astype(np.float64)).reshape(n, hop), axis=1))
    loud = float(np.percentile(rms, 95))
    quiet = rms <= max(loud * 10 ** (-SILENCE_DB / 20), 1e-5)
    runs, start = [], None
    for i, q in enumerate([*quiet, False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * FRAME_S >= MIN_SILENCE_S:
                runs.append((start * hop / rate, i * hop / rate))
            start = None
    return runs


def snap_to_silences(words: list[HeardWord], audio: np.ndarray, rate: int) -> list[HeardWord]:
    """`words` with each boundary (the first start and the last end too) moved into the nearest
    silence within `MAX_SHIFT_S`, never past the neighbouring words' other ends."""
    quiet = silences(audio, rate)
    starts, ends = [w.start for w in words], [w.end for w in words]
    for i in range(len(words) + 1) if quiet and words else ():
        run = _nearest(quiet, ends[i - 1] if i else starts[0])
        if run is None or (i and run[1] <= starts[i - 1]):  # none, or one before the word before
            continue
        if i and starts[i - 1] < run[0]:  # the word before ends where the silence starts
            ends[i - 1] = run[0]
        if i < len(words) and run[1] < ends[i]:  # the word after starts where it ends
            starts[i] = run[1]
    return [HeardWord(w.word, round(s, 3), round(e, 3)) for w, s, e in zip(words, starts, ends)]


def _nearest(runs: list[tuple[float, float]], at: float) -> tuple[float, float] | None:
    def distance(run: tuple[float, float]) -> float:
        return 0.0 if run[0] <= at <= run[1] else min(abs(run[0] - at), abs(run[1] - at))

    run = min(runs, key=distance)
    return run if distance(run) <= MAX_SHIFT_S else None


def packed(lengths: list[int], rate: int, window_s: float, gap_s: float) -> list[list[int]]:
    """Clips (by their lengths in samples) in runs that fit one window with `gap_s` of silence
    between clips; a clip longer than the window is a run of its own."""
    runs: list[list[int]] = []
    used = 0.0
    for i, n in enumerate(lengths):
        seconds = n / rate
        if runs and used + gap_s + seconds <= window_s:
            runs[-1].append(i)
            used += gap_s + seconds
        else:
            runs.append([i])
            used = seconds
    return runs


def split_heard(words: list[HeardWord], starts: list[float], durations: list[float]) -> list[list[HeardWord]]:
    """Words heard in clips joined end to end (clip k from `starts[k]`), back on each clip's clock:
    a word belongs to the clip its middle falls in (or the nearest before it)."""
    per_clip: list[list[HeardWord]] = [[] for _ in starts]
    for word in words:
        middle = (word.start + word.end) / 2
        k = max([i for i, at in enumerate(starts) if at <= middle] or [0])
        at, length = starts[k], durations[k]
        per_clip[k].append(HeardWord(word.word, round(min(max(word.start - at, 0.0), length), 3),
                                     round(min(max(word.end - at, 0.0), length), 3)))
    return per_clip

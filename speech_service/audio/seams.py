"""Segments joined into one speech: a linear cross-fade at each seam, as pieces arrive; where the
text asks for a pause (an SSML <break>, a change of speaker), silence instead of the cross-fade."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np


def cross_fade(waves: Iterable[np.ndarray], overlap: int, pauses: Sequence[int] = ()) -> Iterator[np.ndarray]:
    """Join waveforms, blending up to `overlap` samples linearly at each seam; after a wave with a
    pause (`pauses[i]` samples, 0 or absent: none), that much silence and no blend.

    Yields as soon as a piece is final: each wave's last `overlap` samples are held back until the
    next wave arrives to blend with.
    """
    seams = CrossFade(overlap)
    for i, wave in enumerate(waves):
        if (piece := seams.push(wave, pauses[i] if i < len(pauses) else 0)) is not None:
            yield piece
    if (piece := seams.finish()) is not None:
        yield piece


class CrossFade:
    """`cross_fade` one wave at a time, for callers that get their waves asynchronously."""

    def __init__(self, overlap: int):
        self.overlap = overlap
        self.held = np.zeros(0, dtype=np.float32)

    def push(self, wave: np.ndarray, pause: int = 0) -> np.ndarray | None:
        """The part of the speech so far that is final, or None if all of it waits for the seam;
        with a `pause`, all of it and that many samples of silence (the next wave starts afresh)."""
        held = self.held
        n = min(len(held), len(wave))
        if n:
            fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
            seam = held[len(held) - n :] * (1 - fade) + wave[:n] * fade
            wave = np.concatenate([held[: len(held) - n], seam, wave[n:]])
        elif len(held):
            wave = np.concatenate([held, wave])
        if pause > 0:
            self.held = np.zeros(0, dtype=np.float32)
            return np.concatenate([wave, np.zeros(pause, dtype=np.float32)]).astype(np.float32)
        keep = min(self.overlap, len(wave))
        self.held = wave[len(wave) - keep :]
        return wave[: len(wave) - keep].astype(np.float32) if len(wave) > keep else None

    def finish(self) -> np.ndarray | None:
        held, self.held = self.held, np.zeros(0, dtype=np.float32)
        return held.astype(np.float32) if len(held) else None


def join(waves: Iterable[np.ndarray], overlap: int, pauses: Sequence[int] = ()) -> np.ndarray:
    """The whole of `cross_fade`."""
    return np.concatenate(list(cross_fade(waves, overlap, pauses)))

"""Where each of the caller's characters falls in the audio made for them: ElevenLabs' `alignment`
(`chars`, start and duration of each), on exactly the characters the caller sent.

By default from the plan (`planned_alignment`): each segment's words share its audio by their length,
and each word's time is shared by the caller's characters it stands for ("$5.20" by its five
characters); what stands for no word (spaces, punctuation between words) takes no time. Cheap and
known as soon as the audio is. Heard (`heard_alignment`): the same, from the captions the Transcriber
heard (a Whisper pass per piece: docs/ARCHITECTURE.md, "Live text in").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speech_service.audio import SAMPLE_RATE
from speech_service.plans import SpeechPlan
from speech_service.schemas import Caption
from speech_service.service.listening import offsets

# A word's caller characters and its time: ((start, end) in the caller's text, start_s, end_s).
TimedSpan = tuple[tuple[int, int], float, float]


@dataclass(frozen=True)
class Alignment:
    chars: list[str]
    starts_s: list[float]
    durations_s: list[float]

    def shifted(self, by_s: float) -> Alignment:
        return Alignment(self.chars, [s + by_s for s in self.starts_s], self.durations_s)

    def milliseconds(self) -> dict[str, list]:
        """As ElevenLabs' socket sends it."""
        return {"chars": self.chars, "charStartTimesMs": [round(1000 * s) for s in self.starts_s],
                "charDurationsMs": [round(1000 * d) for d in self.durations_s]}


def planned_alignment(text: str, plan: SpeechPlan, waves: Sequence[np.ndarray]) -> Alignment:
    starts = offsets(list(waves), plan.cross_fade_samples, plan.pause_samples)
    timed: list[TimedSpan] = []
    for segment, wave, at in zip(plan.segments, waves, starts):
        words = segment.text.split()
        weights = [len(word) + 1 for word in words]
        step = len(wave) / SAMPLE_RATE / max(sum(weights), 1)
        done = 0
        for span, weight in zip(segment.spans, weights):
            timed.append((span, at + done * step, at + (done + weight - 1) * step))
            done += weight
    return _on_characters(text, timed, sum(len(w) for w in waves) / SAMPLE_RATE)


def heard_alignment(text: str, words: Sequence[Caption], samples: int) -> Alignment:
    timed = [((w.text_start, w.text_end), w.start, w.end) for w in words]
    return _on_characters(text, timed, samples / SAMPLE_RATE)


def _on_characters(text: str, timed: list[TimedSpan], total_s: float) -> Alignment:
    """Each character of `text` a start and a duration: a word's time shared by its characters."""
    starts, durations = [0.0] * len(text), [0.0] * len(text)
    covered = [False] * len(text)
    spoken: dict[tuple[int, int], tuple[float, float]] = {}
    for span, start, end in timed:  # the words read for one ("$5.20": five dollars twenty) take all their time
        first = spoken.get(span, (start, end))
        spoken[span] = (min(first[0], start), max(first[1], end))
    for (lo, hi), (start, end) in spoken.items():
        lo, hi = max(lo, 0), min(hi, len(text))
        if hi <= lo:
            continue
        step = max(end - start, 0.0) / (hi - lo)
        for k, i in enumerate(range(lo, hi)):
            if not covered[i]:
                starts[i], durations[i], covered[i] = start + k * step, step, True
    at = 0.0
    for i in range(len(text)):  # the rest sits where the one before ended; times never go back
        if not covered[i]:
            starts[i], durations[i] = at, 0.0
        starts[i] = min(max(starts[i], at), total_s)
        durations[i] = min(durations[i], max(total_s - starts[i], 0.0))
        at = starts[i] + durations[i]
    return Alignment(list(text), starts, durations)

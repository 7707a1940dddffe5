"""A whole response's plan, as it travels between the Ingress and the Synthesizer (plain data).

The Synthesizer plans every request the same way (`SynthesisEngine.plan_speech`: layout, numbers as
words, segments that fit beside the reference). A job asks for the plan of its whole text and then
has each segment made on its own, so its audio is the whole response's, made durable.
"""

from __future__ import annotations

from dataclasses import dataclass

from speech_service.config import SynthesisOptions


@dataclass(frozen=True)
class Segment:
    text: str  # what the model reads (after layout and normalisation)
    duration_frames: int  # reference + generated frames the model fills
    # The caller's span `[start, end)` of `input` that each whitespace-separated word of `text`
    # stands for ("five dollars" both stand for "$5"): captions name the caller's words.
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class SpeechPlan:
    segments: list[Segment]
    options: SynthesisOptions  # every knob set
    seed: int  # shared by every segment

    @property
    def cross_fade_samples(self) -> int:
        from speech_service.audio import SAMPLE_RATE

        return int(self.options.cross_fade_duration * SAMPLE_RATE)

"""A whole response's plan, as it travels between the Ingress and the Synthesizer (plain data).

The Synthesizer plans every request the same way (`SynthesisEngine.plan_script`: each line of the
request's script with its numbers as words, cut into segments that fit beside its voice's reference).
A job asks for the plan of its whole text and then has each segment made on its own, so its audio is
the whole response's, made durable.
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
    reference: int = 0  # which of the script's references speaks it (`text.script.Script.references`)
    pause_s: float = 0.0  # silence after it; 0: the next segment is joined by a cross-fade
    speed: float = 1.0  # the request's speed times its line's rate


@dataclass(frozen=True)
class SpeechPlan:
    segments: list[Segment]
    options: SynthesisOptions  # every knob set
    seed: int  # shared by every segment

    @property
    def cross_fade_samples(self) -> int:
        from speech_service.audio import SAMPLE_RATE

        return int(self.options.cross_fade_duration * SAMPLE_RATE)

    @property
    def pause_samples(self) -> list[int]:
        """The silence after each segment (`audio.seams.join`)."""
        from speech_service.audio import SAMPLE_RATE

        return [round(segment.pause_s * SAMPLE_RATE) for segment in self.segments]

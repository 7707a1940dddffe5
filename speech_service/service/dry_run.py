"""A dry run: what the model would be asked to read, segment by segment, and nothing synthesized.

The way to debug a pronunciation: each segment shows its speaker, style, speed and the pause after
it, the text after markup, lexicons and numbers (a pinyin reading as {hang2}), and which of the
caller's characters each of its words stands for.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from speech_service.plans import SpeechPlan
from speech_service.text.chinese import shown_readings
from speech_service.text.script import Script


class DryRunWord(BaseModel):
    read: str = Field(..., description="the word as the model reads it")
    text: str = Field(..., description="input[text_start:text_end]: what the caller wrote for it")
    text_start: int
    text_end: int


class DryRunSegment(BaseModel):
    index: int
    voice: str
    style: str | None = Field(..., description="the voice's take (null: its own clip)")
    speed: float = Field(..., description="the request's speed times the line's rate")
    text: str = Field(..., description="what the model reads, after markup, lexicons and numbers")
    pause_after_s: float = Field(..., description="silence after it (0: joined to the next by a cross-fade)")
    words: list[DryRunWord]


class DryRun(BaseModel):
    object: str = "speech.dry_run"
    model: str
    seed: int
    segments: list[DryRunSegment]


def dry_run(text: str, script: Script, plan: SpeechPlan) -> DryRun:
    segments = []
    for index, segment in enumerate(plan.segments):
        reference = script.references[segment.reference]
        words = [DryRunWord(read=shown_readings(word), text=text[start:end], text_start=start, text_end=end)
                 for word, (start, end) in zip(segment.text.split(), segment.spans)]
        segments.append(DryRunSegment(
            index=index, voice=reference.voice, style=reference.style, speed=round(segment.speed, 4),
            text=shown_readings(segment.text), pause_after_s=segment.pause_s, words=words))
    return DryRun(model=script.references[0].model, seed=plan.seed, segments=segments)

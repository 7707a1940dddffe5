"""Speech the service listens to as it makes it: asked for with `timestamps` or the quality check.

The request is planned as a whole response or a stream would be (the Synthesizer's plan), and each
segment is made and heard on its own (`listening.SegmentListener`): a whole response makes all its
segments at once (they share model calls) and joins them as `/v1/audio/speech` does; a stream
makes the next segment while the one before is heard, and sends each segment's audio followed by
its words and its check. Without a retry the audio is the same as without listening.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from speech_service import metrics
from speech_service.audio import Speech, seams
from speech_service.batching import ContinuousBatcher
from speech_service.config import QualityCheck
from speech_service.errors import QualityCheckFailed
from speech_service.plans import SpeechPlan
from speech_service.schemas import (
    Caption,
    QualityReport,
    SegmentQuality,
    SpeechQualityEvent,
    SpeechRequest,
    SpeechTimestamps,
)
from speech_service.service.listening import HeardSegment, SegmentListener, captions, offsets, placed, report, warning
from speech_service.text.script import Script
from speech_service.transcription.heard import HeardWord

if TYPE_CHECKING:
    from speech_service.service.speech import SpeechService


@dataclass
class Listened:
    """What listening found: the captions (when asked for), the check's report and its warnings."""

    words: list[Caption] | None = None
    quality: QualityReport | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListenedPiece:
    """A stream's next audio (None when a seam holds all of it back) and the events that follow it."""

    wave: np.ndarray | None
    events: list[BaseModel]


# Clips one Transcriber call hears at most (it packs them into Whisper's 30 s windows).
LISTEN_BATCH = 16


class ListenedSpeech:
    def __init__(self, speech: SpeechService):
        self.speech = speech
        # Segments of concurrent requests (and of one whole response) go to the Transcriber together:
        # while a call runs, the next queues, and Whisper hears several in one window's pass.
        self._listening: ContinuousBatcher[tuple[np.ndarray, str | None], list[HeardWord]] = ContinuousBatcher(
            self._listen_batch, max_batch_size=LISTEN_BATCH)

    async def _listen_batch(self, items: list[tuple[np.ndarray, str | None]]) -> list[list[HeardWord]]:
        languages = list(dict.fromkeys(language for _, language in items))
        heard = await asyncio.gather(*(self.speech.backends.listen([w for w, lang in items if lang == language],
                                                                   language) for language in languages))
        per_language = {language: iter(words) for language, words in zip(languages, heard)}
        return [next(per_language[language]) for _, language in items]

    def check_for(self, body: SpeechRequest) -> QualityCheck | None:
        return self.speech.settings.quality.resolve(body.quality)

    def wanted(self, body: SpeechRequest) -> bool:
        return body.timestamps is not None or self.check_for(body) is not None

    def listener(self, body: SpeechRequest, script: Script) -> SegmentListener:
        """Makes and hears the segments of `body`'s plans, each in the voice its segment names."""
        backends, send = self.speech.backends, self.speech.send

        async def synthesize(plan: SpeechPlan, index: int) -> Speech:
            voice = plan.segments[index].reference
            return await send(script, lambda s: backends.synthesize_segment(s.references[voice], plan, index))

        async def listen(wave: np.ndarray, language: str | None) -> list[HeardWord]:
            started = time.monotonic()
            heard = await self._listening.submit((wave, language))
            metrics.record_listen(time.monotonic() - started)
            return heard

        return SegmentListener(synthesize, listen, self.check_for(body), body.timestamps is not None,
                               [reference.language for reference in script.references])

    async def _open(self, body: SpeechRequest, script: Script,
                    streaming: bool) -> tuple[SegmentListener, SpeechPlan]:
        plan = await self.speech.send(
            script, lambda s: self.speech.backends.plan(s.references[0], s.sent(), body.options(), streaming))
        return self.listener(body, script), plan

    async def whole(self, body: SpeechRequest, script: Script) -> tuple[Speech, Listened]:
        """The whole speech and what listening found; raises `QualityCheckFailed` under `require`."""
        listener, plan = await self._open(body, script, streaming=False)
        made = await asyncio.gather(*(listener.make(plan, i) for i in range(len(plan.segments))))
        wave = seams.join([s.wave for s in made], plan.cross_fade_samples, plan.pause_samples)
        return Speech(wave, sum(s.model_s for s in made)), self.found(body, made, plan, listener.check, script)

    def found(self, body: SpeechRequest, made: list[HeardSegment], plan: SpeechPlan,
              check: QualityCheck | None, script: Script) -> Listened:
        listened = Listened()
        if body.timestamps is not None:
            starts = offsets([s.wave for s in made], plan.cross_fade_samples, plan.pause_samples)
            listened.words = captions(body.input, [w for s, at in zip(made, starts)
                                                   for w in placed(s, at, _speaker(script, plan, s.index))])
        if check is not None:
            listened.quality = report(made, check)
            failed = [q for q in listened.quality.segments if not q.passed]
            if failed and check.require:
                raise _failed(failed[0], check)
            listened.warnings = [warning(q, check) for q in failed]
        return listened

    async def stream(self, body: SpeechRequest, script: Script) -> AsyncIterator[ListenedPiece]:
        """The speech in pieces, each segment's events after its audio; the next segment is made
        while the one before is heard. Under `require`, a failed segment ends the stream with
        `QualityCheckFailed` before its audio."""
        listener, plan = await self._open(body, script, streaming=True)
        tasks: list[asyncio.Task[HeardSegment]] = []
        done: list[HeardSegment] = []
        fade = seams.CrossFade(plan.cross_fade_samples)
        try:
            for index in range(len(plan.segments)):
                while len(tasks) < min(index + 2, len(plan.segments)):
                    tasks.append(asyncio.ensure_future(listener.make(plan, len(tasks))))
                segment = await tasks[index]
                done.append(segment)
                yield ListenedPiece(fade.push(segment.wave, plan.pause_samples[index]),
                                    self._events(body, segment, done, plan, listener.check, script))
            if (tail := fade.finish()) is not None:
                yield ListenedPiece(tail, [])
        finally:
            for task in tasks:
                task.cancel()

    def _events(self, body: SpeechRequest, segment: HeardSegment, done: list[HeardSegment], plan: SpeechPlan,
                check: QualityCheck | None, script: Script) -> list[BaseModel]:
        events: list[BaseModel] = []
        if check is not None and segment.quality is not None:
            if not segment.quality.passed and check.require:
                raise _failed(segment.quality, check)
            events.append(SpeechQualityEvent(segment=segment.quality, warning=None if segment.quality.passed
                                             else warning(segment.quality, check)))
        if body.timestamps is not None:
            at = offsets([s.wave for s in done], plan.cross_fade_samples, plan.pause_samples)[-1]
            speaker = _speaker(script, plan, segment.index)
            events.append(SpeechTimestamps(words=captions(body.input, placed(segment, at, speaker))))
        return events


def _speaker(script: Script, plan: SpeechPlan, index: int) -> str | None:
    """Who says segment `index`, when the script has more than one speaker."""
    return script.references[plan.segments[index].reference].voice if script.speakers > 1 else None


def _failed(quality: SegmentQuality, check: QualityCheck) -> QualityCheckFailed:
    return QualityCheckFailed(
        f"Segment {quality.index} ({quality.text[:60]!r}) failed the quality check on all {quality.attempts} "
        f"attempts (seeds {quality.seeds}): its best word error rate was {quality.wer:.2f}, over max_wer "
        f"{check.max_wer:g}.", param="quality")

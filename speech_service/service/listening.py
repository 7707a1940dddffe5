"""The service listening to what it said: word timings for captions, and the quality check.

Each segment the Synthesizer made is heard by the Transcriber (`listen`: Whisper's words, timed
and corrected by the clip's silences). `time_words` aligns those words with the words the segment
should say (`text.words.align`); a word heard gets the heard word's time, a word not heard a time
interpolated between its neighbours. `captions` maps the words back to the caller's text through
each segment's spans (`plans.Segment.spans`), one caption per span of the caller's text. The check
(`SegmentListener.make`) makes a segment again with the next seed while its word error rate is
over `max_wer`, and keeps the best attempt (docs/ARCHITECTURE.md, "Captions and the quality check").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from difflib import SequenceMatcher

import numpy as np

from speech_service import audio, metrics
from speech_service.audio import Speech
from speech_service.config import QualityCheck
from speech_service.plans import Segment, SpeechPlan
from speech_service.schemas import Caption, QualityReport, SegmentQuality
from speech_service.text.words import Token, align, error_rate, heard_tokens, tokens_of
from speech_service.transcription.heard import HeardWord

logger = logging.getLogger(__name__)

SEED_LIMIT = 2**31 - 1
# A token heard in place of the one asked for times it when they are this alike (difflib's ratio).
MISHEARD_RATIO = 0.6


@dataclass(frozen=True)
class TimedWord:
    start: float  # seconds from the start of its segment's wave (the whole audio's, once placed)
    end: float
    heard: bool
    span: tuple[int, int]  # the caller's characters it stands for
    speaker: str | None = None  # in a dialogue, the voice that says it


@dataclass(frozen=True)
class HeardSegment:
    """One segment as made and heard: its wave, its words' times, and how the check went."""

    index: int
    wave: np.ndarray
    words: list[TimedWord]
    quality: SegmentQuality | None  # None when no check was asked for
    model_s: float


def time_words(segment: Segment, heard: list[HeardWord], duration: float) -> tuple[list[TimedWord], float]:
    """The segment's words timed by what was heard, and the word error rate."""
    words = segment.text.split()
    expected, got = tokens_of(words), heard_tokens([h.word for h in heard])
    pairs, edits = align(expected, got)
    times: list[tuple[float, float] | None] = [None] * len(words)
    for token, j in zip(expected, pairs):
        if j is None or not _alike(token.text, got[j].text):  # a word heard in its place is no clock for it
            continue
        start, end = _token_time(got[j], heard)
        current = times[token.word]
        times[token.word] = (start, end) if current is None else (min(current[0], start), max(current[1], end))
    timed = _interpolate(words, times, duration)
    spans = segment.spans or ((0, 0),) * len(words)
    wer = error_rate(edits, len(expected))
    return [TimedWord(s, e, heard, span) for (s, e, heard), span in zip(timed, spans)], wer


def _alike(asked: str, heard: str) -> bool:
    """The same word, or one misheard ("Smyth" for "Smith"), not another word in its place."""
    return asked == heard or SequenceMatcher(None, asked, heard).ratio() >= MISHEARD_RATIO


def _token_time(token: Token, heard: list[HeardWord]) -> tuple[float, float]:
    """A heard token's share of its heard word's time ("$5.20" heard: five tokens, one fifth each)."""
    word = heard[token.word]
    k, n = token.share
    step = (word.end - word.start) / n
    return word.start + k * step, word.start + (k + 1) * step


def _interpolate(words: list[str], times: list[tuple[float, float] | None],
                 duration: float) -> list[tuple[float, float, bool]]:
    """Times for the words not heard: their run's gap between heard neighbours, shared by length."""
    result: list[tuple[float, float, bool]] = []
    i = 0
    while i < len(words):
        if times[i] is not None:
            start, end = times[i]
            result.append((start, end, True))
            i += 1
            continue
        j = i
        while j < len(words) and times[j] is None:
            j += 1
        left = result[-1][1] if result else 0.0
        right = times[j][0] if j < len(words) else duration
        right = max(right, left)
        total = sum(len(w) for w in words[i:j])
        at = left
        for w in words[i:j]:
            step = (right - left) * len(w) / total
            result.append((at, at + step, False))
            at += step
        i = j
    return result


def captions(text: str, words: list[TimedWord]) -> list[Caption]:
    """Captions on the caller's `text`: words standing for one span of it are one caption."""
    groups: list[list[TimedWord]] = []
    for word in words:
        if word.span[0] >= word.span[1]:
            continue  # stands for none of the caller's characters
        if groups and word.span[0] < groups[-1][-1].span[1]:
            groups[-1].append(word)
        else:
            groups.append([word])
    result = []
    for group in groups:
        start, end = min(w.span[0] for w in group), max(w.span[1] for w in group)
        result.append(Caption(text=text[start:end], start=round(group[0].start, 3), end=round(group[-1].end, 3),
                              text_start=start, text_end=end, speaker=group[0].speaker,
                              interpolated=not (group[0].heard and group[-1].heard)))
    return result


def offsets(waves: list[np.ndarray], overlap: int, pauses: list[int] | tuple[()] = ()) -> list[float]:
    """Where each wave starts in their join (`audio.seams.join` cross-fades `overlap` samples at
    each seam, or puts `pauses[i]` samples of silence after wave i), in seconds."""
    starts, at, previous = [], 0, 0
    for i, wave in enumerate(waves):
        at -= min(overlap, previous, len(wave))
        starts.append(at / audio.SAMPLE_RATE)
        at += len(wave)
        pause = pauses[i] if i < len(pauses) else 0
        at, previous = at + pause, (0 if pause else len(wave))
    return starts


def placed(segment: HeardSegment, offset: float, speaker: str | None = None) -> list[TimedWord]:
    """The segment's words on the joined audio's clock (said by `speaker`, in a dialogue)."""
    return [replace(w, start=w.start + offset, end=w.end + offset, speaker=speaker) for w in segment.words]


def report(segments: list[HeardSegment], check: QualityCheck) -> QualityReport:
    kept = [s.quality for s in segments if s.quality is not None]
    return QualityReport(passed=all(q.passed for q in kept), max_wer=check.max_wer, segments=kept)


def warning(quality: SegmentQuality, check: QualityCheck) -> str:
    return (f"Segment {quality.index} did not pass the quality check: word error rate {quality.wer:.2f} over "
            f"{check.max_wer:g} after {quality.attempts} attempts (seeds {quality.seeds}).")


class SegmentListener:
    """Makes segments of a plan and hears them: `make(plan, index)` calls `synthesize(plan, index)`
    and `listen(wave)` until the check passes or its retries are spent; with neither a check nor
    timestamps, it only makes the segment."""

    def __init__(self, synthesize: Callable[[SpeechPlan, int], Awaitable[Speech]],
                 listen: Callable[[np.ndarray, str | None], Awaitable[list[HeardWord]]], check: QualityCheck | None,
                 timestamps: bool, languages: list[str | None]):
        self.synthesize, self.listen, self.check, self.timestamps = synthesize, listen, check, timestamps
        self.languages = languages  # of each of the script's references: what its speech is heard as

    async def make(self, plan: SpeechPlan, index: int) -> HeardSegment:
        segment = plan.segments[index]
        tries = 1 + (self.check.retries if self.check else 0)
        seeds = [(plan.seed + k) % SEED_LIMIT for k in range(tries)]
        best: tuple[float, HeardSegment] | None = None
        model_s = 0.0
        for attempt, seed in enumerate(seeds, 1):
            speech = await self.synthesize(replace(plan, seed=seed), index)
            model_s += speech.model_s
            if self.check is None and not self.timestamps:  # nothing to hear it for
                return HeardSegment(index, speech.wave, [], None, model_s)
            heard = await self.listen(speech.wave, self.languages[segment.reference])
            words, wer = time_words(segment, heard, len(speech.wave) / audio.SAMPLE_RATE)
            if best is None or wer < best[0]:
                best = (wer, HeardSegment(index, speech.wave, words, None, 0.0))
            if self.check is None or wer <= self.check.max_wer:
                break
            if attempt < tries:
                metrics.record_quality_retry()
            logger.info("segment %d: word error rate %.2f over %g on seed %d", index, wer, self.check.max_wer, seed)
        wer, kept = best
        quality = None
        if self.check is not None:
            quality = SegmentQuality(index=index, text=segment.text, wer=round(wer, 4), attempts=attempt,
                                     seeds=seeds[:attempt], passed=wer <= self.check.max_wer)
            metrics.record_quality_check(quality.passed)
        return replace(kept, quality=quality, model_s=model_s)

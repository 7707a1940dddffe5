"""Text that remembers where each character came from in the caller's `input`.

The text pipeline (layout, normalisation, segments) rewrites what the caller sent: "$5.20" becomes
"five dollars and twenty cents". Captions must name the caller's characters, so every step keeps,
for each character it writes, the span `[start, end)` of the caller's text it stands for. A
character a step inserts (a full stop after a heading, the space between words) has an empty span
at the place it was put (docs/ARCHITECTURE.md, "Captions").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

Span = tuple[int, int]


@dataclass(frozen=True)
class MappedText:
    text: str
    spans: tuple[Span, ...]  # one per character of `text`

    @classmethod
    def of(cls, text: str) -> MappedText:
        """The caller's own text: each character stands for itself."""
        return cls(text, tuple((i, i + 1) for i in range(len(text))))

    @classmethod
    def join(cls, parts: list[MappedText], sep: str = " ") -> MappedText:
        """`parts` joined by `sep`, whose characters stand for nothing (an empty span after the part before)."""
        text, spans = [], []
        for n, part in enumerate(parts):
            if n:
                at = spans[-1][1] if spans else 0
                text.append(sep)
                spans.extend([(at, at)] * len(sep))
            text.append(part.text)
            spans.extend(part.spans)
        return cls("".join(text), tuple(spans))

    def __add__(self, other: MappedText) -> MappedText:
        return MappedText(self.text + other.text, self.spans + other.spans)

    def slice(self, start: int, end: int) -> MappedText:
        return MappedText(self.text[start:end], self.spans[start:end])

    def inserted(self, text: str, at: int) -> MappedText:
        """`text` standing for nothing, placed at position `at` of the caller's text."""
        return MappedText(text, ((at, at),) * len(text))

    def covering(self, start: int, end: int) -> Span:
        """The caller's span of characters `[start, end)` of this text."""
        real = [s for s in self.spans[start:end] if s[0] < s[1]]
        if not real:
            at = self.spans[start][0] if start < len(self.spans) else (self.spans[-1][1] if self.spans else 0)
            return at, at
        return min(s[0] for s in real), max(s[1] for s in real)

    def sub(self, pattern: re.Pattern, rule: Callable[[re.Match], str]) -> MappedText:
        """`pattern.sub(rule, text)`, each replacement standing for the whole of its match; a rule
        that repeats its match's `lead` group (the word that set a year: "in 1990") keeps that
        group's characters as they were."""
        out: list[MappedText] = []
        done = 0
        for m in pattern.finditer(self.text):
            start, end = m.span()
            written = rule(m)
            out.append(self.slice(done, start))
            lead = m.groupdict().get("lead") or ""
            if lead and m.start("lead") == start and written.startswith(lead):
                out.append(self.slice(start, start + len(lead)))
                written, start = written[len(lead):], start + len(lead)
            span = self.covering(start, end)
            out.append(MappedText(written, (span,) * len(written)))
            done = end
        if not out:
            return self
        out.append(self.slice(done, len(self.text)))
        return MappedText.join(out, sep="")


def word_spans(spoken: MappedText, segments: list[str]) -> list[tuple[Span, ...]]:
    """For each segment (a piece of `spoken.text`, as `split_text` cut it: the same characters in
    the same order, whitespace aside), the caller's span of each of its whitespace-separated words.
    A word's own punctuation at its edges ("Hello," "(see") is not part of its span."""
    chars = [i for i, c in enumerate(spoken.text) if not c.isspace()]
    at = 0
    result = []
    for segment in segments:
        spans = []
        for word in segment.split():
            positions = chars[at:at + len(word)]
            at += len(word)
            spans.append(_span_of_word(spoken, word, positions))
        result.append(tuple(spans))
    return result


def _span_of_word(spoken: MappedText, word: str, positions: list[int]) -> Span:
    lo, hi = 0, len(word)
    while lo < hi and unicodedata.category(word[lo]).startswith("P"):
        lo += 1
    while hi > lo and unicodedata.category(word[hi - 1]).startswith("P"):
        hi -= 1
    if lo == hi:  # punctuation only: the whole of it
        lo, hi = 0, len(word)
    real = [spoken.spans[p] for p in positions[lo:hi] if spoken.spans[p][0] < spoken.spans[p][1]]
    if not real:
        return spoken.covering(positions[0], positions[-1] + 1)
    return min(s[0] for s in real), max(s[1] for s in real)

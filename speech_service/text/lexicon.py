"""Pronunciation lexicons: rules that say how a word or phrase is read (docs/ARCHITECTURE.md, "Lexicons").

A rule's grapheme is literal text, never a pattern. It matches a whole word or phrase: where its edge is
a letter or digit of a script written with spaces, the text beside the match must not go on with one
(Chinese, Japanese and the other scripts written without spaces match anywhere). Whitespace runs match
any whitespace run; a rule matches in any case unless it is `case_sensitive`. At each place the longest
match wins, then the earlier lexicon (the request's before the voice's), then the earlier rule; what a
rule writes is not matched again. The replacement stands for the whole of what it replaced, so an alias
is one caption on the caller's words.

Matching is one pass of an Aho-Corasick automaton over the text (one per case rule), built once per set
of lexicons: linear in the text whatever the rules (with at most `max_grapheme_chars` matches looked at
per character).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from speech_service.text.chinese import reading
from speech_service.text.mapped import MappedText


@dataclass(frozen=True)
class Rule:
    grapheme: str  # the text matched, literally
    alias: str | None = None  # what is read instead (a respelling), or
    pinyin: str | None = None  # one syllable with its tone per Chinese character of the grapheme: "chong2 qing4"
    case_sensitive: bool = False


@dataclass(frozen=True)
class Lexicon:
    name: str
    rules: tuple[Rule, ...]
    language: str | None = None  # a BCP 47 tag (PLS's xml:lang), for people: rules apply to any text


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# Scripts written without spaces between words: Han, kana (and 々), Thai, Lao, Myanmar, Khmer.
_UNSPACED = re.compile(r"[\u3005\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]")
_APOSTROPHES = "'\u2019"


def is_han(char: str) -> bool:
    return bool(_HAN.fullmatch(char))


def _wordlike(char: str) -> bool:
    """Part of a word written between spaces: a letter, digit or mark (or a private-use character, as
    in a pinyin reading put in the text before, whose letters no rule may match), not of a script
    written without spaces."""
    if _HAN.fullmatch(char) or _UNSPACED.fullmatch(char):
        return False
    return char.isalnum() or char == "_" or unicodedata.category(char)[0] == "M" or unicodedata.category(char) == "Co"


def _joins(text: str, at: int, step: int) -> bool:
    """Whether the character at `at` (the one beside a match) carries a word on: a letter, digit or
    mark, or an apostrophe with one beyond it ("o'clock", "don't")."""
    if not 0 <= at < len(text):
        return False
    if text[at] in _APOSTROPHES:
        return 0 <= at + step < len(text) and _wordlike(text[at + step])
    return _wordlike(text[at])


@dataclass(frozen=True)
class _Compiled:
    """A rule as the matcher applies it: its replacement of each Chinese character, and which of its
    edges must meet a word boundary."""

    rule: Rule
    readings: tuple[str, ...]  # pinyin rules: the reading of each Han character, in order
    bounded_start: bool
    bounded_end: bool

    @classmethod
    def of(cls, rule: Rule) -> _Compiled:
        readings = tuple(reading(s) for s in rule.pinyin.split()) if rule.pinyin is not None else ()
        return cls(rule, readings, _wordlike(rule.grapheme[0]), _wordlike(rule.grapheme[-1]))

    def written(self, matched: str) -> str:
        if self.rule.alias is not None:
            return self.rule.alias
        readings = iter(self.readings)
        return "".join(next(readings, c) if is_han(c) else c for c in matched)


def _folded(text: str, fold: bool) -> Iterator[tuple[str, int]]:
    """Each character matching compares, with the index of the text's character it comes from: a run
    of whitespace is one space, and with `fold` every character is case-folded ("ß" is "ss")."""
    space = False
    for i, c in enumerate(text):
        if c.isspace():
            if not space:
                yield " ", i
            space = True
            continue
        space = False
        for f in (c.casefold() if fold else c):
            yield f, i


def normalized(grapheme: str, fold: bool) -> str:
    return "".join(c for c, _ in _folded(grapheme, fold))


_KEY = 0x110000  # transitions are keyed node * _KEY + code point: one flat dict, no dict per node


class _Automaton:
    """Aho-Corasick over the normalized graphemes of some rules: one pass over a text yields every
    grapheme that ends at each place."""

    def __init__(self, graphemes: Sequence[tuple[str, int]]):
        self.next: dict[int, int] = {}
        self.rule, self.depth, parent, char = [-1], [0], [0], [0]
        for text, rule in graphemes:
            node = 0
            for c in text:
                key = node * _KEY + ord(c)
                child = self.next.get(key)
                if child is None:
                    child = self.next[key] = len(self.depth)
                    self.rule.append(-1)
                    self.depth.append(self.depth[node] + 1)
                    parent.append(node)
                    char.append(ord(c))
                node = child
            if self.rule[node] < 0:  # the same grapheme again: the earlier rule wins
                self.rule[node] = rule
        self.fail = [0] * len(self.depth)
        self.ends = [0] * len(self.depth)  # the longest grapheme ending at a node (itself or by its fail links)
        for node in sorted(range(1, len(self.depth)), key=self.depth.__getitem__):
            if parent[node]:
                self.fail[node] = self._step(self.fail[parent[node]], char[node])
            self.ends[node] = node if self.rule[node] >= 0 else self.ends[self.fail[node]]

    def _step(self, state: int, code: int) -> int:
        while True:
            found = self.next.get(state * _KEY + code)
            if found is not None:
                return found
            if state == 0:
                return 0
            state = self.fail[state]

    def matches(self, chars: Sequence[tuple[str, int]]) -> Iterator[tuple[int, int, int]]:
        """(first, last, rule): the text's characters `first..last` are a rule's grapheme."""
        state = 0
        for j, (c, origin) in enumerate(chars):
            state = self._step(state, ord(c))
            if j + 1 < len(chars) and chars[j + 1][1] == origin:
                continue  # a match must end where a character of the text does
            node = self.ends[state]
            while node:
                start = j - self.depth[node] + 1
                if start == 0 or chars[start - 1][1] != chars[start][1]:  # ... and start where one does
                    yield chars[start][1], origin, self.rule[node]
                node = self.ends[self.fail[node]]


class Matcher:
    """The rules of some lexicons, in order, ready to apply to any text."""

    def __init__(self, lexicons: Sequence[Lexicon]):
        rules = [rule for lexicon in lexicons for rule in lexicon.rules]
        self.rules = [_Compiled.of(rule) for rule in rules]
        self.automata = {fold: _Automaton([(normalized(r.grapheme, fold), i) for i, r in enumerate(rules)
                                           if r.case_sensitive != fold])
                         for fold in (False, True) if any(r.case_sensitive != fold for r in rules)}

    def apply(self, text: MappedText) -> MappedText:
        chosen = self._choose(text.text)
        if not chosen:
            return text
        out, done = [], 0
        for start, end, rule in chosen:
            written = self.rules[rule].written(text.text[start:end])
            span = text.covering(start, end)
            out += [text.slice(done, start), MappedText(written, (span,) * len(written))]
            done = end
        out.append(text.slice(done, len(text.text)))
        return MappedText.join(out, sep="")

    def _choose(self, text: str) -> list[tuple[int, int, int]]:
        """The matches applied: leftmost, then longest, then the earliest rule; none overlapping."""
        best: list[tuple[int, int] | None] = [None] * len(text)  # by start: (end, rule)
        for fold, automaton in self.automata.items():
            for first, last, rule in automaton.matches(list(_folded(text, fold))):
                compiled, end = self.rules[rule], last + 1
                if (compiled.bounded_start and _joins(text, first - 1, -1)) or (
                        compiled.bounded_end and _joins(text, end, 1)):
                    continue
                held = best[first]
                if held is None or end > held[0] or (end == held[0] and rule < held[1]):
                    best[first] = (end, rule)
        chosen, at = [], 0
        while at < len(text):
            found = best[at]
            if found is None:
                at += 1
                continue
            chosen.append((at, *found))
            at = found[0]
        return chosen


@lru_cache(maxsize=8)
def matcher(lexicons: tuple[Lexicon, ...]) -> Matcher:
    """The matcher of a set of lexicons, built once while it is in use."""
    return Matcher(lexicons)


def apply_lexicons(text: MappedText, lexicons: Sequence[Lexicon]) -> MappedText:
    """`text` with every rule of `lexicons` applied (earlier lexicons first; see the module doc)."""
    if not any(lexicon.rules for lexicon in lexicons):
        return text
    return matcher(tuple(lexicons)).apply(text)

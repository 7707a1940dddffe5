"""Words compared as a listener hears them: what a segment should say against what Whisper heard.

Both sides are read the same way: numbers and symbols as words (`spoken.speak`, so "$5" heard
matches "five dollars" asked for), case, accents' forms and apostrophes ignored, hyphens and
punctuation split words ("twenty-one" is two). `align` pairs the two token lists with the fewest
edits; the word error rate is those edits over the tokens asked for.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from speech_service.text.mapped import MappedText
from speech_service.text.spoken import speak

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # "don't" is one token


@dataclass(frozen=True)
class Token:
    text: str
    word: int  # index of the word it came from (a segment's word, or a heard word)
    share: tuple[int, int] = (0, 1)  # this token is part k of n of its word's time


def tokens_of(words: list[str]) -> list[Token]:
    """Comparable tokens of `words` (already spoken text: a segment's words)."""
    found = []
    for i, word in enumerate(words):
        parts = _TOKEN.findall(unicodedata.normalize("NFKC", word))
        found.extend(Token(_fold(part), i, (k, len(parts))) for k, part in enumerate(parts))
    return found


def heard_tokens(words: list[str]) -> list[Token]:
    """Comparable tokens of heard words, their numbers read as words first; each token names the
    first heard word it came from, and its share of that word's time."""
    folded = [unicodedata.normalize("NFKC", w) for w in words]
    mapped = MappedText.join([MappedText(w, ((i, i + 1),) * len(w)) for i, w in enumerate(folded)], sep=" ")
    spoken = speak(mapped)
    found = [(m.group(0), spoken.covering(m.start(), m.end())[0]) for m in _TOKEN.finditer(spoken.text)]
    counts: dict[int, int] = {}
    for _, word in found:
        counts[word] = counts.get(word, 0) + 1
    seen: dict[int, int] = {}
    result = []
    for text, word in found:
        k = seen.get(word, 0)
        seen[word] = k + 1
        result.append(Token(_fold(text), word, (k, counts[word])))
    return result


def _fold(token: str) -> str:
    return token.replace("'", "").replace("’", "").casefold()


def align(expected: list[Token], heard: list[Token]) -> tuple[list[int | None], int]:
    """For each expected token, the index of the heard token it was heard as (equal, or heard in its
    place), or None where it was not heard; and the number of edits (substitutions, deletions and
    insertions): Levenshtein over tokens."""
    n, m = len(expected), len(heard)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            same = expected[i - 1].text == heard[j - 1].text
            cost[i][j] = min(cost[i - 1][j - 1] + (not same), cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs: list[int | None] = [None] * n
    i, j = n, m
    while i and j:
        same = expected[i - 1].text == heard[j - 1].text
        if cost[i][j] == cost[i - 1][j - 1] + (not same):
            pairs[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs, cost[n][m]


def error_rate(edits: int, asked: int) -> float:
    """Edits over the tokens asked for (1.0 when none were asked for but something was heard)."""
    return edits / asked if asked else float(edits > 0)


def word_error_rate(expected: str, heard: str) -> float:
    asked = tokens_of(expected.split())
    _, edits = align(asked, heard_tokens(heard.split()))
    return error_rate(edits, len(asked))

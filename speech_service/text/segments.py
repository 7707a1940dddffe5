"""Text split into the segments the model speaks: at sentence ends where one fits, else at clause
ends, else between words; never after a title or an initial ("Dr. Smith", "e.g. this")."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)


# f5-tts's clause boundaries (`utils_infer.chunk_text`): after , ; : . ! ? and their CJK forms.
_CLAUSE_END = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")
_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*$")


# A full stop after a title or an initial does not end a clause ("Dr. Who", "J. R. R. Tolkien",
# "e.g. this"), nor one before a lowercase word ("etc. and", "U.S. law"): seams there split a name.
ABBREVIATION_END = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Mx|Dr|Prof|St|Mt|Jr|Sr|Gen|Col|Capt|Lt|Sgt|Rev|"
                               r"Sen|Rep|Gov|No|vs|cf|e\.g|i\.e|[A-Z])\.$")


def _breaks_between(before: str, after: str) -> bool:
    return not (before.endswith(".") and (ABBREVIATION_END.search(before) or after[:1].islower()))


def _clauses(text: str, max_bytes: int) -> list[str]:
    """Clauses of at most `max_bytes` UTF-8 bytes; a longer clause is split between words. Linear
    in the text: a clause is looked at by its last part, a long one cut from an index (searching or
    copying all of it again for each part or piece took time quadratic in its length)."""
    joined: list[list[str]] = []
    for part in filter(None, (p.strip() for p in _CLAUSE_END.split(text))):
        if joined and not _breaks_between(joined[-1][-1], part):
            joined[-1].append(part)
        else:
            joined.append([part])
    return [piece for parts in joined for piece in _between_words(" ".join(parts), max_bytes)]


def _between_words(clause: str, max_bytes: int) -> list[str]:
    """`clause` (stripped) in pieces of at most `max_bytes` UTF-8 bytes, cut at the last space that
    fits, or inside a word longer than that. A character is at least a byte: the first `max_bytes`
    bytes lie within the first `max_bytes` characters."""
    pieces: list[str] = []
    start = 0
    while len(clause[start:start + max_bytes + 1].encode()) > max_bytes:
        head = clause[start:start + max_bytes].encode()[:max_bytes].decode(errors="ignore")
        cut = head.rfind(" ")
        end = start + (cut if cut > 0 else len(head) or 1)  # one character over a tiny limit: still on
        pieces.append(clause[start:end].strip())
        start = end
        while clause[start].isspace():  # the clause ends with no space: the next piece's start
            start += 1
    if start < len(clause):
        pieces.append(clause[start:])
    return pieces


def split_text(text: str, max_bytes: int, *, short_first: bool = False) -> list[str]:
    """Segments of at most `max_bytes` UTF-8 bytes, each as long as fits: every segment repeats the
    reference in the model's input, and every boundary is a seam, so fewer is better.

    With `short_first` (streaming), the first segment ends at the first sentence end, so the first
    audio comes after one sentence is synthesized; the next may hold twice its bytes, each later
    one twice the one before, up to `max_bytes`, so long inputs soon get long segments. Segments
    end at a sentence end where one fits, else at a clause end, else between words.
    """
    segments: list[str] = []
    current: list[str] = []
    budget = max_bytes

    def close(upto: int) -> None:
        nonlocal budget, current
        segments.append(" ".join(current[:upto]))
        if short_first:
            budget = min(max_bytes, 2 * (len(segments[0].encode()) if len(segments) == 1 else budget))
        current = current[upto:]

    for clause in _clauses(text, max_bytes):
        while current and len(" ".join([*current, clause]).encode()) > budget:
            ends = [i + 1 for i, c in enumerate(current) if _SENTENCE_END.search(c)]
            close(ends[-1] if ends else len(current))
        current.append(clause)
        if short_first and not segments and _SENTENCE_END.search(clause):
            close(len(current))
    if current:
        close(len(current))
    return segments


def normalize_ref_text(ref_text: str) -> str:
    """F5 expects the reference transcript to end a sentence and be followed by a space."""
    text = ref_text.strip()
    if not re.search(r"[.!?。！？]$", text):
        text += "."
    return text + " "

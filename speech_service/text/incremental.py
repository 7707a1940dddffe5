"""Text that arrives a few characters at a time (a live socket's context), cut into pieces that can be
spoken as soon as each is complete: at a sentence end, or for a context's first piece already at a
clause end, so its first audio starts early. A piece is a span of everything the context was sent;
the caller's characters stay exactly as they came (docs/ARCHITECTURE.md, "Live text in").

A full stop ends a sentence once what follows shows it does: whitespace, or (clients that send
sentences without the space between them) an uppercase letter; not after a title or an initial
("Dr. Smith", "J. R. R."), nor inside a number ("$5.20"). Text that runs long without a sentence
end is cut at its last space, so audio never waits on a text without punctuation.
"""

from __future__ import annotations

import re

from speech_service.text.segments import ABBREVIATION_END

_SENTENCE_END = re.compile(r"[.!?。！？…]+[\"'”’)\]]*")
_CLAUSE_END = re.compile(r"[,;:，；：、—]+[\"'”’)\]]*")
_CJK_END = re.compile(r"[。！？；，、]")  # full-width punctuation ends where it stands
_INITIAL = re.compile(r"(?:^|[\s.])[A-Z]\.$")  # "J." of "J. R. R.", "S." of "U.S."
# The shortest first piece cut at a clause end: a lone "Well," would be stretched, not spoken.
MIN_CLAUSE_CHARS = 12
# Text pending past this many characters with no sentence end is cut at its last space.
MAX_PIECE_CHARS = 400

Span = tuple[int, int]


class TextCutter:
    """A context's text so far and where its next piece starts."""

    def __init__(self) -> None:
        self.text = ""
        self.done = 0  # the start of the text not yet cut
        self.cut_any = False

    def feed(self, chunk: str) -> list[Span]:
        """Add `chunk`; the spans of the pieces it completed, in order."""
        self.text += chunk
        pieces: list[Span] = []
        while (end := self._next_end()) is not None:
            pieces.extend(self._take(end))
        return pieces

    def flush(self) -> list[Span]:
        """Everything not yet cut, as one piece (none if it is only whitespace)."""
        return self._take(len(self.text))

    @property
    def pending(self) -> int:
        return len(self.text) - self.done

    def _take(self, end: int) -> list[Span]:
        start, self.done = self.done, end
        if not self.text[start:end].strip():
            return []
        self.cut_any = True
        return [(start, end)]

    def _next_end(self) -> int | None:
        """Where the next complete piece ends, if one is complete."""
        text, start = self.text, self.done
        for m in _SENTENCE_END.finditer(text, start):
            if self._ends_sentence(m):
                return m.end()
        if not self.cut_any:
            for m in _CLAUSE_END.finditer(text, start):
                if m.end() - start >= MIN_CLAUSE_CHARS and m.end() < len(text) and text[m.end()].isspace():
                    return m.end()
        if len(text) - start > MAX_PIECE_CHARS:
            space = text.rfind(" ", start, start + MAX_PIECE_CHARS)
            return space if space > start else start + MAX_PIECE_CHARS
        return None

    def _ends_sentence(self, m: re.Match) -> bool:
        text, end = self.text, m.end()
        if _CJK_END.search(m.group()):
            return True
        if end >= len(text):
            return False  # what follows decides
        before = text[max(self.done, m.start() - 8):end]
        if m.group() == "." and (ABBREVIATION_END.search(before) or _INITIAL.search(before)):
            return False
        return text[end].isspace() or text[end].isupper()

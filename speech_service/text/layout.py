"""The caller's layout read as punctuation: paragraphs, headings and list items keep their pauses."""

from __future__ import annotations

import logging
import re

from speech_service.text.mapped import MappedText

logger = logging.getLogger(__name__)


_ENDS_CLAUSE = re.compile(r"[;:,.!?；：，。！？][\"')\]]*$")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*•–]|(\d{1,3})[.)])[ \t]+")  # "- milk", "2. eggs", "3) bread"


def _paragraphs(text: str) -> list[list[MappedText]]:
    """Paragraphs (split at blank lines) and list items (a line of its own each), as their words."""
    source = MappedText.of(text)
    paragraphs: list[list[MappedText]] = [[]]
    at = 0
    for line in text.splitlines(keepends=True):
        start, content = at, line.splitlines()[0]
        at += len(line)
        item = _LIST_ITEM.match(content)
        if item or not content.strip():
            paragraphs.append([])
        if item and item.group(1):  # a bullet is not read; a number is, followed by a pause
            number = source.slice(start + item.start(1), start + item.end(1))
            paragraphs[-1].append(number + source.inserted(",", start + item.end(1)))
        body = start + (item.end() if item else 0)
        paragraphs[-1].extend(source.slice(body + w.start(), body + w.end())
                              for w in re.finditer(r"\S+", content[body - start:]))
    return [words for words in paragraphs if words]


def layout(text: str) -> MappedText:
    """The text on one line, its layout turned into punctuation: a paragraph or list item that ends
    without it (a heading, "- milk") gets a full stop, so it keeps its pause; a single line break,
    often only where an editor wrapped the text, is a space. Runs before normalisation, which would
    turn "2." into a word."""
    paragraphs = [MappedText.join(words) for words in _paragraphs(text)]
    ended = [p if _ENDS_CLAUSE.search(p.text) else p + p.inserted(".", p.spans[-1][1]) for p in paragraphs[:-1]]
    return MappedText.join([*ended, *paragraphs[-1:]])


def flatten_layout(text: str) -> str:
    """`layout`'s text alone."""
    return layout(text).text

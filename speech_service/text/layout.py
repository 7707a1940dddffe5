"""The caller's layout read as punctuation: paragraphs, headings and list items keep their pauses."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)


_ENDS_CLAUSE = re.compile(r"[;:,.!?；：，。！？][\"')\]]*$")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*•–]|(\d{1,3})[.)])[ \t]+")  # "- milk", "2. eggs", "3) bread"


def _paragraphs(text: str) -> list[str]:
    """Paragraphs (split at blank lines) and list items (a line of its own each), on one line each."""
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        item = _LIST_ITEM.match(line)
        if item or not line.strip():
            paragraphs.append([])
        if item:  # a bullet is not read; a number is, followed by a pause
            line = (f"{item.group(1)}, " if item.group(1) else "") + line[item.end():]
        paragraphs[-1].append(line)
    return [flat for lines in paragraphs if (flat := " ".join(" ".join(lines).split()))]


def flatten_layout(text: str) -> str:
    """The text on one line, its layout turned into punctuation: a paragraph or list item that ends
    without it (a heading, "- milk") gets a full stop, so it keeps its pause; a single line break,
    often only where an editor wrapped the text, is a space. Runs before `normalize_for_speech`,
    which would turn "2." into a word."""
    paragraphs = _paragraphs(text)
    ended = [p if _ENDS_CLAUSE.search(p) else p + "." for p in paragraphs[:-1]]
    return " ".join([*ended, *paragraphs[-1:]])

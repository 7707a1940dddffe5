"""SSML input: a `<speak>` document read as the lines of a script (`text.script.Line`), every
character keeping the span of the caller's `input` it stands for (docs/ARCHITECTURE.md, "SSML").

The document is checked first by defusedxml (no DOCTYPE, so no entities and no external references:
a "billion laughs" is refused before anything expands), then walked by expat, whose byte index of
each event places every piece of character data in the caller's string. A pure function of the
input, linear in it: the caller runs it off the event loop.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree
from defusedxml import DefusedXmlException

from speech_service.errors import BadRequest
from speech_service.text import chinese
from speech_service.text.mapped import MappedText, Span
from speech_service.text.script import Line
from speech_service.text.ssml_elements import (
    TEXT_ONLY,
    Frame,
    break_s,
    check_element,
    invalid,
    said_for,
    with_settings,
)

MAX_PAUSE_S = 60.0  # all of a document's breaks: silence costs memory, text does not bound it
# A <speak> document: after an XML declaration and comments, its root, or a DOCTYPE naming it (which
# parse_ssml refuses: a hostile document is a 400, never text read aloud).
_SSML = re.compile(r"[\s\ufeff]*(?:<\?xml[^>]*\?>\s*)?(?:<!--(?:[^-]|-[^-])*-->\s*)*"
                   r"(?:<speak[\s/>]|<!DOCTYPE\s+speak\b)")
_ENDS_CLAUSE = re.compile(r"[;:,.!?；：，。！？…][\"')\]”’」』]*$")


def is_ssml(input: str) -> bool:
    """Whether `input` is a `<speak>` document (after whitespace, an XML declaration, comments): only
    then is markup read; any other text is plain."""
    return _SSML.match(input) is not None


def parse_ssml(input: str) -> list[Line]:
    """The lines `input`, a `<speak>` document, asks for; a 400 naming what is wrong or unsupported."""
    _check_safe(input)
    lines = _Walk(input).lines()
    if not any(line.text.text.strip() for line in lines):
        raise BadRequest("input is an SSML document with nothing to say.", code="empty_input", param="input")
    return lines


def _check_safe(source: str) -> None:
    try:
        source.encode("utf-8")
        defusedxml.ElementTree.fromstring(source, forbid_dtd=True)
    except UnicodeEncodeError as error:
        raise invalid(f"input holds a lone surrogate at character {error.start}.") from None
    except DefusedXmlException:
        raise invalid("input: an SSML document may not have a DOCTYPE (no entity declarations, "
                      "no external references).") from None
    except ParseError as error:
        line, column = error.position
        raise invalid(f"input is not well-formed SSML (line {line}, column {column + 1}).") from None


@dataclass
class _Draft:
    settings: tuple[str | None, str | None, float]
    chars: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    pause_s: float = 0.0
    closed: bool = False  # a break ended it


class _Lines:
    """The lines being written: text joins the last line while its settings hold and no break ended it;
    whitespace collapses to one space, which stands for nothing."""

    def __init__(self) -> None:
        self.drafts: list[_Draft] = []
        self.space = False
        self.paused = 0.0

    def put(self, c: str, span: Span, settings: tuple) -> None:
        if c.isspace():
            self.space = True
            return
        last = self.drafts[-1] if self.drafts else None
        if last is None or last.closed or last.settings != settings:
            last = _Draft(settings)
            self.drafts.append(last)
        elif self.space:
            self._insert(last, " ")
        self.space = False
        last.chars.append(c)
        last.spans.append(span)

    def pause(self, seconds: float, settings: tuple) -> None:
        if seconds <= 0:  # strength="none": no break at all
            return
        self.paused += seconds
        if self.paused > MAX_PAUSE_S:
            raise invalid(f"input: the document's breaks add up to over {MAX_PAUSE_S:g} s of silence.")
        if not self.drafts:  # a pause before any text: a line with nothing to say
            self.drafts.append(_Draft(settings))
        self.drafts[-1].pause_s += seconds
        self.drafts[-1].closed = True

    def end_sentence(self) -> None:
        """A sentence or paragraph ends: a full stop if the text has no closing punctuation."""
        self.space = True
        last = self.drafts[-1] if self.drafts else None
        if last and last.chars and not _ENDS_CLAUSE.search("".join(last.chars[-4:])):
            self._insert(last, ".")

    @staticmethod
    def _insert(draft: _Draft, c: str) -> None:
        at = draft.spans[-1][1]
        draft.chars.append(c)
        draft.spans.append((at, at))

    def lines(self) -> list[Line]:
        return [Line(MappedText("".join(d.chars), tuple(d.spans)), voice=d.settings[0], style=d.settings[1],
                     rate=d.settings[2], pause_s=d.pause_s) for d in self.drafts]


class _Walk:
    """One expat pass over a document defusedxml accepted: each event's byte index, as a character
    index, places its text in the caller's string."""

    def __init__(self, source: str):
        self.source = source
        self.char_at = _char_index(source)
        self.stack: list[Frame] = []
        self.out = _Lines()
        self.in_cdata = False
        self.parser = xml.parsers.expat.ParserCreate()
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.text
        self.parser.StartCdataSectionHandler = lambda: setattr(self, "in_cdata", True)
        self.parser.EndCdataSectionHandler = lambda: setattr(self, "in_cdata", False)

    def lines(self) -> list[Line]:
        self.parser.Parse(self.source, True)
        return self.out.lines()

    def here(self) -> int:
        return self.char_at[self.parser.CurrentByteIndex]

    def start(self, name: str, attributes: dict[str, str]) -> None:
        parent = self.stack[-1] if self.stack else None
        check_element(name, attributes, parent, len(self.stack) + 1)
        frame = replace(parent or Frame("speak", chinese=chinese.is_chinese(self.source)),
                        name=name, attributes=attributes, written=[] if name in TEXT_ONLY else None)
        frame = with_settings(frame, attributes)
        self.stack.append(frame)
        if name in ("p", "s"):
            self.out.end_sentence()
        elif name == "break":
            self.out.pause(break_s(attributes), frame.settings)

    def end(self, name: str) -> None:
        frame = self.stack.pop()
        if name in ("p", "s"):
            self.out.end_sentence()
        elif frame.written is not None:
            said = said_for(frame, self.here())
            written = frame.written
            if written and written[0][0].isspace():
                self.out.space = True
            for c, span in said:
                self.out.put(c, span, frame.settings)
            if written and written[-1][0].isspace():
                self.out.space = True

    def text(self, data: str) -> None:
        frame = self.stack[-1]
        at = self.here()
        if frame.name == "break" and data.strip():
            raise invalid("input: <break> holds nothing; write it <break time=\"700ms\"/>.")
        for c in data:
            end = at + 1
            if self.source[at] == "&" and not self.in_cdata:  # a reference: its character spans all of it
                end = self.source.index(";", at) + 1
            elif c == "\n" and self.source.startswith("\r\n", at):  # a line end expat reads as one "\n"
                end = at + 2
            if frame.written is not None:
                frame.written.append((c, (at, end)))
            else:
                self.out.put(c, (at, end), frame.settings)
            at = end


def _char_index(source: str) -> Sequence[int]:
    """For each byte offset of `source` in UTF-8 (and its end), the index of its character."""
    if source.isascii():
        return range(len(source) + 1)
    index: list[int] = []
    for i, c in enumerate(source):
        n = ord(c)
        index.extend((i,) * (1 if n < 0x80 else 2 if n < 0x800 else 3 if n < 0x10000 else 4))
    index.append(len(source))
    return index


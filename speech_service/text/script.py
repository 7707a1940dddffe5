"""A request's text as the model will read it, line by line: who speaks, in which manner, how fast,
and the pause after. The directing stages (markup, speakers, lexicons: docs/ARCHITECTURE.md, "Directing
speech") write it at the Ingress; the Synthesizer reads each line's numbers as words and cuts it into
segments (`SynthesisEngine.plan_script`). Plain text is one line in the request's voice.
"""

from __future__ import annotations

from dataclasses import dataclass

from speech_service.references import Reference
from speech_service.text.layout import layout
from speech_service.text.mapped import MappedText


@dataclass(frozen=True)
class Line:
    """A stretch of the caller's input read in one voice, manner and pace, then a pause."""

    text: MappedText  # after markup and lexicons (numbers still as written); spans index the caller's input
    voice: str | None = None  # a speaker's voice name; None: the request's voice
    style: str | None = None  # a take of that voice; None: the request's style, else the voice's default
    rate: float = 1.0  # times the request's speed (SSML <prosody rate>)
    pause_s: float = 0.0  # silence after the line; 0 joins the next line by a cross-fade, as segments are
    reference: int = 0  # which of the script's references speaks it (set when the voices are looked up)


@dataclass(frozen=True)
class Script:
    lines: tuple[Line, ...]
    # The voices (and takes) its lines name, the request's own first; a line's `reference` indexes it.
    references: tuple[Reference, ...] = ()
    # The caller's input when the script is only its plain reading (one line in the request's voice,
    # nothing directed): sent as that text, so plain requests reach the Synthesizer as they always did.
    plain_input: str | None = None

    @classmethod
    def plain(cls, text: str, references: tuple[Reference, ...] = ()) -> Script:
        """Plain text: its layout read as punctuation (`text.layout`), one line in the request's voice."""
        return cls((Line(layout(text)),), references)

    def sent(self) -> str | Script:
        """What the Synthesizer is given: the plain input, else this script."""
        return self.plain_input if self.plain_input is not None else self

    @property
    def speakers(self) -> int:
        return len({reference.voice for reference in self.references}) or 1

"""What each element of the SSML subset means (`text.ssml` walks the document): which elements and
attributes are supported, and what they set for the text inside (voice, take, rate, language), what
a `<break>` lasts, and what a `<sub>`, `<phoneme>` or `<say-as>` says in place of its written text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from speech_service.errors import BadRequest
from speech_service.text import chinese
from speech_service.text.mapped import Span
from speech_service.text.say_as import INTERPRETATIONS, say_as, shown

# What each supported element takes; namespace declarations (xmlns, xmlns:*) are tolerated anywhere.
ATTRIBUTES = {
    "speak": ("version", "xml:lang", "xsi:schemaLocation"), "p": ("xml:lang",), "s": ("xml:lang",),
    "break": ("time", "strength"), "sub": ("alias",), "phoneme": ("alphabet", "ph"),
    "say-as": ("interpret-as", "format"), "prosody": ("rate",), "voice": ("name", "style", "xml:lang"),
}
_REQUIRED = {"sub": "alias", "phoneme": "ph", "say-as": "interpret-as"}
TEXT_ONLY = ("sub", "phoneme", "say-as")  # they hold the written text their reading stands for
SUPPORTED = ", ".join(f"<{name}>" for name in ATTRIBUTES)
PINYIN_ALPHABETS = ("x-pinyin", "pinyin")

MAX_DEPTH = 32  # nested elements
MAX_BREAK_S = 10.0  # one <break>
RATES = (0.25, 4.0)  # <prosody rate>, as a multiple of the request's speed, nesting included
_STRENGTHS = {"none": 0.0, "x-weak": 0.25, "weak": 0.5, "medium": 0.75, "strong": 1.0, "x-strong": 1.25}
_RATE_WORDS = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}


def invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_ssml", param="input")


def unsupported(message: str) -> BadRequest:
    return BadRequest(message, code="unsupported_ssml", param="input")


@dataclass(frozen=True)
class Frame:
    """An open element and what it sets for the text inside."""

    name: str
    voice: str | None = None
    style: str | None = None
    rate: float = 1.0
    chinese: bool = False
    attributes: dict[str, str] = field(default_factory=dict)
    written: list[tuple[str, Span]] | None = None  # a text-only element's characters

    @property
    def settings(self) -> tuple[str | None, str | None, float]:
        return self.voice, self.style, self.rate


def check_element(name: str, attributes: dict[str, str], parent: Frame | None, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise invalid(f"input: SSML elements are nested over {MAX_DEPTH} deep.")
    if name not in ATTRIBUTES:
        raise unsupported(f"input: SSML element <{name}> is not supported; supported: {SUPPORTED}.")
    if (parent is None) != (name == "speak"):
        raise invalid("input: an SSML document is one <speak> element, holding the others.")
    if parent is not None and parent.written is not None:
        raise invalid(f"input: <{parent.name}> holds text only, not <{name}>.")
    for attribute in attributes:
        if attribute not in ATTRIBUTES[name] and attribute != "xmlns" and not attribute.startswith("xmlns:"):
            takes = ", ".join(ATTRIBUTES[name]) or "no attributes"
            raise unsupported(f"input: attribute {attribute!r} of <{name}> is not supported; <{name}> takes "
                              f"{takes}. Supported elements: {SUPPORTED}.")
    if name in _REQUIRED and _REQUIRED[name] not in attributes:
        raise invalid(f"input: <{name}> needs its {_REQUIRED[name]!r} attribute.")


def with_settings(frame: Frame, attributes: dict[str, str]) -> Frame:
    """What an element sets for the text inside: the language, the rate, the voice and its take."""
    if "xml:lang" in attributes:
        lang = attributes["xml:lang"].strip().lower()
        frame = replace(frame, chinese=lang.startswith(("zh", "cmn", "yue")))
    if frame.name == "prosody" and "rate" in attributes:
        rate = frame.rate * _rate(attributes["rate"])
        if not RATES[0] <= rate <= RATES[1]:
            raise invalid(f"input: <prosody rate> makes the speed {rate:g} times the request's; "
                          f"it must stay within {RATES[0]:g} and {RATES[1]:g}.")
        frame = replace(frame, rate=rate)
    if frame.name == "voice":
        name, style = (attributes.get(a, "").strip() or None for a in ("name", "style"))
        if name is None and style is None:
            raise invalid("input: <voice> needs a name or a style.")
        if name is not None and name != frame.voice:  # another voice: the outer take is not one of its
            frame = replace(frame, voice=name, style=style)
        else:
            frame = replace(frame, style=style or frame.style)
    return frame


def _rate(value: str) -> float:
    """ "50%" (half speed), "+20%" (a fifth faster), "1.5", or x-slow, slow, medium, fast, x-fast."""
    written = value.strip().lower()
    if written in _RATE_WORDS:
        return _RATE_WORDS[written]
    m = re.fullmatch(r"([+-]?)([0-9]{1,6}(?:\.[0-9]{1,6})?)(%?)", written)
    if m is None or (m[1] and not m[3]):
        raise invalid(f"input: <prosody rate={value!r}> is not a rate: write a percentage (50% is half "
                      f"speed), a multiple (1.5) or one of {', '.join(_RATE_WORDS)}.")
    number = float(m[2]) / (100 if m[3] else 1)
    return 1 + number if m[1] == "+" else 1 - number if m[1] == "-" else number


def break_s(attributes: dict[str, str]) -> float:
    if "time" in attributes:
        m = re.fullmatch(r"\s*([0-9]{1,6}(?:\.[0-9]{1,6})?)\s*(ms|s)\s*", attributes["time"], re.IGNORECASE)
        if m is None:
            raise invalid(f"input: <break time={attributes['time']!r}> is not a time: write e.g. 700ms or 1.5s.")
        seconds = float(m[1]) / (1000 if m[2].lower() == "ms" else 1)
        if seconds > MAX_BREAK_S:
            raise invalid(f"input: <break> of {seconds:g} s is over the {MAX_BREAK_S:g} s a break may last.")
        return seconds
    strength = attributes.get("strength", "medium")
    if strength not in _STRENGTHS:
        raise invalid(f"input: <break strength={strength!r}> is not one of {', '.join(_STRENGTHS)}.")
    return _STRENGTHS[strength]


def said_for(frame: Frame, here: int) -> list[tuple[str, Span]]:
    """What a `<sub>`, `<phoneme>` or `<say-as>` says, each character with the caller's span it stands
    for: the whole written text, or for pinyin its own character."""
    written = [(c, span) for c, span in frame.written if not c.isspace()]
    covering = (min(s[0] for _, s in written), max(s[1] for _, s in written)) if written else (here, here)
    attributes = frame.attributes
    if frame.name == "phoneme":
        return _pinyin(attributes, written)
    if frame.name == "sub":
        said = attributes["alias"]
    else:
        interpret_as = attributes["interpret-as"]
        if interpret_as not in INTERPRETATIONS:
            raise unsupported(f'input: <say-as interpret-as="{interpret_as}"> is not supported; supported: '
                              f"{', '.join(INTERPRETATIONS)}.")
        text = " ".join("".join(c for c, _ in frame.written).split())
        said = say_as(interpret_as, text, attributes.get("format"), frame.chinese)
    return [(c, covering) for c in said]


def _pinyin(attributes: dict[str, str], written: list[tuple[str, Span]]) -> list[tuple[str, Span]]:
    alphabet = attributes.get("alphabet", "x-pinyin")
    if alphabet not in PINYIN_ALPHABETS:
        raise unsupported(f"input: <phoneme alphabet={alphabet!r}> is not supported: F5 reads characters, and "
                          'pinyin for Chinese; write a respelling with <sub alias="..."> or, for Chinese, '
                          'alphabet="x-pinyin" with a syllable and tone per character (ph="yin2 hang2").')
    syllables = attributes["ph"].split()
    if len(syllables) != len(written) or not all(chinese.is_chinese(c) for c, _ in written):
        raise invalid(f"input: <phoneme ph={shown(attributes['ph'])}> needs one pinyin syllable per Chinese "
                      f"character of {shown(''.join(c for c, _ in written))}.")
    said = []
    for (_, span), syllable in zip(written, syllables):
        try:
            said.extend((c, span) for c in chinese.reading(syllable))
        except ValueError as error:
            raise invalid(f"input: <phoneme>: {error}.") from None
    return said

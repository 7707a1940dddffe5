"""The directing stages of a request, at the Ingress: its input read as markup (an SSML `<speak>`
document, else plain text and its layout), the voices and styles its lines name looked up as
references, and the lexicons applied (the request's, then each voice's own). The result is the
`Script` the Synthesizer plans; every stage keeps the map to the caller's characters
(docs/ARCHITECTURE.md, "Directing speech").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from speech_service.config import ServiceSettings
from speech_service.errors import BadRequest, ServiceError
from speech_service.models import ModelRegistry
from speech_service.references import Reference
from speech_service.schemas import SpeechRequest
from speech_service.service.consent import check_consent
from speech_service.service.lexicons import LexiconService
from speech_service.storage.voice_record import Take, VoiceRecord, style_named_in
from speech_service.storage.voices import VoiceStore
from speech_service.text.layout import layout
from speech_service.text.lexicon import Lexicon, apply_lexicons
from speech_service.text.script import Line, Script
from speech_service.text.ssml import is_ssml, parse_ssml

logger = logging.getLogger(__name__)

# The silence between two speakers when the text asks for none: turns are not cross-faded.
TURN_PAUSE_S = 0.3
# Lines one request may make (each at least one segment, of up to `max_input_chars` of input).
MAX_LINES = 128


@dataclass(frozen=True)
class _Speaker:
    record: VoiceRecord
    lexicons: list[Lexicon]  # the voice's own, after the request's


def read_markup(text: str) -> list[Line]:
    """The caller's input as lines: an SSML document's (`text.ssml`), else one line of plain text."""
    return parse_ssml(text) if is_ssml(text) else [Line(layout(text))]


class Director:
    def __init__(self, settings: ServiceSettings, store: VoiceStore, models: ModelRegistry,
                 lexicons: LexiconService):
        self.settings, self.store, self.models, self.lexicons = settings, store, models, lexicons

    async def script(self, body: SpeechRequest, *, markup: bool = True) -> Script:
        """`body`'s script, its references named (no clip bytes); without `markup`, its input is
        plain text whatever it looks like (a live piece, cut from text as it came). A voice without
        the consent the service requires is a 403 here, before any model call."""
        lines = await asyncio.to_thread(read_markup, body.input) if markup else [Line(layout(body.input))]
        if len(lines) > MAX_LINES:
            raise BadRequest(f"The input makes {len(lines)} lines (a change of voice, style or rate, or a break, "
                             f"starts one); the limit is {MAX_LINES}.",
                             code="too_many_lines", param="input")
        speakers = await self._speakers(body, {line.voice or body.voice for line in lines})
        keys: list[tuple[str, str | None]] = []
        directed = []
        for line in lines:
            voice = line.voice or body.voice
            style = self._style(body, line, speakers[voice].record)
            if (voice, style) not in keys:
                keys.append((voice, style))
            directed.append(replace(line, voice=voice, style=style, reference=keys.index((voice, style))))
        references = tuple(self._reference(body, speakers[voice].record, style) for voice, style in keys)
        if len({reference.model for reference in references}) > 1:
            raise BadRequest("The voices of one request must be spoken by one model; these are spoken by "
                             + ", ".join(sorted({f"{r.voice}: {r.model}" for r in references}))
                             + ". Name the model in the request.", code="voices_need_one_model", param="model")
        directed = _turns(await asyncio.to_thread(self._worded, directed, speakers))
        plain = directed == [Line(layout(body.input), voice=body.voice)] and references[0].style is None
        return Script(tuple(directed), references, body.input if plain else None)

    async def with_clips(self, script: Script) -> Script:
        """`script` with each reference's clip, read with its voice's current record (a voice
        changed meanwhile speaks as it is now); the model is kept."""
        async def with_clip(reference: Reference) -> Reference:
            record, wav = await asyncio.to_thread(self.store.reference, reference.voice, reference.style)
            check_consent(record, self.settings.require_consent)
            return replace(_reference(record, reference.style, reference.model, record.take(reference.style)),
                           wav=wav)

        return replace(script, references=tuple(await asyncio.gather(*map(with_clip, script.references))))

    async def _speakers(self, body: SpeechRequest, voices: set[str]) -> dict[str, _Speaker]:
        """Each voice's record and lexicons; the request's lexicons must all exist, a voice's own
        that were deleted since are skipped."""
        names = [body.voice, *sorted(voices - {body.voice})]
        records = await asyncio.gather(*(asyncio.to_thread(self.store.get, name) for name in names))
        asked = await asyncio.to_thread(self.lexicons.load, body.lexicons)
        speakers = {}
        for record in records:
            own = await self._voice_lexicons(record, {lexicon.name for lexicon in asked})
            speakers[record.name] = _Speaker(record, [*asked, *own])
        return speakers

    async def _voice_lexicons(self, record: VoiceRecord, taken: set[str]) -> list[Lexicon]:
        found = []
        for name in record.lexicons:
            if name in taken:
                continue
            try:
                found.extend(await asyncio.to_thread(self.lexicons.load, [name]))
            except ServiceError:
                logger.info("voice %s names lexicon %s, which is gone: spoken without it", record.name, name)
        return found

    def _style(self, body: SpeechRequest, line: Line, record: VoiceRecord) -> str | None:
        """The line's own style; else, in the request's voice, the request's `style`; else a style of
        the voice that `instructions` names; else the default take."""
        if line.style is not None:
            return line.style
        if line.voice in (None, body.voice) and body.style is not None:
            return body.style
        if body.instructions:
            return style_named_in(body.instructions, list(record.styles))
        return None

    def _reference(self, body: SpeechRequest, record: VoiceRecord, style: str | None) -> Reference:
        check_consent(record, self.settings.require_consent)
        return _reference(record, style, self.models.resolve(body.model, record.name, record.model),
                          record.take(style))  # 400 unknown_style naming the voice's styles

    @staticmethod
    def _worded(lines: list[Line], speakers: dict[str, _Speaker]) -> list[Line]:
        return [replace(line, text=apply_lexicons(line.text, speakers[line.voice].lexicons)) for line in lines]


def _reference(record: VoiceRecord, style: str | None, model: str, take: Take) -> Reference:
    return Reference(record.name, take.sha256, take.ref_text, None, take.language or record.language,
                     record.consent.id if record.consent else None, model, style)


def _turns(lines: list[Line]) -> list[Line]:
    """A change of speaker with no pause written gets `TURN_PAUSE_S`, not a cross-fade."""
    return [replace(line, pause_s=TURN_PAUSE_S) if line.pause_s == 0 and following.voice != line.voice else line
            for line, following in zip(lines, lines[1:])] + lines[-1:]

"""What a voice is: its record, the takes (styles) it holds besides its own clip, and its version.

Every take, the voice's own clip (the default take) included, is a clip with the transcript made
for exactly that clip (docs/ARCHITECTURE.md, "The invariant the product exists for"). The store that
keeps them, and the order it writes in, is `storage.voices`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from speech_service.errors import BadRequest, Conflict, VersionMismatch

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STYLE_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_STYLE = "default"  # the voice's own clip: what a request that names no style is spoken with
# In an `if_match`: any existing version matches (HTTP's `If-Match: *`).
ANY_VERSION = "*"


class VoiceConsent(BaseModel):
    """The consent a voice's clips were given with (the whole record: `storage.consent`)."""

    id: str
    method: Literal["attested", "spoken"]
    given_at: datetime


class Take(BaseModel):
    """One clip of a voice and the transcript of exactly that clip."""

    sha256: str
    ref_text: str
    ref_text_source: str  # "user" or "asr"
    duration_s: float
    original_duration_s: float
    clipped: bool
    language: str | None = None
    created_at: datetime


class VoiceRecord(BaseModel):
    name: str
    ref_text: str
    ref_text_source: str  # "user" or "asr"
    language: str | None = None
    model: str | None = None  # the registry name it is spoken with when a request names no model
    duration_s: float
    original_duration_s: float
    clipped: bool
    sha256: str
    created_at: datetime
    updated_at: datetime | None = None
    consent: VoiceConsent | None = None  # dropped when a clip is replaced or a take added
    styles: dict[str, Take] = Field(default_factory=dict, description="Takes besides the voice's own clip "
                                    "(the 'default' style), by style name")
    lexicons: list[str] = Field(default_factory=list, description="Pronunciation lexicons it is spoken with")

    def style_names(self) -> list[str]:
        return [DEFAULT_STYLE, *sorted(self.styles)]

    def take(self, style: str | None) -> Take:
        """The take a request naming `style` is spoken with (None: the default), or a 400 naming
        the styles there are."""
        if style is None or style == DEFAULT_STYLE:
            return Take(**self.model_dump(include=set(Take.model_fields)))
        if style not in self.styles:
            raise BadRequest(f"Voice '{self.name}' has no style '{style}'; its styles are: "
                             f"{', '.join(self.style_names())}.", code="unknown_style", param="style")
        return self.styles[style]

    def clips(self) -> dict[str, str]:
        """Each take's sha256 by style, the default included: what consent was given for."""
        return {DEFAULT_STYLE: self.sha256, **{style: take.sha256 for style, take in self.styles.items()}}


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise BadRequest(
            "Voice names are 1-64 characters of letters, digits, '_' and '-'.", code="invalid_voice_name"
        )
    return name


def check_style(style: str) -> str:
    """A name a take can be stored under ('default' is the voice's own clip)."""
    if not STYLE_RE.fullmatch(style or ""):
        raise BadRequest("Style names are 1-32 characters of letters, digits, '_' and '-'.",
                         code="invalid_style_name", param="style")
    if style == DEFAULT_STYLE:
        raise BadRequest(f"'{DEFAULT_STYLE}' is the voice's own clip: replace it with POST /v1/voices and "
                         "overwrite=true, or name the take otherwise.", code="reserved_style_name", param="style")
    return style


def with_take(record: VoiceRecord, style: str, take: Take, *, overwrite: bool, max_styles: int) -> VoiceRecord:
    """`record` holding `take` as `style`, without consent (the consent was not given for that
    clip), or the 409 of `check_room`."""
    check_room(record, style, overwrite=overwrite, max_styles=max_styles)
    return record.model_copy(update={"styles": {**record.styles, style: take}, "consent": None,
                                     "updated_at": now()})


def check_room(record: VoiceRecord, style: str, *, overwrite: bool, max_styles: int) -> None:
    """A 409 if `record` has `style` and `overwrite` is off, or holds `max_styles` takes already."""
    if style in record.styles and not overwrite:
        raise Conflict(f"Voice '{record.name}' already has a style '{style}'; send overwrite=true to replace it.",
                       code="style_exists", param="style")
    if style not in record.styles and len(record.styles) >= max_styles:
        raise Conflict(f"Voice '{record.name}' holds {len(record.styles)} styles besides its own clip, the most "
                       "it may (limits.max_styles_per_voice); delete one first.", code="too_many_styles",
                       param="style")


def style_named_in(instructions: str, styles: Collection[str]) -> str | None:
    """The style whose name appears as a whole word in free-text `instructions` (OpenAI's field),
    case-insensitive: "Speak in a whisper" names "whisper". The longest such name wins, then the
    first to appear; None when none does."""
    found = []
    for style in styles:
        match = re.search(rf"(?<!\w){re.escape(style)}(?!\w)", instructions, re.IGNORECASE)
        if match:
            found.append((-len(style), match.start(), style))
    return min(found)[2] if found else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now() -> datetime:
    return datetime.now(timezone.utc)


def version(record: VoiceRecord) -> str:
    """The voice's ETag, quoted as HTTP sends it: it changes exactly when a clip, a transcript, its
    model, its takes or its lexicons do; consent and timestamps do not count. A voice with no takes
    and no lexicons keeps the ETag it had before voices could hold them."""
    parts: list = [record.sha256, record.ref_text, record.model]
    if record.styles or record.lexicons:
        parts += [{style: [take.sha256, take.ref_text, take.language] for style, take in sorted(record.styles.items())},
                  record.lexicons]
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return f'"{digest[:16]}"'


def check_version(name: str, record: VoiceRecord | None, if_match: Collection[str] | None) -> None:
    """Nothing when `if_match` is None or names `record`'s version (or ANY_VERSION); else 412 naming
    the current version, so the caller can read the voice again and decide."""
    if if_match is None:
        return
    if record is None:
        raise VersionMismatch(f"Voice '{name}' does not exist, so If-Match names none of its versions.")
    current = version(record)
    if ANY_VERSION not in if_match and current not in if_match:
        raise VersionMismatch(f"Voice '{name}' changed since it was read: its current ETag is {current}; "
                              "read it again and send that in If-Match.")

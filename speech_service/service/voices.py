"""Voice registration: the one place where a reference clip and its transcript are paired.

The rules of docs/ARCHITECTURE.md ("The invariant the product exists for") live here, for a voice's
own clip and each of its takes (styles) alike (`prepared_take`): the clip is prepared and
transcribed once, at upload; a supplied transcript is kept only when the clip was not shortened,
otherwise the clip itself is transcribed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection

import numpy as np

from speech_service.audio import encoding, preparation, uploads
from speech_service.config import LimitSettings
from speech_service.errors import BadRequest, Conflict, NotFound, Unprocessable
from speech_service.models import ModelRegistry
from speech_service.schemas import VoiceCreated, VoicePatch
from speech_service.storage.consent import ConsentStore
from speech_service.storage.jobs import JobStore
from speech_service.storage.voice_record import Take, check_room, check_style
from speech_service.storage.voices import VoiceRecord, VoiceStore, check_name, check_version, now, sha256

LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")  # ISO 639 codes, as Whisper names languages

Transcribe = Callable[[np.ndarray, "str | None"], Awaitable[str]]


def check_ref_text(text: str, duration_s: float, limits: LimitSettings) -> str:
    """A transcript plausible for a clip of `duration_s`, or a 422 saying why not."""
    text = " ".join(text.split())
    if not text:
        raise Unprocessable("ref_text is empty.", code="empty_ref_text", param="ref_text")
    rate = len(text) / duration_s
    if rate > limits.max_ref_chars_per_second:
        raise Unprocessable(
            f"ref_text has {len(text)} characters for {duration_s:.1f} s of audio ({rate:.0f}/s, at "
            f"most {limits.max_ref_chars_per_second:g}/s is plausible): it describes more than the clip.",
            code="implausible_ref_text", param="ref_text",
        )
    if rate < limits.min_ref_chars_per_second:
        raise Unprocessable(
            f"ref_text has {len(text)} characters for {duration_s:.1f} s of audio: too little for "
            "the clip; it describes less than what is spoken.",
            code="implausible_ref_text", param="ref_text",
        )
    return text


async def register_voice(store: VoiceStore, transcribe: Transcribe, limits: LimitSettings, *, name: str,
                         data: bytes, ref_text: str | None, language: str | None,
                         overwrite: bool, model: str | None = None,
                         if_match: Collection[str] | None = None) -> VoiceCreated:
    """`model`: the voice's model as a registry name (`ModelRegistry.canonical`), or None.
    `if_match`: replace only a version it names (checked here, before the clip is transcribed, and
    again by the store's write)."""
    check_name(name)
    check_language(language)
    if not overwrite or if_match is not None:
        current = await asyncio.to_thread(_current, store, name)  # S3 may be slow: off the event loop
        if current is not None and not overwrite:
            raise Conflict(f"Voice '{name}' already exists; send overwrite=true to replace it.",
                           code="voice_exists")
        check_version(name, current, if_match)
    take, wav, warnings = await prepared_take(transcribe, limits, data, ref_text, language)
    record = VoiceRecord(name=name, model=model, **take.model_dump())
    await asyncio.to_thread(store.put, record, wav, overwrite=overwrite, if_match=if_match)
    return VoiceCreated(**record.model_dump(), warnings=warnings)


async def add_style(store: VoiceStore, transcribe: Transcribe, limits: LimitSettings, *, name: str, style: str,
                    data: bytes, ref_text: str | None, language: str | None, overwrite: bool,
                    if_match: Collection[str] | None = None) -> VoiceCreated:
    """A take of voice `name` stored as `style`, under the same rules as the voice's own clip; its
    language is the voice's unless given. What would refuse it (no such voice, the style there
    without `overwrite`, too many styles, `if_match`) is checked before the clip is transcribed,
    and again by the store's write."""
    check_name(name)
    check_style(style)
    check_language(language)
    current = await asyncio.to_thread(store.get, name)
    check_version(name, current, if_match)
    check_room(current, style, overwrite=overwrite, max_styles=limits.max_styles_per_voice)
    take, wav, warnings = await prepared_take(transcribe, limits, data, ref_text, language or current.language)
    record = await asyncio.to_thread(store.put_take, name, style, take, wav, overwrite=overwrite,
                                     max_styles=limits.max_styles_per_voice, if_match=if_match)
    return VoiceCreated(**record.model_dump(), warnings=warnings)


def check_language(language: str | None) -> None:
    if language is not None and not LANGUAGE_RE.fullmatch(language):
        raise BadRequest(f"language must be an ISO 639 code such as 'en', not '{language}'.",
                         code="invalid_language", param="language")


async def prepared_take(transcribe: Transcribe, limits: LimitSettings, data: bytes, ref_text: str | None,
                        language: str | None) -> tuple[Take, bytes, list[str]]:
    """An upload as a take: the clip prepared once, and the transcript of exactly that clip (the
    supplied one only when the clip was not shortened, else the clip transcribed, once); its WAV
    bytes, and the warnings the caller is shown."""
    ref = await asyncio.to_thread(_prepare, data, limits)
    warnings: list[str] = []
    supplied = (ref_text or "").strip()
    if supplied and not ref.clipped:
        text, source = check_ref_text(supplied, ref.duration_s, limits), "user"
    else:
        if supplied:
            warnings.append(
                f"ref_text was replaced: it described the whole {ref.original_duration_s:.1f} s upload, "
                f"but the reference was clipped to {ref.duration_s:.1f} s, so the clip was transcribed."
            )
        text, source = " ".join((await transcribe(ref.audio, language)).split()), "asr"
        if not text:
            raise Unprocessable("No speech was recognised in the reference audio; send ref_text.",
                                code="no_speech_recognised")
    wav = encoding.to_wav_bytes(ref.audio)
    take = Take(sha256=sha256(wav), ref_text=text, ref_text_source=source, language=language,
                duration_s=round(ref.duration_s, 3), original_duration_s=round(ref.original_duration_s, 3),
                clipped=ref.clipped, created_at=now())
    return take, wav, warnings


def _prepare(data: bytes, limits: LimitSettings) -> preparation.PreparedReference:
    decoded = uploads.decode(data, max_seconds=limits.max_reference_seconds,
                             timeout_s=limits.decode_timeout_s)
    return preparation.prepare_reference(decoded, max_clip_s=limits.max_clip_seconds,
                                         min_s=limits.min_reference_seconds)


def patch_voice(store: VoiceStore, limits: LimitSettings, name: str, patch: VoicePatch,
                models: ModelRegistry, if_match: Collection[str] | None = None) -> VoiceRecord:
    """A corrected transcript (checked against the clip the record has when written), the model
    and/or the lexicons the voice is spoken with; the consent stays (blocking: call in a thread). With
    `if_match`, only onto a version it names: a fix written for one clip never lands on another."""
    update: dict = {}
    if "model" in patch.model_fields_set:
        update["model"] = models.canonical(patch.model) if patch.model is not None else None
    if "lexicons" in patch.model_fields_set:
        update["lexicons"] = patch.lexicons or []

    def patched(record: VoiceRecord) -> VoiceRecord:
        changes = dict(update, updated_at=now())
        if patch.ref_text is not None:
            changes.update(ref_text=check_ref_text(patch.ref_text, record.duration_s, limits), ref_text_source="user")
        return record.model_copy(update=changes)

    return store.update(check_name(name), patched, if_match=if_match)


def delete_voice(store: VoiceStore, jobs: JobStore, consents: ConsentStore, name: str,
                 if_match: Collection[str] | None = None) -> None:
    """The voice's clip and transcript, then the jobs made with it (their audio is its voice);
    its consent records stay, redacted to hashes (blocking: call in a thread). A retry after a
    lost answer finds the voice gone (404) but still finishes the rest; a voice that stays (a
    failed `if_match`, the store unavailable) keeps its jobs and consents as they are."""
    try:
        store.delete(check_name(name), if_match=if_match)
    except NotFound:
        _remove_what_was_made_with(jobs, consents, name)
        raise
    _remove_what_was_made_with(jobs, consents, name)


def _remove_what_was_made_with(jobs: JobStore, consents: ConsentStore, name: str) -> None:
    for job_id in jobs.ids():
        try:
            if jobs.get(job_id).request.voice == name and jobs.cancel_or_remove(job_id) is not None:
                jobs.remove(job_id)  # it was running: cancelled, then gone with whatever it made
        except NotFound:
            continue
    consents.redact_voice(name)


def _current(store: VoiceStore, name: str) -> VoiceRecord | None:
    try:
        return store.get(name)
    except NotFound:
        return None

"""Consent on voices: given `attested` (the uploader states it) or `spoken` (the speaker reads a
random challenge phrase, which the Transcriber must hear within `consent.max_wer`), and required
before synthesis at the operator's `require_consent` level. docs/ARCHITECTURE.md, "Consent"."""

from __future__ import annotations

import asyncio
import secrets

import numpy as np

from speech_service.audio import uploads
from speech_service.config import ConsentSettings, LimitSettings, RequiredConsent
from speech_service.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from speech_service.service.voices import Transcribe
from speech_service.storage.consent import NO_SPEAKER_MODEL, Challenge, ConsentRecord, ConsentStore, Method
from speech_service.storage.voices import VoiceConsent, VoiceRecord, VoiceStore, sha256
from speech_service.text.words import word_error_rate

LEVELS = {"none": 0, "attested": 1, "spoken": 2}
# A phrase is two clauses of random words ("The quiet tiger painted the golden window, and ..."):
# a sentence is heard far better than a word list, and about 2**35 phrases can be asked for, so a
# recording made earlier cannot hold the one issued. Words Whisper mistook in tests are left out.
ADJECTIVES = "red green blue yellow quiet happy little heavy golden silver sleepy clever tiny".split()
NOUNS = ("rabbit tiger candle window garden river rocket pencil castle monkey dragon button "
         "mountain teacher farmer").split()
VERBS = "found painted washed opened pushed".split()
DEFAULT_STATEMENT = "I consent to this service making speech in my voice."


def new_phrase() -> str:
    pick = secrets.SystemRandom().choice

    def clause() -> str:
        return f"the {pick(ADJECTIVES)} {pick(NOUNS)} {pick(VERBS)} the {pick(ADJECTIVES)} {pick(NOUNS)}"

    return f"{clause().capitalize()}, and {clause()}."


def check_consent(record: VoiceRecord, required: RequiredConsent) -> None:
    """A 403 naming what is missing when `record`'s consent is below the `required` level."""
    have = record.consent.method if record.consent else None
    if LEVELS[have or "none"] >= LEVELS[required]:
        return
    how = ("the speaker reading a challenge phrase: POST /v1/voices/{name}/consent/challenge, then "
           "POST /v1/voices/{name}/consent with method=spoken" if required == "spoken" else
           "POST /v1/voices/{name}/consent").format(name=record.name)
    has = f"only {have} consent" if have else "no consent record"
    raise Forbidden(f"Voice '{record.name}' has {has}; this service speaks only voices with {required} "
                    f"consent. Give it with {how}.", code="consent_required", param="voice")


class ConsentDesk:
    """Issues challenges and records consent, against the voice store and the Transcriber."""

    def __init__(self, voices: VoiceStore, consents: ConsentStore, settings: ConsentSettings, limits: LimitSettings):
        self.voices, self.consents = voices, consents
        self.settings, self.limits = settings, limits

    def challenge(self, voice: str) -> Challenge:
        """A fresh phrase for `voice`'s speaker to read (blocking: call in a thread)."""
        self.voices.get(voice)  # 404 for no such voice
        self.consents.sweep()  # the ones that expired (at most hourly)
        return self.consents.issue(voice, new_phrase(), self.settings.challenge_ttl_s)

    async def give(self, voice: str, transcribe: Transcribe, *, method: Method, given_by: str,
                   statement: str | None, challenge_id: str | None, recording: bytes | None,
                   key: str | None) -> ConsentRecord:
        given_by, statement = _text(given_by, "given_by", 200), _text(statement or DEFAULT_STATEMENT, "statement", 2000)
        current = await asyncio.to_thread(self.voices.get, voice)
        record = ConsentRecord(id=self.consents.new_id(), voice=voice, method=method, given_by=given_by,
                               statement=statement, given_at=self.consents.now(), recorded_by=key,
                               voice_sha256=current.sha256)
        if method == "spoken":
            record = await self._heard(record, transcribe, challenge_id, recording)
        elif challenge_id or recording:
            raise BadRequest("An attested consent takes no challenge_id or recording; send method=spoken.",
                             code="unexpected_recording", param="method")
        await asyncio.to_thread(self._store_and_name, record, current.clips())
        if challenge_id:
            await asyncio.to_thread(self.consents.forget, challenge_id)
        return record

    def _store_and_name(self, record: ConsentRecord, clips: dict[str, str]) -> None:
        """The record first, then the voice's record naming it (a conditional write): a voice never
        names a record that is not there. A record its voice does not name once the naming has
        failed (the voice was deleted or its clip replaced meanwhile) is removed here, since a
        delete's redaction may have listed the records before it landed; so the only records left
        of a deleted voice are ones it named, stored before its record went, which its redaction
        finds (docs/ARCHITECTURE.md, "Consent")."""
        self.consents.put(record)
        try:
            self.voices.update(record.voice, lambda current: self._naming(current, record, clips))
        except Exception:
            if not self._named(record):
                self.consents.discard(record)
            raise

    def _named(self, record: ConsentRecord) -> bool:
        try:
            current = self.voices.get(record.voice)
        except NotFound:
            return False
        return current.consent is not None and current.consent.id == record.id

    async def _heard(self, record: ConsentRecord, transcribe: Transcribe, challenge_id: str | None,
                     recording: bytes | None) -> ConsentRecord:
        if not challenge_id or not recording:
            raise BadRequest("A spoken consent needs challenge_id and the recording (file) of its phrase read aloud.",
                             code="recording_required", param="file" if challenge_id else "challenge_id")
        await asyncio.to_thread(self.consents.challenge, challenge_id, record.voice)  # its 404 or 409 before decoding
        decoded = await asyncio.to_thread(uploads.decode, recording, max_seconds=self.settings.max_recording_s,
                                          timeout_s=self.limits.decode_timeout_s)
        # Taken before it is heard: one answer per phrase, so a phrase cannot be tried again and again.
        challenge = await asyncio.to_thread(self.consents.take, challenge_id, record.voice)
        heard = " ".join((await transcribe(np.asarray(decoded, dtype=np.float32), "en")).split())
        wer = word_error_rate(challenge.phrase, heard)
        if wer > self.settings.max_wer:
            raise Unprocessable(
                f"The recording does not say the challenge phrase: heard {heard[:200]!r} for "
                f"{challenge.phrase!r} (word error rate {wer:.2f}, at most {self.settings.max_wer:g}). The "
                f"challenge is used up: ask for a new one (POST /v1/voices/{record.voice}/consent/challenge).",
                code="consent_not_spoken", param="file")
        return record.model_copy(update={"challenge": challenge.phrase, "heard": heard, "wer": round(wer, 4),
                                         "recording_sha256": sha256(recording), "note": NO_SPEAKER_MODEL})

    @staticmethod
    def _naming(current: VoiceRecord, consent: ConsentRecord, clips: dict[str, str]) -> VoiceRecord:
        if current.sha256 != consent.voice_sha256 or current.clips() != clips:  # a clip or take replaced or added
            raise Conflict(f"Voice '{current.name}' was replaced while its consent was given; give it again "
                           "for the new clip.", code="voice_changing")
        return current.model_copy(update={"consent": VoiceConsent(id=consent.id, method=consent.method,
                                                                  given_at=consent.given_at)})


def _text(value: str, param: str, limit: int) -> str:
    value = " ".join((value or "").split())
    if not value or len(value) > limit:
        raise BadRequest(f"{param} must be 1-{limit} characters.", code=f"invalid_{param}", param=param)
    return value

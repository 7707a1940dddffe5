"""Consent records and the challenge phrases of spoken consent; docs/ARCHITECTURE.md, "Consent".

    consent/records/{voice}/{id}.json       one per consent given; outlives the voice, redacted to
                                            hashes when the voice is deleted
    consent/challenges/{id}.json            a phrase issued for a voice, until used or expired

A voice's record names its current consent (`VoiceRecord.consent`); a replaced clip drops it, since
the consent was given for the clip it replaced.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from speech_service.errors import NotFound
from speech_service.storage.objects import ObjectStore
from speech_service.storage.voices import check_name, sha256

RECORDS = "consent/records/"
CHALLENGES = "consent/challenges/"
Method = Literal["attested", "spoken"]
SWEEP_EVERY_S = 3600.0  # a read already refuses an expired challenge: the sweep only frees the space
NO_SPEAKER_MODEL = ("The speaker's identity was not compared with the voice's reference clip: no speaker model "
                    "is configured. The recording shows that someone read the challenge phrase, not who.")


class ConsentRecord(BaseModel):
    id: str
    voice: str
    method: Method
    given_by: str  # who consented: the person whose voice it is
    statement: str
    given_at: datetime
    recorded_by: str | None  # the key that recorded it
    voice_sha256: str  # the clip it was given for
    # Spoken consent: the phrase issued, what the Transcriber heard, its word error rate.
    challenge: str | None = None
    heard: str | None = None
    wer: float | None = None
    recording_sha256: str | None = None
    identity_checked: bool = False
    note: str | None = None
    # Set when the voice was deleted: every text above replaced by its sha256 ("sha256:<hex>").
    redacted_at: datetime | None = None


class Challenge(BaseModel):
    id: str
    voice: str
    phrase: str
    expires_at: datetime


def redacted(record: ConsentRecord, at: datetime) -> ConsentRecord:
    """The record with nothing of the person left but hashes."""
    def hashed(text: str | None) -> str | None:
        return None if text is None or text.startswith("sha256:") else f"sha256:{sha256(text.encode())}"

    return record.model_copy(update={"given_by": hashed(record.given_by), "statement": hashed(record.statement),
                                     "challenge": hashed(record.challenge), "heard": hashed(record.heard),
                                     "redacted_at": record.redacted_at or at})


class ConsentStore:
    def __init__(self, objects: ObjectStore, clock: Callable[[], float] = time.time):
        self.objects, self.clock = objects, clock
        self._next_sweep = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    # -- challenges ----------------------------------------------------------------------------

    def issue(self, voice: str, phrase: str, ttl_s: float) -> Challenge:
        challenge = Challenge(id=f"chl_{secrets.token_hex(12)}", voice=check_name(voice), phrase=phrase,
                              expires_at=datetime.fromtimestamp(self.clock() + ttl_s, timezone.utc))
        self.objects.put(f"{CHALLENGES}{challenge.id}.json", challenge.model_dump_json().encode(), if_none_match=True)
        return challenge

    def challenge(self, challenge_id: str, voice: str) -> Challenge:
        """The live challenge `challenge_id` issued for `voice`; 404 for any other (expired ones are removed)."""
        missing = NotFound(f"No live consent challenge '{challenge_id}' for voice '{voice}': ask for a new one "
                           f"(POST /v1/voices/{voice}/consent/challenge).", code="challenge_not_found",
                           param="challenge_id")
        if not challenge_id.startswith("chl_") or not challenge_id[4:].isalnum():
            raise missing
        try:
            found = Challenge.model_validate_json(self.objects.get(f"{CHALLENGES}{challenge_id}.json").data)
        except KeyError:
            raise missing from None
        if found.expires_at <= self.now():
            self.objects.delete(f"{CHALLENGES}{challenge_id}.json")
            raise missing
        if found.voice != voice:
            raise missing
        return found

    def used(self, challenge_id: str) -> None:
        self.objects.delete(f"{CHALLENGES}{challenge_id}.json")

    def sweep(self) -> int:
        """Remove expired challenges, at most once per SWEEP_EVERY_S (it reads them all); returns how many."""
        if self.clock() < self._next_sweep:
            return 0
        self._next_sweep = self.clock() + SWEEP_EVERY_S
        removed = 0
        for key in self.objects.list(CHALLENGES):
            try:
                found = Challenge.model_validate_json(self.objects.get(key).data)
            except KeyError:
                continue
            if found.expires_at <= self.now():
                self.objects.delete(key)
                removed += 1
        return removed

    # -- records -------------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return f"cns_{secrets.token_hex(12)}"

    def put(self, record: ConsentRecord) -> None:
        self.objects.put(self._key(record.voice, record.id), record.model_dump_json(indent=2).encode(),
                         if_none_match=True)

    def get(self, voice: str, consent_id: str) -> ConsentRecord:
        try:
            return ConsentRecord.model_validate_json(self.objects.get(self._key(voice, consent_id)).data)
        except KeyError:
            raise NotFound(f"Voice '{voice}' has no consent record '{consent_id}'.",
                           code="consent_not_found") from None

    def of_voice(self, voice: str) -> list[ConsentRecord]:
        records = []
        for key in self.objects.list(f"{RECORDS}{check_name(voice)}/"):
            try:
                records.append(ConsentRecord.model_validate_json(self.objects.get(key).data))
            except KeyError:
                continue
        return sorted(records, key=lambda r: r.given_at)

    def redact_voice(self, voice: str) -> int:
        """Every consent record of `voice` reduced to hashes (the voice was deleted); returns how many."""
        count = 0
        for record in self.of_voice(voice):
            if record.redacted_at is None:
                self.objects.put(self._key(voice, record.id), redacted(record, self.now()).model_dump_json(
                    indent=2).encode())
                count += 1
        return count

    @staticmethod
    def _key(voice: str, consent_id: str) -> str:
        return f"{RECORDS}{check_name(voice)}/{consent_id}.json"

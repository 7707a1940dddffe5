"""Consent records and the challenge phrases of spoken consent; docs/ARCHITECTURE.md, "Consent".

    consent/records/{voice}/{id}.json       one per consent given; outlives the voice, redacted to
                                            hashes when the voice is deleted
    consent/challenges/{id}.json            a phrase issued for a voice, until its consent is recorded
                                            or it expires; marked answered (`answered_at`) by the one
                                            answer that took it

A voice's record names its current consent (`VoiceRecord.consent`); a replaced clip drops it, since
the consent was given for the clip it replaced.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from speech_service.errors import Conflict, NotFound, StoreUnavailable
from speech_service.storage.objects import ObjectStore, PreconditionFailed
from speech_service.storage.voices import check_name, sha256

logger = logging.getLogger(__name__)

RECORDS = "consent/records/"
CHALLENGES = "consent/challenges/"
Method = Literal["attested", "spoken"]
ANSWERED_AT = "answered_at"  # in a challenge's stored document only: the API's `Challenge` has no such field
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
        self.objects.put(_challenge_key(challenge.id), challenge.model_dump_json().encode(), if_none_match=True)
        return challenge

    def challenge(self, challenge_id: str, voice: str) -> Challenge:
        """The live, unanswered challenge `challenge_id` issued for `voice`: 404 for any other (expired
        ones are removed), 409 `challenge_used` for one answered already."""
        return self._unanswered(challenge_id, voice)[0]

    def take(self, challenge_id: str, voice: str) -> Challenge:
        """The challenge, answered by this call alone: marked answered by a rewrite conditional on the
        version read, which exactly one of any answers at once wins (409 `challenge_used` for the
        others and every later one). It stays answered whatever the answer's outcome: removed once its
        consent is recorded (`forget`), else at its expiry."""
        challenge, etag = self._unanswered(challenge_id, voice)
        document = {**challenge.model_dump(mode="json"), ANSWERED_AT: self.now().isoformat()}
        try:
            self.objects.put(_challenge_key(challenge_id), json.dumps(document).encode(), if_match=etag)
        except PreconditionFailed:  # another answer took it first (ids are never issued twice)
            raise _used(challenge_id, voice) from None
        return challenge

    def forget(self, challenge_id: str) -> None:
        """Remove a challenge whose answer was recorded; should the store fail now, the sweep removes
        it at its expiry (taken, it answers nothing meanwhile)."""
        try:
            self.objects.delete(_challenge_key(challenge_id))
        except StoreUnavailable as exc:
            logger.warning("left answered challenge %s behind: %s", challenge_id, exc.message)

    def _unanswered(self, challenge_id: str, voice: str) -> tuple[Challenge, str]:
        """The challenge and the etag of its stored version."""
        missing = NotFound(f"No live consent challenge '{challenge_id}' for voice '{voice}': ask for a new one "
                           f"(POST /v1/voices/{voice}/consent/challenge).", code="challenge_not_found",
                           param="challenge_id")
        if not challenge_id.startswith("chl_") or not challenge_id[4:].isalnum():
            raise missing
        try:
            stored = self.objects.get(_challenge_key(challenge_id))
        except KeyError:
            raise missing from None
        document = json.loads(stored.data)
        found = Challenge.model_validate(document)
        if found.expires_at <= self.now():
            self.objects.delete(_challenge_key(challenge_id))
            raise missing
        if found.voice != voice:
            raise missing
        if document.get(ANSWERED_AT):
            raise _used(challenge_id, voice)
        return found, stored.etag

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

    def discard(self, record: ConsentRecord) -> None:
        """Remove a record its voice never named: it records no consent (see `ConsentDesk.give`)."""
        self.objects.delete(self._key(record.voice, record.id))

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


def _challenge_key(challenge_id: str) -> str:
    return f"{CHALLENGES}{challenge_id}.json"


def _used(challenge_id: str, voice: str) -> Conflict:
    return Conflict(f"Consent challenge '{challenge_id}' was answered already; each phrase answers once. Ask for a "
                    f"new one (POST /v1/voices/{voice}/consent/challenge).", code="challenge_used",
                    param="challenge_id")

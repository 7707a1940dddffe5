"""Voice store on an `ObjectStore` (a directory or an S3 bucket; one implementation for both).

Layout: `voices/{name}/reference-{sha256[:16]}-{write id}.wav` (the clip), then
`voices/{name}/voice.json` (the record, written last and conditionally). A voice exists only when
its record does; the record names its clip and carries the clip's sha256, so a reader never pairs a
transcript with audio it was not made for. Write ordering is in docs/ARCHITECTURE.md, "Voice store".

Each write puts its clip under a key of its own (content hash plus a write id): two writers of the
same audio never share a key, so the old clip a record switch replaced can be deleted without
taking away a clip that another writer has put and is about to name in its record.

A voice's version (`version`, its HTTP ETag) is a hash of its clip's sha256, its transcript and its
model. A replace, a PATCH or a delete given `if_match` compares it with the record it is about to
replace, on every try of its conditional write, so a record switched meanwhile fails the condition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from speech_service.config import StoreSettings
from speech_service.errors import BadRequest, Conflict, NotFound, StoreUnavailable, VersionMismatch
from speech_service.storage.objects import ObjectStore, PreconditionFailed, open_object_store

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A replace or PATCH that keeps losing its conditional write to other writers gives up after this
# many tries (each try is one read and one write; two writers settle in one or two).
MAX_WRITE_TRIES = 20
# How many times `reference` re-reads a record whose clip vanished (replaced between the reads).
MAX_READ_TRIES = 10
# In an `if_match`: any existing version matches (HTTP's `If-Match: *`).
ANY_VERSION = "*"


class VoiceConsent(BaseModel):
    """The consent a voice's clip was given with (the whole record: `storage.consent`)."""

    id: str
    method: Literal["attested", "spoken"]
    given_at: datetime


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
    consent: VoiceConsent | None = None  # dropped when the clip is replaced


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise BadRequest(
            "Voice names are 1-64 characters of letters, digits, '_' and '-'.", code="invalid_voice_name"
        )
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now() -> datetime:
    return datetime.now(timezone.utc)


def record_key(name: str) -> str:
    return f"voices/{check_name(name)}/voice.json"


def new_clip_key(name: str, digest: str) -> str:
    return f"voices/{check_name(name)}/reference-{digest[:16]}-{secrets.token_hex(4)}.wav"


def version(record: VoiceRecord) -> str:
    """The voice's ETag, quoted as HTTP sends it: it changes exactly when its clip, its transcript or
    its model does (what a transcript fix is written for); consent and timestamps do not count."""
    digest = hashlib.sha256(json.dumps([record.sha256, record.ref_text, record.model]).encode()).hexdigest()
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


class _Stored:
    """A record as read, with the clip key it names and the etag a conditional replace needs."""

    def __init__(self, record: VoiceRecord, clip: str, etag: str):
        self.record, self.clip, self.etag = record, clip, etag


def _document(record: VoiceRecord, clip: str) -> bytes:
    return json.dumps({**record.model_dump(mode="json"), "clip": clip}, indent=2).encode()


def _voice_exists(name: str) -> Conflict:
    return Conflict(f"Voice '{name}' already exists; send overwrite=true to replace it.", code="voice_exists")


def _voice_changing(name: str) -> Conflict:
    return Conflict(f"Voice '{name}' is being replaced; try again.", code="voice_changing")


class VoiceStore:
    def __init__(self, objects: ObjectStore):
        self.objects = objects

    # -- reads ---------------------------------------------------------------------------------

    def _read(self, name: str) -> _Stored | None:
        try:
            stored = self.objects.get(record_key(name))
        except KeyError:
            return None
        document = json.loads(stored.data)
        # Records written before clips were content-addressed name no clip: theirs is reference.wav.
        clip = document.pop("clip", f"voices/{name}/reference.wav")
        return _Stored(VoiceRecord.model_validate(document), clip, stored.etag)

    def _read_existing(self, name: str) -> _Stored:
        stored = self._read(name)
        if stored is None:
            raise NotFound(f"Voice '{name}' does not exist.", code="voice_not_found")
        return stored

    def get(self, name: str) -> VoiceRecord:
        return self._read_existing(name).record

    def reference(self, name: str) -> tuple[VoiceRecord, bytes]:
        """The record and the exact clip it describes. A clip that vanished between the two reads
        was replaced meanwhile: the record is read again (the new one names the new clip)."""
        for attempt in range(MAX_READ_TRIES):
            stored = self._read_existing(name)
            try:
                data = self.objects.get(stored.clip).data
            except KeyError:
                time.sleep(0.01 * attempt)
                continue
            if sha256(data) != stored.record.sha256:  # written by hand, or a store that lost data
                logger.error("voice %s: clip %s does not match its record's sha256", name, stored.clip)
                break
            return stored.record, data
        raise _voice_changing(name)

    def names(self) -> list[str]:
        """The voices' names, from the store's keys alone: no record is read."""
        keys = (key.split("/") for key in self.objects.list("voices/"))
        return sorted(parts[1] for parts in keys if len(parts) == 3 and parts[2] == "voice.json")

    def list(self) -> list[VoiceRecord]:
        records = []
        for name in self.names():
            stored = self._read(name)
            if stored is not None:  # not deleted meanwhile
                records.append(stored.record)
        return records

    # -- writes --------------------------------------------------------------------------------

    def put(self, record: VoiceRecord, reference_wav: bytes, *, overwrite: bool,
            if_match: Collection[str] | None = None) -> None:
        """Store a voice: its clip first, under a key of this write's own, then the record naming
        it, conditionally (create: only if absent; replace: only the version read, and with
        `if_match` only one of the versions it names). The clip the record used to name is deleted
        once the record has switched, and no other clip ever is."""
        name = record.name
        clip = replaced = None
        for _ in range(MAX_WRITE_TRIES):
            current = self._read(name) if overwrite or clip or if_match is not None else None
            if clip is not None:
                if current is not None and current.clip == clip:
                    # Our last write landed though its answer was lost (the client's retry found
                    # its own write there and was refused).
                    if replaced is not None:
                        self._delete_quietly(replaced)
                    return
                # A clip that a landed-then-replaced write of ours named may be deleted by its
                # replacer at any time: never name it again, take a fresh key.
                self._delete_quietly(clip)
                if not overwrite:
                    raise _voice_exists(name)
            elif current is not None and not overwrite:
                raise _voice_exists(name)
            check_version(name, current.record if current is not None else None, if_match)
            clip = new_clip_key(name, record.sha256)
            replaced = current.clip if current is not None else None
            self.objects.put(clip, reference_wav)
            try:
                if current is None:
                    self.objects.put(record_key(name), _document(record, clip), if_none_match=True)
                else:
                    self.objects.put(record_key(name), _document(record, clip), if_match=current.etag)
            except PreconditionFailed:
                continue  # another writer got there first: read what it wrote
            if replaced is not None:
                self._delete_quietly(replaced)  # the clip our own switch replaced
            return
        self._delete_quietly(clip)
        raise _voice_changing(name)

    def _delete_quietly(self, key: str) -> None:
        """Remove a clip no record names; should the store fail now, the clip stays as litter, which
        no reader ever sees (a voice is its record), rather than failing a write that succeeded."""
        try:
            self.objects.delete(key)
        except StoreUnavailable as exc:
            logger.warning("left unreferenced %s behind: %s", key, exc.message)

    def update(self, name: str, change: Callable[[VoiceRecord], VoiceRecord], *,
               if_match: Collection[str] | None = None) -> VoiceRecord:
        """Replace the record with `change(record)`, keeping its clip; `change` runs again on the
        newer record when another writer got there first, once that record passes `if_match`."""
        for _ in range(MAX_WRITE_TRIES):
            current = self._read_existing(name)
            check_version(name, current.record, if_match)
            updated = change(current.record)
            try:
                self.objects.put(record_key(name), _document(updated, current.clip), if_match=current.etag)
                return updated
            except PreconditionFailed:
                continue
        raise _voice_changing(name)

    def delete(self, name: str, *, if_match: Collection[str] | None = None) -> None:
        """The record first (the voice is gone from then on), then its clip. `if_match` is checked
        against the record read just before: the object store has no conditional delete, so a
        replace landing between that read and the delete is deleted with it (as without if_match)."""
        stored = self._read_existing(name)
        check_version(name, stored.record, if_match)
        self.objects.delete(record_key(name))
        self._delete_quietly(stored.clip)


def open_store(settings: StoreSettings) -> VoiceStore:
    return VoiceStore(open_object_store(settings))

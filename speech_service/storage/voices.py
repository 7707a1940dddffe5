"""Voice store on an `ObjectStore` (a directory or an S3 bucket; one implementation for both).

Layout: `voices/{name}/reference-{sha256[:16]}-{write id}.wav` (the clip), each take's
`voices/{name}/take-{style}-{sha256[:16]}-{write id}.wav`, then `voices/{name}/voice.json` (the
record, written last and conditionally). A voice exists only when its record does; the record names
its clips and carries each one's sha256, so a reader never pairs a transcript with audio it was not
made for. Write ordering is in docs/ARCHITECTURE.md, "Voice store".

Each write puts its clip under a key of its own (content hash plus a write id): two writers of the
same audio never share a key, so the old clip a record switch replaced can be deleted without
taking away a clip that another writer has put and is about to name in its record.

A replace, a PATCH, a take's write or a delete given `if_match` compares the voice's `version` with
the record it is about to replace, on every try of its conditional write, so a record switched
meanwhile fails the condition.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Collection

from speech_service.config import StoreSettings
from speech_service.errors import Conflict, NotFound, StoreUnavailable
from speech_service.storage.objects import ObjectStore, PreconditionFailed, open_object_store
from speech_service.storage.voice_record import (
    ANY_VERSION,
    DEFAULT_STYLE,
    NAME_RE,
    Take,
    VoiceConsent,
    VoiceRecord,
    check_name,
    check_style,
    check_version,
    now,
    sha256,
    version,
    with_take,
)

# The record's names, where callers have always imported them from.
__all__ = ["ANY_VERSION", "DEFAULT_STYLE", "NAME_RE", "Take", "VoiceConsent", "VoiceRecord", "VoiceStore",
           "check_name", "check_version", "now", "open_store", "sha256", "version"]

logger = logging.getLogger(__name__)

# A replace or PATCH that keeps losing its conditional write to other writers gives up after this
# many tries (each try is one read and one write; two writers settle in one or two).
MAX_WRITE_TRIES = 20
# How many times `reference` re-reads a record whose clip vanished (replaced between the reads).
MAX_READ_TRIES = 10


def record_key(name: str) -> str:
    return f"voices/{check_name(name)}/voice.json"


def new_clip_key(name: str, digest: str) -> str:
    return f"voices/{check_name(name)}/reference-{digest[:16]}-{secrets.token_hex(4)}.wav"


def new_take_key(name: str, style: str, digest: str) -> str:
    return f"voices/{check_name(name)}/take-{check_style(style)}-{digest[:16]}-{secrets.token_hex(4)}.wav"


class _Stored:
    """A record as read, with the clip keys it names (its own, and each take's by style) and the
    etag a conditional replace needs."""

    def __init__(self, record: VoiceRecord, clip: str, takes: dict[str, str], etag: str):
        self.record, self.clip, self.takes, self.etag = record, clip, takes, etag

    def clip_of(self, style: str | None) -> str:
        return self.clip if style is None or style == DEFAULT_STYLE else self.takes[style]


def _document(record: VoiceRecord, clip: str, takes: dict[str, str]) -> bytes:
    document = {**record.model_dump(mode="json"), "clip": clip}
    if record.styles:  # a voice without takes is written as it was before takes
        document["take_clips"] = {style: takes[style] for style in record.styles}
    return json.dumps(document, indent=2).encode()


def _voice_exists(name: str) -> Conflict:
    return Conflict(f"Voice '{name}' already exists; send overwrite=true to replace it.", code="voice_exists")


def _style_not_found(record: VoiceRecord, style: str) -> NotFound:
    return NotFound(f"Voice '{record.name}' has no style '{style}'; its styles are: {', '.join(record.style_names())}.",
                    code="style_not_found", param="style")


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
        takes = document.pop("take_clips", {})
        return _Stored(VoiceRecord.model_validate(document), clip, takes, stored.etag)

    def _read_existing(self, name: str) -> _Stored:
        stored = self._read(name)
        if stored is None:
            raise NotFound(f"Voice '{name}' does not exist.", code="voice_not_found")
        return stored

    def get(self, name: str) -> VoiceRecord:
        return self._read_existing(name).record

    def reference(self, name: str, style: str | None = None) -> tuple[VoiceRecord, bytes]:
        """The record and the exact clip of its take `style` (None: its own clip), the one
        `record.take(style)` describes; 400 `unknown_style` naming its styles for a style it lacks.
        A clip that vanished between the two reads was replaced meanwhile: the record is read again
        (the new one names the new clip)."""
        for attempt in range(MAX_READ_TRIES):
            stored = self._read_existing(name)
            take = stored.record.take(style)
            try:
                data = self.objects.get(stored.clip_of(style)).data
            except KeyError:
                time.sleep(0.01 * attempt)
                continue
            if sha256(data) != take.sha256:  # written by hand, or a store that lost data
                logger.error("voice %s: clip %s does not match its record's sha256", name, stored.clip_of(style))
                break
            return stored.record, data
        raise _voice_changing(name)

    def take_clip(self, name: str, style: str) -> bytes:
        """The clip of take `style` ('default': the voice's own) as its path serves it: 404
        `style_not_found` for a style the voice lacks (a request's `style` is 400, `reference`)."""
        record = self.get(name)
        if style != DEFAULT_STYLE and style not in record.styles:
            raise _style_not_found(record, style)
        return self.reference(name, style)[1]

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
        `if_match` only one of the versions it names). A replaced voice's clips (its own and its
        takes') are deleted once the record has switched, and no other clip ever is."""
        name = record.name
        clip, replaced = None, []
        for _ in range(MAX_WRITE_TRIES):
            current = self._read(name) if overwrite or clip or if_match is not None else None
            if clip is not None:
                if current is not None and current.clip == clip:
                    # Our last write landed though its answer was lost (the client's retry found
                    # its own write there and was refused).
                    self._delete_all_quietly(replaced)
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
            replaced = [current.clip, *current.takes.values()] if current is not None else []
            self.objects.put(clip, reference_wav)
            try:
                if current is None:
                    self.objects.put(record_key(name), _document(record, clip, {}), if_none_match=True)
                else:
                    self.objects.put(record_key(name), _document(record, clip, {}), if_match=current.etag)
            except PreconditionFailed:
                continue  # another writer got there first: read what it wrote
            self._delete_all_quietly(replaced)  # the clips our own switch replaced
            return
        self._delete_quietly(clip)
        raise _voice_changing(name)

    def put_take(self, name: str, style: str, take: Take, wav: bytes, *, overwrite: bool, max_styles: int,
                 if_match: Collection[str] | None = None) -> VoiceRecord:
        """Store a take of an existing voice as `style`: its clip first, under a key of this write's
        own, then the record naming it, conditionally on the version read (and with `if_match` on
        one it names); the clip of a take it replaced is deleted once the record has switched.
        The record is written without consent (`with_take`)."""
        clip = replaced = None
        for _ in range(MAX_WRITE_TRIES):
            current = self._read_existing(name)
            if clip is not None:
                if current.takes.get(style) == clip:  # our last write landed, its answer lost
                    self._delete_all_quietly([replaced] if replaced else [])
                    return current.record
                self._delete_quietly(clip)  # as in `put`: a fresh key for each try
            check_version(name, current.record, if_match)
            updated = with_take(current.record, style, take, overwrite=overwrite, max_styles=max_styles)
            clip, replaced = new_take_key(name, style, take.sha256), current.takes.get(style)
            self.objects.put(clip, wav)
            try:
                self.objects.put(record_key(name), _document(updated, current.clip, {**current.takes, style: clip}),
                                 if_match=current.etag)
            except PreconditionFailed:
                continue
            self._delete_all_quietly([replaced] if replaced else [])
            return updated
        self._delete_quietly(clip)
        raise _voice_changing(name)

    def delete_take(self, name: str, style: str, *, if_match: Collection[str] | None = None) -> VoiceRecord:
        """The record without take `style` (conditionally, as `update`), then that take's clip."""
        check_style(style)  # 'default' is the voice's own clip: it goes with the voice
        for _ in range(MAX_WRITE_TRIES):
            current = self._read_existing(name)
            check_version(name, current.record, if_match)
            if style not in current.record.styles:
                raise _style_not_found(current.record, style)
            styles = {other: take for other, take in current.record.styles.items() if other != style}
            updated = current.record.model_copy(update={"styles": styles, "updated_at": now()})
            try:
                self.objects.put(record_key(name), _document(updated, current.clip, current.takes),
                                 if_match=current.etag)
            except PreconditionFailed:
                continue
            self._delete_quietly(current.takes[style])  # the record no longer names it
            return updated
        raise _voice_changing(name)

    def _delete_all_quietly(self, keys: Collection[str]) -> None:
        for key in keys:
            self._delete_quietly(key)

    def _delete_quietly(self, key: str) -> None:
        """Remove a clip no record names; should the store fail now, the clip stays as litter, which
        no reader ever sees (a voice is its record), rather than failing a write that succeeded."""
        try:
            self.objects.delete(key)
        except StoreUnavailable as exc:
            logger.warning("left unreferenced %s behind: %s", key, exc.message)

    def update(self, name: str, change: Callable[[VoiceRecord], VoiceRecord], *,
               if_match: Collection[str] | None = None) -> VoiceRecord:
        """Replace the record with `change(record)`, keeping its clips (`change` keeps its takes);
        `change` runs again on the newer record when another writer got there first, once that
        record passes `if_match`."""
        for _ in range(MAX_WRITE_TRIES):
            current = self._read_existing(name)
            check_version(name, current.record, if_match)
            updated = change(current.record)
            try:
                self.objects.put(record_key(name), _document(updated, current.clip, current.takes),
                                 if_match=current.etag)
                return updated
            except PreconditionFailed:
                continue
        raise _voice_changing(name)

    def delete(self, name: str, *, if_match: Collection[str] | None = None) -> None:
        """The record first (the voice is gone from then on), then its clips. `if_match` is checked
        against the record read just before: the object store has no conditional delete, so a
        replace landing between that read and the delete is deleted with it (as without if_match)."""
        stored = self._read_existing(name)
        check_version(name, stored.record, if_match)
        self.objects.delete(record_key(name))
        self._delete_all_quietly([stored.clip, *stored.takes.values()])


def open_store(settings: StoreSettings) -> VoiceStore:
    return VoiceStore(open_object_store(settings))

"""Lexicon store on an `ObjectStore`: one record per lexicon, `lexicons/{name}.json`
(docs/ARCHITECTURE.md, "Lexicons").

A record is written whole by the object store (never torn) and conditionally: a create only where
there is none, a replace only onto the version it read, so of two writers at once one wins and the
other tries again on what the first wrote. A lexicon's version (`version`, its HTTP ETag) is a hash of
its rules and language; a replace or delete given `if_match` happens only to a version it names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from speech_service.errors import BadRequest, Conflict, NotFound, VersionMismatch
from speech_service.storage.objects import ObjectStore, PreconditionFailed
from speech_service.text.lexicon import Lexicon, Rule

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # as voice names
PREFIX = "lexicons/"
ANY_VERSION = "*"  # in an `if_match`: any existing version (HTTP's `If-Match: *`)
MAX_WRITE_TRIES = 20  # a replace that keeps losing its conditional write to other writers gives up


@dataclass(frozen=True)
class StoredLexicon:
    lexicon: Lexicon
    created_at: datetime
    updated_at: datetime | None = None

    @property
    def version(self) -> str:
        return version(self.lexicon)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise BadRequest("Lexicon names are 1-64 characters of letters, digits, '_' and '-'.",
                         code="invalid_lexicon_name", param="name")
    return name


def key(name: str) -> str:
    return f"{PREFIX}{check_name(name)}.json"


def version(lexicon: Lexicon) -> str:
    """The lexicon's ETag, quoted as HTTP sends it: it changes exactly when its rules or language do."""
    document = json.dumps([lexicon.language, [asdict(rule) for rule in lexicon.rules]], ensure_ascii=False)
    return f'"{hashlib.sha256(document.encode()).hexdigest()[:16]}"'


def not_found(name: str) -> NotFound:
    return NotFound(f"Lexicon '{name}' does not exist.", code="lexicon_not_found")


def _document(stored: StoredLexicon) -> bytes:
    lexicon = stored.lexicon
    return json.dumps({"name": lexicon.name, "language": lexicon.language,
                       "rules": [asdict(rule) for rule in lexicon.rules],
                       "created_at": stored.created_at.isoformat(),
                       "updated_at": stored.updated_at.isoformat() if stored.updated_at else None},
                      ensure_ascii=False, indent=1).encode()


def _parsed(data: bytes) -> StoredLexicon:
    document = json.loads(data)
    lexicon = Lexicon(document["name"], tuple(Rule(**rule) for rule in document["rules"]), document["language"])
    updated = document.get("updated_at")
    return StoredLexicon(lexicon, datetime.fromisoformat(document["created_at"]),
                         datetime.fromisoformat(updated) if updated else None)


def _check_version(name: str, stored: StoredLexicon, if_match: Collection[str] | None) -> None:
    if if_match is not None and ANY_VERSION not in if_match and stored.version not in if_match:
        raise VersionMismatch(f"Lexicon '{name}' changed since it was read: its current ETag is {stored.version}; "
                              "read it again and send that in If-Match.")


class LexiconStore:
    def __init__(self, objects: ObjectStore):
        self.objects = objects

    def _read(self, name: str) -> tuple[StoredLexicon, str] | None:
        try:
            stored = self.objects.get(key(name))
        except KeyError:
            return None
        return _parsed(stored.data), stored.etag

    def find(self, name: str) -> StoredLexicon | None:
        read = self._read(name)
        return read[0] if read else None

    def get(self, name: str) -> StoredLexicon:
        stored = self.find(name)
        if stored is None:
            raise not_found(name)
        return stored

    def names(self) -> list[str]:
        """The lexicons' names, from the store's keys alone."""
        keys = (k.removeprefix(PREFIX) for k in self.objects.list(PREFIX))
        return [k.removesuffix(".json") for k in keys if "/" not in k and k.endswith(".json")]

    def list(self) -> list[StoredLexicon]:
        return [stored for name in self.names() if (stored := self.find(name)) is not None]

    def create(self, lexicon: Lexicon) -> StoredLexicon:
        stored = StoredLexicon(lexicon, datetime.now(timezone.utc))
        try:
            self.objects.put(key(lexicon.name), _document(stored), if_none_match=True)
        except PreconditionFailed:
            raise Conflict(f"Lexicon '{lexicon.name}' already exists; replace it with PUT /v1/lexicons/"
                           f"{lexicon.name}.", code="lexicon_exists") from None
        return stored

    def replace(self, lexicon: Lexicon, *, if_match: Collection[str] | None = None) -> StoredLexicon:
        """The lexicon's rules and language replaced, onto the version read (and with `if_match`,
        only one it names); 404 when there is none."""
        name = lexicon.name
        for _ in range(MAX_WRITE_TRIES):
            read = self._read(name)
            if read is None:
                raise not_found(name)
            current, etag = read
            _check_version(name, current, if_match)
            stored = StoredLexicon(lexicon, current.created_at, datetime.now(timezone.utc))
            try:
                self.objects.put(key(name), _document(stored), if_match=etag)
            except PreconditionFailed:
                continue  # another writer got there first: check against what it wrote
            return stored
        raise Conflict(f"Lexicon '{name}' is being replaced by others; try again.", code="lexicon_changing")

    def delete(self, name: str, *, if_match: Collection[str] | None = None) -> None:
        """`if_match` is checked against the record read just before (the object store has no
        conditional delete)."""
        _check_version(name, self.get(name), if_match)
        self.objects.delete(key(name))

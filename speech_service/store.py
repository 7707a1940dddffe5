"""Voice store: `voices/{name}/reference.wav` then `voices/{name}/voice.json` (written last).

A voice exists only when its record exists, and the record carries the sha256 of the clip it
describes, so a reader never pairs a transcript with audio it was not made for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from .errors import BadRequest, Conflict, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class VoiceRecord(BaseModel):
    name: str
    ref_text: str
    ref_text_source: str  # "user" or "asr"
    language: str | None = None
    duration_s: float
    original_duration_s: float
    clipped: bool
    sha256: str
    created_at: datetime
    updated_at: datetime | None = None


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


class VoiceStore(ABC):
    """Where voices live. Implementations share the key layout above."""

    @abstractmethod
    def put(self, record: VoiceRecord, reference_wav: bytes, *, overwrite: bool) -> None: ...

    @abstractmethod
    def get(self, name: str) -> VoiceRecord: ...

    @abstractmethod
    def reference(self, name: str) -> tuple[VoiceRecord, bytes]:
        """The record and the exact clip it describes."""

    @abstractmethod
    def update(self, record: VoiceRecord) -> None: ...

    @abstractmethod
    def list(self) -> list[VoiceRecord]: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalVoiceStore(VoiceStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "voices").mkdir(parents=True, exist_ok=True)

    def _dir(self, name: str) -> Path:
        return self.root / "voices" / check_name(name)

    def _record_path(self, name: str) -> Path:
        return self._dir(name) / "voice.json"

    def put(self, record: VoiceRecord, reference_wav: bytes, *, overwrite: bool) -> None:
        directory = self._dir(record.name)
        if self._record_path(record.name).exists() and not overwrite:
            raise Conflict(f"Voice '{record.name}' already exists; send overwrite=true to replace it.",
                           code="voice_exists")
        directory.mkdir(parents=True, exist_ok=True)
        clip = directory / "reference.wav"
        previous = clip.read_bytes() if clip.exists() else None
        # Clip first, record last: a voice exists once its record does. Should the record fail to
        # land, the previous clip goes back; after a crash, the sha256 check in `reference` refuses
        # to pair the old record with the new clip.
        _write_atomic(clip, reference_wav)
        try:
            _write_atomic(directory / "voice.json", record.model_dump_json(indent=2).encode())
        except BaseException:
            if previous is not None:
                _write_atomic(clip, previous)
            else:
                clip.unlink(missing_ok=True)
            raise

    def get(self, name: str) -> VoiceRecord:
        path = self._record_path(name)
        try:
            return VoiceRecord.model_validate(json.loads(path.read_bytes()))
        except FileNotFoundError:
            raise NotFound(f"Voice '{name}' does not exist.", code="voice_not_found") from None

    def reference(self, name: str) -> tuple[VoiceRecord, bytes]:
        record = self.get(name)
        try:
            data = (self._dir(name) / "reference.wav").read_bytes()
        except FileNotFoundError:
            data = b""
        if sha256(data) != record.sha256:
            raise Conflict(f"Voice '{name}' is being replaced; try again.", code="voice_changing")
        return record, data

    def update(self, record: VoiceRecord) -> None:
        self.get(record.name)  # must exist
        _write_atomic(self._record_path(record.name), record.model_dump_json(indent=2).encode())

    def list(self) -> list[VoiceRecord]:
        names = sorted(p.parent.name for p in (self.root / "voices").glob("*/voice.json"))
        records = []
        for name in names:
            try:
                records.append(self.get(name))
            except NotFound:  # deleted meanwhile
                pass
        return records

    def delete(self, name: str) -> None:
        record_path = self._record_path(name)
        try:
            record_path.unlink()  # the voice is gone from here on
        except FileNotFoundError:
            raise NotFound(f"Voice '{name}' does not exist.", code="voice_not_found") from None
        shutil.rmtree(record_path.parent, ignore_errors=True)


def open_store(kind: str, path: str) -> VoiceStore:
    if kind == "local":
        return LocalVoiceStore(path)
    raise ValueError(f"unknown store kind {kind!r}")

"""Object storage beneath the voice and job stores: one key space, in a local directory or in S3.

Keys are '/'-separated paths such as `voices/alice/voice.json`. Records are made safe for many
writers by conditional writes: `put(key, data, if_none_match=True)` creates only when the key is
absent, `put(key, data, if_match=etag)` replaces only the version that was read. Both raise
`PreconditionFailed` when another writer got there first. See docs/ARCHITECTURE.md, "Store".
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class PreconditionFailed(Exception):
    """A conditional write lost: the key exists (create) or changed since it was read (replace)."""


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str


class ObjectStore(ABC):
    @abstractmethod
    def get(self, key: str) -> StoredObject:
        """The object at `key`; KeyError when there is none."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write `data` whole (never torn) and return its etag; see the module doc for the conditions."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted."""


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalObjectStore(ObjectStore):
    """A directory. Conditional writes hold an exclusive lock on `.lock` beside the key, so they are
    atomic between the processes of one machine; every write lands by atomic rename."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError(f"invalid key {key!r}")
        return self.root.joinpath(*parts)

    def get(self, key: str) -> StoredObject:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        return StoredObject(data, _etag(data))

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not if_none_match and if_match is None:
            _write_atomic(path, data)
            return _etag(data)
        with _locked(path.parent / ".lock"):
            try:
                current = _etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if (if_none_match and current is not None) or (if_match is not None and current != if_match):
                raise PreconditionFailed(key)
            _write_atomic(path, data)
        return _etag(data)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        try:  # drop directories left empty (the lock file does not count as content)
            for directory in [path.parent, *path.parent.parents]:
                if directory == self.root:
                    break
                if {p.name for p in directory.iterdir()} - {".lock"}:
                    break
                (directory / ".lock").unlink(missing_ok=True)
                directory.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            rel = path.relative_to(self.root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                keys.append(rel.as_posix())
        return sorted(k for k in keys if k.startswith(prefix))


@contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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

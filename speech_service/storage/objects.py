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
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from speech_service.errors import StoreUnavailable

if TYPE_CHECKING:
    from speech_service.config import StoreSettings

logger = logging.getLogger(__name__)


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
        path = self._path(key)
        with _local_errors("read"):
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                raise KeyError(key) from None
        return StoredObject(data, _etag(data))

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        path = self._path(key)
        with _local_errors("written"):
            return self._put(key, path, data, if_none_match, if_match)

    def _put(self, key: str, path: Path, data: bytes, if_none_match: bool, if_match: str | None) -> str:
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
        with _local_errors("written"):
            path.unlink(missing_ok=True)
            self._drop_empty_directories(path.parent)

    def _drop_empty_directories(self, start: Path) -> None:
        """Directories left empty go (the lock file does not count as content); a writer may
        create one again at any moment, which is why ENOENT/ENOTEMPTY are expected."""
        try:
            for directory in [start, *start.parents]:
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
        # The directory holding `prefix`: "voices/al" lists voices/ and keeps keys starting "voices/al".
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        keys = []
        with _local_errors("read"):
            if not base.is_dir():
                return []
            for path in base.rglob("*"):
                rel = path.relative_to(self.root)
                if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                    keys.append(rel.as_posix())
        return sorted(k for k in keys if k.startswith(prefix))


@contextmanager
def _local_errors(action: str) -> Iterator[None]:
    """A disk that is full, read-only or gone is the store being unavailable, not our bug."""
    try:
        yield
    except OSError as exc:
        logger.warning("local store could not be %s: %s", action, exc)
        raise StoreUnavailable(f"The local store could not be {action}: {exc.strerror or type(exc).__name__}.") from exc


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


class S3ObjectStore(ObjectStore):
    """An S3 bucket (AWS or any S3-compatible service), keys under an optional `prefix`.

    Conditional writes are S3's own (`If-None-Match: *`, `If-Match: <etag>`), atomic on the server.
    Every call has short connect/read timeouts and few retries, so an unreachable S3 turns into
    `StoreUnavailable` within seconds. Credentials come from boto3's chain (AWS_* variables, shared
    config files, instance profile)."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, connect_timeout_s: float = 2.0, read_timeout_s: float = 5.0,
                 max_attempts: int = 2):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
                        retries={"total_max_attempts": max_attempts, "mode": "standard"})
        # A client (unlike a session) is safe to share between threads.
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None,
                                                     region_name=region or None, config=config)
        self.where = f"s3://{bucket}/{self.prefix} at {self.client.meta.endpoint_url}"

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"invalid key {key!r}")
        return self.prefix + key

    def get(self, key: str) -> StoredObject:
        with self._errors(key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                data = response["Body"].read()
            except self.client.exceptions.NoSuchKey:
                raise KeyError(key) from None
        return StoredObject(data, _unquote(response["ETag"]))

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        conditions = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = f'"{if_match}"'
        with self._errors(key, conditional=bool(conditions)):
            response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
        return _unquote(response["ETag"])

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        keys = []
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.prefix + prefix)
            for page in pages:
                keys.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", ()))
        return sorted(keys)

    @contextmanager
    def _errors(self, key: str, *, conditional: bool = False) -> Iterator[None]:
        """S3's answers in this module's terms: a lost condition is `PreconditionFailed`; anything
        that is not an answer about the key (network, timeouts, 5xx, a missing bucket, refused
        credentials) is `StoreUnavailable`. The bucket and endpoint go to the log, not to the caller:
        they are the operator's, and of use to an attacker."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.get("Code", "")
            # 412: the condition failed; 409 ConditionalRequestConflict: a concurrent conditional
            # write is in flight (it wins or loses, we lose); 404 on If-Match: the key is gone.
            if conditional and (status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict",
                                                          "NoSuchKey")):
                raise PreconditionFailed(key) from None
            logger.warning("S3 error on %s (%s): %s", key, self.where, exc)
            raise StoreUnavailable(f"The S3 store answered {status} {code}; the service log says more.") from exc
        except BotoCoreError as exc:
            logger.warning("S3 unreachable on %s (%s): %s", key, self.where, exc)
            raise StoreUnavailable("The S3 store cannot be reached; the service log says more.") from exc


def _unquote(etag: str) -> str:
    return etag.strip('"')


def open_object_store(settings: StoreSettings) -> ObjectStore:
    """The object store `settings` (the `store` block of config/serve.yaml) describe."""
    if settings.kind == "s3":
        return S3ObjectStore(settings.bucket, prefix=settings.prefix, endpoint_url=settings.endpoint_url,
                             region=settings.region, connect_timeout_s=settings.connect_timeout_s,
                             read_timeout_s=settings.read_timeout_s, max_attempts=settings.max_attempts)
    return LocalObjectStore(settings.path)

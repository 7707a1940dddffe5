"""Model source: turn `hf://…`, `s3://…` or a local path into a local file or directory.

An `s3://bucket/prefix` source is a mirror made by `python -m speech_service.weights.mirror mirror`: the
files plus `prefix/manifest.json` (each file's size and sha256, written last). A node pulls what it
needs once into `cache_dir`, under a file lock so that replicas sharing the node wait for one
download instead of each making their own, and uses a file only after its sha256 matched the
manifest. Each cache entry keeps `pulled.json` (what was verified) and `downloads.jsonl` (one line
per download), for operators asking "did this node fetch the weights again, and how long did it take?".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PULLED = "pulled.json"  # the cache entry's record of the files it verified
DOWNLOADS = "downloads.jsonl"  # one line per download into the entry: when, which files, how long
VOCODER_FILES = ["config.yaml", "pytorch_model.bin"]  # a Vocos directory
LOCK_WAIT_S = 3600.0  # another replica on this node may be downloading a multi-GB checkpoint
_CHUNK = 8 * 1024 * 1024


class SourceUnavailable(Exception):
    """The weights could not be found, fetched or verified."""


class Weights(NamedTuple):
    """One model's files on this node's disk."""

    checkpoint: Path
    vocoder: Path  # a directory holding VOCODER_FILES
    vocab: str  # "" = the vocab shipped with f5-tts


def fetch_weights(checkpoint: str, vocoder: str, vocab: str, cache_dir: str) -> Weights:
    """A model's checkpoint, vocoder and vocab (sources as a registry entry names them) on local disk."""
    return Weights(fetch_file(checkpoint, cache_dir), fetch_dir(vocoder, cache_dir, VOCODER_FILES),
                   str(fetch_file(vocab, cache_dir)) if vocab else "")


def fetch_file(source: str, cache_dir: str) -> Path:
    """A local path to the file named by `source`."""
    if source.startswith("s3://"):
        bucket, key = split_s3(source)
        prefix, _, name = key.rpartition("/")
        return pull(bucket, prefix, [name], cache_dir) / name
    try:
        if source.startswith("hf://"):
            from cached_path import cached_path

            return Path(cached_path(source, cache_dir=cache_dir))
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file")
        return path
    except Exception as exc:  # network, auth, missing file: all mean "no weights here"
        raise SourceUnavailable(f"could not fetch {source}: {exc}") from exc


def fetch_dir(source: str, cache_dir: str, files: list[str]) -> Path:
    """A local directory holding `files` from the directory named by `source`."""
    if source.startswith("s3://"):
        bucket, prefix = split_s3(source)
        return pull(bucket, prefix, files, cache_dir)
    if source.startswith("hf://"):
        paths = [fetch_file(f"{source.rstrip('/')}/{name}", cache_dir) for name in files]
        return paths[0].parent
    path = Path(source).expanduser()
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise SourceUnavailable(f"{path} lacks {', '.join(missing)}")
    return path


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key/` -> ("bucket", "some/key")."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise SourceUnavailable(f"{uri} names no bucket")
    return bucket, key.strip("/")


def s3_client():
    """boto3 with bounded waits. Endpoint and credentials come from boto3's own environment
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …, or an instance role)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(connect_timeout=10, read_timeout=60,
                                            retries={"max_attempts": 3, "mode": "standard"}))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def read_manifest(client, bucket: str, prefix: str) -> dict:
    """The mirror's manifest; SourceUnavailable when the bucket, the manifest or S3 is missing."""
    uri = f"s3://{bucket}/{_key(prefix, MANIFEST)}"
    try:
        body = client.get_object(Bucket=bucket, Key=_key(prefix, MANIFEST))["Body"].read()
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        hint = " (make it with `python -m speech_service.weights.mirror mirror SRC s3://…`)" if code in (
            "NoSuchKey", "NoSuchBucket", "404") else ""
        raise SourceUnavailable(f"could not read {uri}: {exc}{hint}") from exc
    try:
        files = json.loads(body)["files"]
        return {name: {"size": int(e["size"]), "sha256": str(e["sha256"])} for name, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SourceUnavailable(f"{uri} is not a mirror manifest: {exc}") from exc


def pull(bucket: str, prefix: str, names: list[str], cache_dir: str,
         lock_wait_s: float = LOCK_WAIT_S) -> Path:
    """Make `names` from the mirror at s3://bucket/prefix present and verified in the node's cache;
    return the cache directory that holds them."""
    local = Path(cache_dir).expanduser() / "s3" / bucket / prefix
    local.mkdir(parents=True, exist_ok=True)
    client = s3_client()
    with _locked(local / ".lock", lock_wait_s):
        manifest = read_manifest(client, bucket, prefix)
        unknown = [name for name in names if name not in manifest]
        if unknown:
            raise SourceUnavailable(f"s3://{bucket}/{prefix} has no {', '.join(unknown)} in its manifest")
        record = _read_record(local)
        stale = [name for name in names if not _still_verified(local / name, manifest[name],
                                                               record["files"].get(name))]
        if not stale:
            logger.info("s3://%s/%s: using verified cache %s", bucket, prefix, local)
            return local
        started = time.monotonic()
        for name in stale:
            record["files"][name] = _download(client, bucket, _key(prefix, name), local / name, manifest[name])
        download = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid(),
                    "files": stale, "bytes": sum(manifest[name]["size"] for name in stale),
                    "seconds": round(time.monotonic() - started, 3)}
        _write_record(local, record, download)
        logger.info("s3://%s/%s: downloaded and verified %s (%d bytes) in %.1f s into %s",
                    bucket, prefix, ", ".join(stale), download["bytes"], download["seconds"], local)
        return local


def _still_verified(path: Path, expected: dict, verified: dict | None) -> bool:
    """A cached file counts as verified while it is the file we hashed: same sha256 as the manifest
    names now, same size and modification time as when we hashed it. (Re-hashing a multi-GB
    checkpoint at every replica start would slow every scale-from-zero.)"""
    if verified is None or verified["sha256"] != expected["sha256"]:
        return False
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return stat.st_size == expected["size"] and stat.st_mtime_ns == verified["mtime_ns"]


def _download(client, bucket: str, key: str, target: Path, expected: dict, attempts: int = 2) -> dict:
    """Download into a `.part` file, check size and sha256, then rename into place; a mismatch is
    deleted and fetched again, and refused after `attempts`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            client.download_file(bucket, key, str(part))
        except Exception as exc:
            part.unlink(missing_ok=True)
            raise SourceUnavailable(f"could not download s3://{bucket}/{key}: {exc}") from exc
        size, digest = part.stat().st_size, sha256_of(part)
        if size == expected["size"] and digest == expected["sha256"]:
            part.replace(target)
            return {"sha256": digest, "mtime_ns": target.stat().st_mtime_ns}
        part.unlink()
        logger.warning("s3://%s/%s: got %d bytes with sha256 %s, the manifest says %d bytes with %s "
                       "(attempt %d of %d)", bucket, key, size, digest, expected["size"], expected["sha256"],
                       attempt, attempts)
    raise SourceUnavailable(f"s3://{bucket}/{key} does not match its manifest (sha256 or size differs); "
                            "mirror it again")


def _read_record(local: Path) -> dict:
    try:
        return {"files": dict(json.loads((local / PULLED).read_text())["files"])}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {"files": {}}


def _write_record(local: Path, record: dict, download: dict) -> None:
    with open(local / DOWNLOADS, "a") as log:  # one line per download, appended even by a racer
        log.write(json.dumps(download) + "\n")
    tmp = local / (PULLED + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(local / PULLED)


def pulled_record(cache_dir: str, source: str) -> dict:
    """What this node's cache holds for the s3:// `source` (a mirror prefix or a file in one): the
    verified files and the list of downloads made into it."""
    bucket, key = split_s3(source)
    local = Path(cache_dir).expanduser() / "s3" / bucket / key
    if not (local / PULLED).is_file() and not (local / DOWNLOADS).is_file():
        local = local.parent
    try:
        downloads = [json.loads(line) for line in (local / DOWNLOADS).read_text().splitlines() if line]
    except FileNotFoundError:
        downloads = []
    return {**_read_record(local), "downloads": downloads}


@contextmanager
def _locked(path: Path, wait_s: float) -> Iterator[None]:
    """An exclusive fcntl lock on `path`; the kernel drops it if the holder dies."""
    with open(path, "a+") as f:
        deadline, waited = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    logger.info("%s: another process on this node is downloading; waiting", path.parent)
                    waited = True
                if time.monotonic() > deadline:
                    raise SourceUnavailable(f"{path} stayed locked by another download for {wait_s:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

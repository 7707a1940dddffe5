"""Model source: turn `hf://…`, `s3://…` or a local path into a local file or directory."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class SourceUnavailable(Exception):
    """The weights could not be found or fetched."""


def _split(uri: str, scheme: str) -> tuple[str, str]:
    rest = uri[len(scheme) :]
    head, _, tail = rest.partition("/")
    return head, tail


def fetch_file(source: str, cache_dir: str) -> Path:
    """A local path to the file named by `source`."""
    try:
        if source.startswith("hf://"):
            from cached_path import cached_path

            return Path(cached_path(source, cache_dir=cache_dir))
        if source.startswith("s3://"):
            bucket, key = _split(source, "s3://")
            return _s3_download(bucket, key, Path(cache_dir) / "s3" / bucket / key)
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file")
        return path
    except Exception as exc:  # network, auth, missing file: all mean "no weights here"
        raise SourceUnavailable(f"could not fetch {source}: {exc}") from exc


def fetch_dir(source: str, cache_dir: str, files: list[str]) -> Path:
    """A local directory holding `files` from the directory named by `source`."""
    if source.startswith(("hf://", "s3://")):
        paths = [fetch_file(f"{source.rstrip('/')}/{name}", cache_dir) for name in files]
        return paths[0].parent
    path = Path(source).expanduser()
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise SourceUnavailable(f"{path} lacks {', '.join(missing)}")
    return path


def _s3_download(bucket: str, key: str, target: Path) -> Path:
    import boto3

    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    logger.info("downloading s3://%s/%s", bucket, key)
    boto3.client("s3").download_file(bucket, key, str(tmp))
    tmp.replace(target)
    return target

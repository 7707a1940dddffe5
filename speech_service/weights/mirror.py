"""Mirror model weights to S3: `python -m speech_service.weights.mirror mirror SRC s3://bucket/prefix`.

SRC is a local file or directory, or a model hub id: `hf://owner/repo` (the whole repository) or
`hf://owner/repo/path` (one file or folder of it). The files go to `prefix/<relative path>`, then
`prefix/manifest.json` (each file's size and sha256) is written last, so a reader that finds the
manifest finds every file it lists. Replicas then name `s3://bucket/prefix/<file>` as `checkpoint`
and `s3://bucket/prefix` as `vocoder` (see model_source.py for the reading side).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from speech_service.weights.source import MANIFEST, SourceUnavailable, s3_client, sha256_of, split_s3

logger = logging.getLogger(__name__)


def local_files(root: Path) -> dict[str, Path]:
    """Relative name -> path for a file or every file under a directory (hidden files, partial
    downloads and our own cache bookkeeping left out)."""
    if root.is_file():
        return {root.name: root}
    if not root.is_dir():
        raise SourceUnavailable(f"{root} is neither a file nor a directory")
    files = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts) \
                and not name.endswith(".part") and name not in (MANIFEST, "pulled.json"):
            files[name] = path
    if not files:
        raise SourceUnavailable(f"{root} holds no files")
    return files


def resolve_source(source: str, cache_dir: str | None = None) -> Path:
    """A local file or directory for SRC, downloading a model hub id first."""
    if not source.startswith("hf://"):
        path = Path(source).expanduser()
        if not path.exists():
            raise SourceUnavailable(f"{path} does not exist")
        return path
    from huggingface_hub import snapshot_download

    owner, _, rest = source.removeprefix("hf://").partition("/")
    repo, _, inner = rest.partition("/")
    inner = inner.strip("/")
    try:
        root = Path(snapshot_download(f"{owner}/{repo}", cache_dir=cache_dir,
                                      allow_patterns=[inner, f"{inner}/*"] if inner else None))
    except Exception as exc:
        raise SourceUnavailable(f"could not download {source}: {exc}") from exc
    path = root / inner if inner else root
    if not path.exists():
        raise SourceUnavailable(f"{source}: {owner}/{repo} has no {inner}")
    return path


def mirror(source: str, destination: str, cache_dir: str | None = None) -> dict:
    """Copy SRC to the S3 prefix `destination`, manifest last; return the manifest."""
    bucket, prefix = split_s3(destination)
    files = local_files(resolve_source(source, cache_dir))
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:
        raise SourceUnavailable(f"bucket {bucket} is not reachable or does not exist ({exc}); "
                                "create it first") from exc
    entries = {}
    for name, path in files.items():
        key = f"{prefix}/{name}" if prefix else name
        entry = {"size": path.stat().st_size, "sha256": sha256_of(path)}
        logger.info("uploading %s -> s3://%s/%s (%d bytes)", path, bucket, key, entry["size"])
        try:
            client.upload_file(str(path), bucket, key)
            stored = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except Exception as exc:
            raise SourceUnavailable(f"could not upload {path} to s3://{bucket}/{key}: {exc}") from exc
        if stored != entry["size"]:
            raise SourceUnavailable(f"s3://{bucket}/{key} holds {stored} bytes after upload, expected {entry['size']}")
        entries[name] = entry
    manifest = {"format": 1, "source": source,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": entries}
    manifest_key = f"{prefix}/{MANIFEST}" if prefix else MANIFEST
    client.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest, indent=2).encode(),
                      ContentType="application/json")
    logger.info("wrote s3://%s/%s: %d files", bucket, manifest_key, len(entries))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speech_service.weights.mirror", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("mirror", help="copy weights to S3 with a sha256 manifest")
    cmd.add_argument("source", help="local file or directory, hf://owner/repo or hf://owner/repo/path")
    cmd.add_argument("destination", help="s3://bucket/prefix")
    cmd.add_argument("--cache-dir", default=None, help="where hub downloads are kept (default: the hub's own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = mirror(args.source, args.destination, args.cache_dir)
    except SourceUnavailable as exc:
        logger.error("%s", exc)
        return 1
    total = sum(e["size"] for e in manifest["files"].values())
    sys.stdout.write(f"{args.destination.rstrip('/')}/{MANIFEST}: {len(manifest['files'])} files, {total} bytes\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

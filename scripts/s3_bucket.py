"""Wait for the S3 endpoint boto3 is configured for (AWS_* variables) and make sure a bucket exists.

Used by `make demo-s3` after starting a local SeaweedFS: `python scripts/s3_bucket.py BUCKET`."""

import logging
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("s3_bucket")


def ensure_bucket(bucket: str, timeout_s: float = 60) -> None:
    s3 = boto3.client("s3")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"S3 at {s3.meta.endpoint_url} did not answer: {exc}") from None
            time.sleep(0.5)
    if bucket not in names:
        s3.create_bucket(Bucket=bucket)
    log.info("bucket %s ready at %s", bucket, s3.meta.endpoint_url)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_bucket(sys.argv[1])

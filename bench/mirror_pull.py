"""Time the model mirror against a local S3 server (SeaweedFS): mirror a checkpoint-sized file, pull
it into an empty node cache (download + sha256), pull it again from the verified cache (what every
later replica start on the node pays), and two processes pulling at once (one downloads).

    python bench/mirror_pull.py --mb 1300        # about the size of F5TTS_v1_Base's checkpoint

Writes bench/results/mirror-pull-<mb>mb.json. Loopback S3 on one disk: network-free, so the numbers
are the floor of our own overhead (hashing, copying), not what a real bucket across a network gives.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from speech_service.weights.mirror import mirror
from speech_service.weights.source import fetch_file, pulled_record

from conftest import SeaweedFS


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = SeaweedFS(tmp / "s3")
        server.start()
        try:
            os.environ.update(AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID="test",
                              AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
            bucket = server.create_bucket()
            weights = tmp / "model.safetensors"
            with open(weights, "wb") as f:
                f.writelines(os.urandom(1024 * 1024) for _ in range(args.mb))
            _, mirror_s = timed(mirror, str(weights), f"s3://{bucket}/f5")
            source = f"s3://{bucket}/f5/model.safetensors"
            _, cold_s = timed(fetch_file, source, str(tmp / "node-a"))
            _, warm_s = timed(fetch_file, source, str(tmp / "node-a"))
            with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
                start = time.perf_counter()
                list(pool.map(fetch_file, [source] * 2, [str(tmp / "node-b")] * 2))
                pair_s = round(time.perf_counter() - start, 3)
            result = {
                "what": "mirror + pull of one file through SeaweedFS on loopback",
                "mb": args.mb, "machine": platform.machine(), "cpus": os.cpu_count(),
                "mirror_s": mirror_s, "cold_pull_s": cold_s, "warm_pull_s": warm_s,
                "two_processes_one_node_s": pair_s,
                "downloads_two_processes": len(pulled_record(str(tmp / "node-b"), source)["downloads"]),
            }
        finally:
            server.stop()
    out = REPO / "bench" / "results" / f"mirror-pull-{args.mb}mb.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""HTTP load generator for a running service: streamed speech at several concurrencies.

    python bench/load.py --url http://127.0.0.1:8000 --voice alice
    python bench/load.py --url URL --upload ref.wav --ref-text "What the clip says." --voice bench

For each concurrency (default 1, 2, 4, 8, 16) it keeps that many streamed requests (`--format`,
default pcm; first audio is the first byte of the body) in flight
until `--requests` (default 4 x concurrency, at least 8) have finished, and reports per level: time
to first audio p50/p95, request latency p50/p95, real-time factor (latency / seconds of audio)
p50/p95, throughput (seconds of audio per second, and requests per second), and, with --offline,
the batch sizes the Synthesizer replica saw over that level (model calls by segments sampled
together; against --url they are in the `ray_speech_batch_size` metric).
Writes bench/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, run_measured, summary

BYTES_PER_SECOND = 24000 * 2  # pcm: 16-bit mono at 24 kHz
TEXT = "Good morning, and welcome aboard. Today we travel along the coast, past the old harbour."


async def replica_batch_sizes() -> Counter:
    """Model calls by segments sampled together, from the Synthesizer replica (with --offline this
    process is the Ray driver; the offline profile has one replica)."""
    from ray import serve

    counts = await serve.get_deployment_handle("Synthesizer", "tts").batch_sizes.remote()
    return Counter({int(k): int(v) for k, v in counts.items()})


def audio_seconds(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / BYTES_PER_SECOND
    from speech_service.audio import SAMPLE_RATE
    from speech_service.audio.uploads import decode

    return len(decode(data, max_seconds=3600)) / SAMPLE_RATE


async def one_request(client: httpx.AsyncClient, body: dict) -> dict:
    start = time.perf_counter()
    first = None
    received = bytearray()
    async with client.stream("POST", "/v1/audio/speech", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"{r.status_code}: {r.text}")
        async for chunk in r.aiter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
            received += chunk
    total = time.perf_counter() - start
    audio_s = audio_seconds(bytes(received), body["response_format"])
    return {"ttfa_s": first, "latency_s": total, "audio_s": audio_s, "rtf": total / audio_s if audio_s else None}


async def level(client: httpx.AsyncClient, body: dict, concurrency: int, requests: int,
                batch_sizes: Callable[[], Awaitable[Counter]] | None) -> dict:
    before = await batch_sizes() if batch_sizes else None
    queue = list(range(requests))
    results = []

    async def worker():
        while queue:
            queue.pop()
            results.append(await one_request(client, body))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    after = await batch_sizes() if batch_sizes else None
    seen = None if after is None else {str(k): v for k, v in sorted((after - before).items())}
    return {"concurrency": concurrency, "requests": requests, "wall_s": round(wall, 3),
            "ttfa_s": summary([r["ttfa_s"] for r in results]),
            "latency_s": summary([r["latency_s"] for r in results]),
            "rtf": summary([r["rtf"] for r in results]),
            "audio_s_per_request": round(sum(r["audio_s"] for r in results) / len(results), 3),
            "throughput_audio_s_per_s": round(sum(r["audio_s"] for r in results) / wall, 3),
            "throughput_requests_per_s": round(requests / wall, 3),
            "batch_sizes_seen": seen}


def markdown(result: dict) -> str:
    lines = [f"# Load: {result['url']}, client on {result['client']}", "",
             f"Load average of the client's machine at the end: {tuple(round(x, 1) for x in result['load_average'])}.",
             "",
             f"Voice `{result['voice']}`, {len(result['text'])} characters of text, streamed "
             f"{result.get('format', 'pcm')}, "
             f"options {result['options']}.", "",
             "| concurrency | requests | first audio p50 / p95 (s) | latency p50 / p95 (s) | RTF p50 / p95 "
             "| audio s per s | requests per s | batch sizes seen |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["levels"]:
        batches = r["batch_sizes_seen"]
        if batches is None:
            batches = "not read (see the ray_speech_batch_size metric)"
        else:
            batches = ", ".join(f"{k}: {v}" for k, v in batches.items()) or "none"
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['ttfa_s']['p50']:.3f} / {r['ttfa_s']['p95']:.3f} | "
                     f"{r['latency_s']['p50']:.3f} / {r['latency_s']['p95']:.3f} | "
                     f"{r['rtf']['p50']:.3f} / {r['rtf']['p95']:.3f} | {r['throughput_audio_s_per_s']:.2f} | "
                     f"{r['throughput_requests_per_s']:.2f} | {batches} |")
    return "\n".join(lines) + "\n"


async def run(args) -> dict:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.concurrency) + 4)
    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, headers=headers, limits=limits) as client:
        if args.upload:
            data = {"name": args.voice, "overwrite": "true", **({"ref_text": args.ref_text} if args.ref_text else {})}
            upload = (args.upload.name, args.upload.read_bytes(), "application/octet-stream")
            r = await client.post("/v1/voices", data=data, files={"file": upload})
            r.raise_for_status()
        options = {"seed": 0, **({"nfe_step": args.nfe} if args.nfe else {})}
        body = {"voice": args.voice, "input": args.text, "response_format": args.format, "stream": True,
                **options}
        await one_request(client, body)  # wakes the Synthesizer: cold start is bench/service.py's business
        levels = []
        for concurrency in args.concurrency:
            requests = args.requests or max(4 * concurrency, 8)
            levels.append(await level(client, body, concurrency, requests,
                                      replica_batch_sizes if args.offline else None))
            print(f"concurrency {concurrency}: first audio p50 {levels[-1]['ttfa_s']['p50']:.3f} s, "
                  f"{levels[-1]['throughput_audio_s_per_s']:.2f} audio s/s", flush=True)
    return {"url": args.url, "client": machine(), "load_average": os.getloadavg(), "voice": args.voice,
            "text": args.text, "format": args.format, "options": options, "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running service")
    where.add_argument("--offline", action="store_true",
                       help="deploy config/serve.offline.yaml on a Ray cluster of this process and load that")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "offline", help="with --offline")
    parser.add_argument("--threads", type=int, help="with --offline: the Synthesizer's cpu_threads")
    parser.add_argument("--voice", required=True)
    parser.add_argument("--upload", type=Path, help="register --voice from this audio file first")
    parser.add_argument("--ref-text", help="the upload's transcript (else the service transcribes it)")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--format", default="pcm", choices=["pcm", "wav", "mp3", "opus", "aac", "flac"],
                        help="response_format of the streamed requests")
    parser.add_argument("--nfe", type=int, help="nfe_step per request (default: the service's)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--requests", type=int, help="per level (default 4 x concurrency, at least 8)")
    parser.add_argument("--api-key")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--name", help="result file name (default <client machine>-load)")
    args = parser.parse_args()
    run_measured(args, run, "load", markdown, threads=args.threads)


if __name__ == "__main__":
    main()

"""Live text in: how soon a socket speaks a sentence an agent is still writing, beside HTTP.

    python bench/live.py --offline                      # the offline profile on a Ray cluster of its own
    python bench/live.py --url http://127.0.0.1:8000 --voice alice

For each concurrency (default 1, 4, 16) it opens that many ElevenLabs-protocol sockets
(`/v1/text-to-speech/{voice}/multi-stream-input`, pcm_24000) at once, each one context fed like an
LLM writes (`--chunk` characters every `--pace-ms`), for `--rounds` rounds, and reports the time
from the last character of the context's first sentence being sent to its first audio (negative when
a first clause was spoken before the sentence ended), and whether that audio came before the last
text chunk was sent. Beside it, at the same concurrency, the same first sentence as a streamed HTTP
`/v1/audio/speech` request (pcm): time from sending the request to its first audio byte.
Writes bench/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, run_measured, summary

FIRST = "Good morning, and welcome aboard."
TEXT = (f"{FIRST} Today we travel along the coast, past the old harbour. The weather is fine, and the sea "
        "is calm. Lunch is served at noon in the dining car.")
REF_TEXT = "The quick brown fox jumps over the lazy dog."


async def one_socket(ws_url: str, headers: dict, text: str, first_end: int, chunk: int, pace_s: float,
                     timeout: float) -> dict:
    """One context fed `chunk` characters every `pace_s`; when the first sentence's last character
    went, when the first audio came, when the last chunk went and when `isFinal` came."""
    from websockets.asyncio.client import connect

    context = uuid.uuid4().hex[:12]
    times: dict[str, float] = {}
    async with connect(ws_url, additional_headers=headers, max_size=2**24) as ws:

        async def feed():
            await ws.send(json.dumps({"text": " ", "context_id": context}))
            for i in range(0, len(text), chunk):
                await ws.send(json.dumps({"text": text[i:i + chunk], "context_id": context}))
                if i < first_end <= i + chunk:
                    times["first_sentence_sent"] = time.perf_counter()
                await asyncio.sleep(pace_s)
            times["last_chunk_sent"] = time.perf_counter()
            await ws.send(json.dumps({"context_id": context, "flush": True}))
            await ws.send(json.dumps({"context_id": context, "close_context": True}))

        async def read():
            async for raw in ws:
                message = json.loads(raw)
                if message.get("error"):
                    raise RuntimeError(f"the service answered {message}")
                if message.get("audio") and "first_audio" not in times:
                    times["first_audio"] = time.perf_counter()
                if message.get("isFinal"):
                    times["final"] = time.perf_counter()
                    return

        feeder = asyncio.create_task(feed())
        await asyncio.wait_for(read(), timeout)
        await feeder
    return {"first_sentence_to_audio_s": times["first_audio"] - times["first_sentence_sent"],
            "audio_before_last_chunk": times["first_audio"] < times["last_chunk_sent"],
            "last_chunk_to_final_s": times["final"] - times["last_chunk_sent"]}


async def one_http(client: httpx.AsyncClient, body: dict) -> float:
    start = time.perf_counter()
    async with client.stream("POST", "/v1/audio/speech", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"{r.status_code}: {r.text}")
        first = None
        async for piece in r.aiter_bytes():
            if piece and first is None:
                first = time.perf_counter() - start
    return first


async def level(args, client: httpx.AsyncClient, ws_url: str, headers: dict, concurrency: int) -> dict:
    sockets, http = [], []
    body = {"voice": args.voice, "input": FIRST, "response_format": "pcm", "stream": True}
    for _ in range(args.rounds):
        sockets += await asyncio.gather(*(one_socket(ws_url, headers, TEXT, len(FIRST), args.chunk,
                                                     args.pace_ms / 1000, args.timeout) for _ in range(concurrency)))
        http += await asyncio.gather(*(one_http(client, body) for _ in range(concurrency)))
    return {"concurrency": concurrency, "contexts": len(sockets),
            "first_sentence_to_audio_s": summary([s["first_sentence_to_audio_s"] for s in sockets]),
            "audio_before_last_chunk": sum(s["audio_before_last_chunk"] for s in sockets),
            "last_chunk_to_final_s": summary([s["last_chunk_to_final_s"] for s in sockets]),
            "http_first_audio_s": summary(http)}


def markdown(result: dict) -> str:
    lines = [f"# Live text in: {result['url']}, client on {result['client']}", "",
             f"Load average of the machine before / after: {result['load_before']} / {result['load_after']}.", "",
             f"Each socket: one context of {len(result['text'])} characters, {result['chunk']} characters every "
             f"{result['pace_ms']} ms (pcm_24000); its first sentence \"{result['first']}\" is also sent as a streamed "
             "HTTP request (pcm) at the same concurrency.", "",
             "| sockets | contexts | end of first sentence -> first audio p50 / p95 (s) | first audio before the last "
             "chunk | last chunk -> isFinal p50 (s) | HTTP first audio p50 / p95 (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["levels"]:
        s, h = r["first_sentence_to_audio_s"], r["http_first_audio_s"]
        lines.append(f"| {r['concurrency']} | {r['contexts']} | {s['p50']:.3f} / {s['p95']:.3f} | "
                     f"{r['audio_before_last_chunk']} of {r['contexts']} | {r['last_chunk_to_final_s']['p50']:.3f} | "
                     f"{h['p50']:.3f} / {h['p95']:.3f} |")
    return "\n".join(lines) + "\n"


async def run(args) -> dict:
    headers = {"xi-api-key": args.api_key} if args.api_key else {}
    ws_url = (args.url.replace("http", "ws", 1) + f"/v1/text-to-speech/{args.voice}/multi-stream-input"
              "?model_id=eleven_flash_v2_5&output_format=pcm_24000")
    auth = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.concurrency) + 4)
    load_before = [round(x, 1) for x in os.getloadavg()]
    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, headers=auth, limits=limits) as client:
        if args.upload or args.offline:
            await upload_voice(client, args)
        await one_socket(ws_url, headers, TEXT, len(FIRST), args.chunk, args.pace_ms / 1000, args.timeout)  # warm
        levels = []
        for concurrency in args.concurrency:
            levels.append(await level(args, client, ws_url, headers, concurrency))
            s = levels[-1]["first_sentence_to_audio_s"]
            print(f"{concurrency} sockets: first sentence -> audio p50 {s['p50']:.3f} s, HTTP first audio p50 "
                  f"{levels[-1]['http_first_audio_s']['p50']:.3f} s", flush=True)
    return {"url": args.url, "client": machine(), "load_before": load_before,
            "load_after": [round(x, 1) for x in os.getloadavg()], "voice": args.voice, "text": TEXT, "first": FIRST,
            "chunk": args.chunk, "pace_ms": args.pace_ms, "rounds": args.rounds, "levels": levels}


async def upload_voice(client: httpx.AsyncClient, args) -> None:
    """`--upload` (with `--ref-text`), else a clip espeak-ng speaks."""
    with tempfile.TemporaryDirectory() as tmp:
        path, ref_text = args.upload, args.ref_text
        if path is None:
            path, ref_text = Path(tmp) / "ref.wav", REF_TEXT
            subprocess.run(["espeak-ng", "-w", str(path), REF_TEXT], check=True)
        data = {"name": args.voice, "overwrite": "true", **({"ref_text": ref_text} if ref_text else {})}
        r = await client.post("/v1/voices", data=data, files={"file": (path.name, path.read_bytes(), "audio/wav")})
        r.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running service")
    where.add_argument("--offline", action="store_true",
                       help="deploy the offline profile on a Ray cluster of this process and measure that")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "offline", help="with --offline")
    parser.add_argument("--voice", default="bench")
    parser.add_argument("--upload", type=Path, help="register --voice from this audio file first")
    parser.add_argument("--ref-text", help="the upload's transcript (else the service transcribes it)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level")
    parser.add_argument("--chunk", type=int, default=4, help="characters per text message")
    parser.add_argument("--pace-ms", type=float, default=30, help="between text messages")
    parser.add_argument("--api-key")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--name", help="result file name (default <client machine>-live)")
    args = parser.parse_args()
    run_measured(args, run, "live", markdown, warm=True)


if __name__ == "__main__":
    main()

"""What captions and the quality check cost: Whisper's time per second of audio heard, and the
latency they add to a speech request through the service at concurrency 1 and 4.

    python bench/listening.py --requests 8

(a) In this process, `WhisperBackend.listen` (what the Transcriber replica runs) on espeak-ng speech
    of 2 to 12 s, with the Transcriber's threads: seconds of Whisper per second of speech.
(b) Through the offline profile on a local Ray cluster of its own: whole wav requests of two
    sentences, plain, with `timestamps`, and with the check (`retries: 0`), interleaved, at
    concurrency 1 and 4. The tiny model's output is noise, so the check fails and is never retried:
    one Whisper pass per segment, as for speech that passes first time.
Writes bench/results/<machine>-listening.json and prints its table.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, free_port, machine, offline_config, start_service, stop_service, write_result

REF_TEXT = "The quick brown fox jumps over the lazy dog."
TEXT = "Good morning, this is a short test of the service. It says two sentences."
SPOKEN = ["Hello there, this is a test.",
          "The weather today is sunny and warm, so we will walk to the park after lunch.",
          "Maria bought seven green apples at the market yesterday, and then she walked home slowly "
          "through the old town, stopping twice to talk to friends she met on the way."]
VARIANTS = {"plain": {}, "timestamps": {"timestamps": "word"}, "check": {"quality": {"retries": 0}}}


def whisper_cost(models: dict[str, Path], threads: int, tmp: Path, rounds: int) -> list[dict]:
    from speech_service import audio
    from speech_service.config import TranscriberSettings
    from speech_service.transcription.whisper import WhisperBackend, resample_poly

    whisper = WhisperBackend(TranscriberSettings(model=str(models["whisper"]), device="cpu", cpu_threads=threads))
    rows = []
    for n, text in enumerate(SPOKEN):
        path = tmp / f"spoken{n}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        wave, rate = sf.read(path, dtype="float32")
        wave = resample_poly(wave, audio.SAMPLE_RATE, rate)
        seconds = len(wave) / audio.SAMPLE_RATE
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            whisper.listen(wave, "en")
            times.append(time.perf_counter() - started)
        rows.append({"audio_s": round(seconds, 2), "listen_s_p50": round(statistics.median(times), 3),
                     "per_audio_second": round(statistics.median(times) / seconds, 3)})
    return rows


def latency(http: httpx.Client, voice: str, concurrency: int, requests: int) -> dict:
    audio_s: list[float] = []

    def one(variant: str, seed: int) -> float:
        started = time.perf_counter()
        r = http.post("/v1/audio/speech", json={"voice": voice, "input": TEXT, "response_format": "wav",
                                                "seed": seed, **VARIANTS[variant]})
        r.raise_for_status()
        if variant == "plain":
            audio_s.append(sf.info(io.BytesIO(r.content)).duration)
        return time.perf_counter() - started

    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with ThreadPoolExecutor(concurrency) as pool:
        for n in range(requests):  # rounds of `concurrency` requests of one variant, variants interleaved
            for variant in VARIANTS:
                seeds = range(n * concurrency, (n + 1) * concurrency)
                results[variant].extend(pool.map(one, [variant] * concurrency, seeds))
    p50 = {v: round(statistics.median(ts), 3) for v, ts in results.items()}
    added = {v: round(p50[v] - p50["plain"], 3) for v in VARIANTS if v != "plain"}
    seconds = statistics.median(audio_s)
    return {"concurrency": concurrency, "requests_per_variant": len(results["plain"]), "p50_s": p50,
            "added_s": added, "audio_s_p50": round(seconds, 2),
            "added_s_per_audio_s": {v: round(a / seconds, 3) for v, a in added.items()}}


def markdown(result: dict) -> str:
    lines = [f"# Captions and the quality check: cost ({result['machine']})", "",
             f"Whisper (`listen`, {result['transcriber_threads']} threads) on espeak-ng speech:", "",
             "| audio | listen p50 | Whisper s per audio s |", "| --- | --- | --- |"]
    lines += [f"| {r['audio_s']} s | {r['listen_s_p50']} s | {r['per_audio_second']} |" for r in result["whisper"]]
    lines += ["", "Whole wav requests through the service (offline profile, two sentences), p50 seconds:", "",
              "| concurrency | audio | plain | timestamps | check | added by timestamps | added by check |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["service"]:
        p, a, r = row["p50_s"], row["added_s"], row["added_s_per_audio_s"]
        lines.append(f"| {row['concurrency']} | {row['audio_s_p50']} s | {p['plain']} | {p['timestamps']} | "
                     f"{p['check']} | {a['timestamps']} ({r['timestamps']} per audio s) | "
                     f"{a['check']} ({r['check']} per audio s) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="rounds per variant and concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="listen calls per clip in (a)")
    parser.add_argument("--threads", type=int, default=1, help="the Transcriber's CPU threads")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "offline")
    args = parser.parse_args()

    from speech_service.weights.offline import prepare

    models = prepare(args.models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"machine": machine(), "transcriber_threads": args.threads,
                  "whisper": whisper_cost(models, args.threads, Path(tmp), args.rounds)}
        wav = Path(tmp) / "ref.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), REF_TEXT], check=True)
        config = offline_config(models, Path(tmp) / "store", free_port(), None)
        for d in config["applications"][0]["deployments"]:
            if d["name"] == "Transcriber":
                d["user_config"]["cpu_threads"] = args.threads
        base = start_service(config)
        try:
            with httpx.Client(base_url=base, timeout=600) as http:
                with wav.open("rb") as f:
                    http.post("/v1/voices", data={"name": "bench", "ref_text": REF_TEXT},
                              files={"file": ("ref.wav", f)}).raise_for_status()
                for variant in VARIANTS:  # both replicas up and warm before anything is timed
                    http.post("/v1/audio/speech", json={"voice": "bench", "input": TEXT, **VARIANTS[variant]})
                result["service"] = [latency(http, "bench", c, args.requests) for c in (1, 4)]
        finally:
            stop_service()
    path = write_result(f"{machine()}-listening", result)
    print(markdown(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

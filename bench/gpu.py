"""GPU benchmark of the synthesis engine: F5TTS_v1_Base's architecture with random weights.

    python bench/gpu.py --out DIR                    # one CUDA GPU, the whole run (docs/BENCHMARKS.md)
    python bench/gpu.py --device cpu --quick --out DIR   # smoke run: tiny DiT, float32, NFE 2

Runs on a bare PyTorch machine from the GPU bundle (`make gpu-bundle`): it imports the engine, its
config and text pipeline, f5-tts and Vocos, and nothing of Ray, FastAPI or the HTTP stack
(`bench/bare.py` stands in for the few packages the bundle leaves out). Weights are random (no model
hub), which does not change the cost of a step; the vocoder has charactr/vocos-mel-24khz's
architecture, also random.

Per dtype (fp16, bf16): the cold start (build + weights + warm-up, `SynthesisEngine.load`'s phases).
Per NFE (16, an EPSS preset; 32, not): the engine against f5-tts's own inference on the same inputs,
alternating (`engine_vs_f5`); then per concurrency (1, 8, 32) "unbatched" (one engine call per
request, from that many threads) and "batched" (all their segments through the engine's batch path
in one call, split by its max_batch_size): wall time, RTF, seconds of audio per second, latency p50
and p95, the first segment of a stream (at concurrency 1) and peak GPU memory
(`torch.cuda.max_memory_allocated`). Whisper is not measured: faster-whisper does not fit the bundle.
Writes <out>/<machine>-gpu[-quick].json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bare  # noqa: E402  (before anything imports the packages it stands in for)

STOOD_IN = bare.register()

import torch  # noqa: E402

from bench.common import REPO, machine, percentile, write_result  # noqa: E402
from bench.random_models import SAMPLE_RATE, VOCOS_24KHZ, random_f5, random_vocos, reference  # noqa: E402
from speech_service.config import SynthesisOptions, SynthesizerSettings  # noqa: E402
from speech_service.synthesis.engine import SynthesisEngine  # noqa: E402
from speech_service.weights.offline import TINY_DIT, TINY_VOCOS  # noqa: E402

REF_TEXT = "The quick brown fox jumps over the lazy dog, and the dog sleeps in the warm sun."
TEXT = ("Good morning, and welcome aboard. Today we travel along the coast, past the old harbour "
        "and the lighthouse, and we expect to arrive a little after noon.")
WHISPER = ("not measured: faster-whisper needs ctranslate2 (40.8 MB), av (34.1 MB) and onnxruntime "
           "(26.5 MB) wheels for CPython 3.12, more than the bundle's 64 MiB")


def synced(fn):
    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return run


class PhaseClock:
    """`SynthesisEngine.load`'s clock: seconds per phase of the start."""

    def __init__(self):
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        yield
        synced(lambda: None)()
        self.phases[name] = round(time.perf_counter() - start, 3)


def cold_start(settings: SynthesizerSettings) -> tuple[SynthesisEngine, dict]:
    clock = PhaseClock()
    start = time.perf_counter()
    engine = SynthesisEngine.load(settings, clock)
    synced(lambda: None)()
    return engine, {"total_s": round(time.perf_counter() - start, 3), **clock.phases}


def engine_vs_f5(engine, clip, ref, options, runs: int) -> dict:
    """Our engine and f5-tts's inference on the same clip and text, alternately (after one warm-up each)."""
    from bench.f5_reference import infer

    ours = synced(lambda: engine.synthesize(clip, REF_TEXT, TEXT, options))
    theirs = synced(lambda: infer(engine.model, engine.vocoder, ref, REF_TEXT, TEXT, options.nfe_step, engine.device))
    ours(), theirs()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((ours, times[0]), (theirs, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    engine_s, f5_s = statistics.median(times[0]), statistics.median(times[1])
    return {"engine_s": round(engine_s, 4), "f5_infer_process_s": round(f5_s, 4),
            "engine_vs_f5": round(engine_s / f5_s, 3), "runs": runs}


def case(engine, clip, options, concurrency: int, batched: bool, rounds: int) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    latencies: list[float] = []
    audio_s = wall = 0.0

    def one(_):
        begin = time.perf_counter()
        wave = synced(engine.synthesize)(clip, REF_TEXT, TEXT, options)
        latencies.append(time.perf_counter() - begin)
        return wave

    for _ in range(rounds):
        start = time.perf_counter()
        if batched:
            items = [item for _ in range(concurrency) for item in engine.items(clip, REF_TEXT, TEXT, options)]
            waves = synced(engine.synthesize_batch)(items)
            latencies += [time.perf_counter() - start] * concurrency  # every request ends with the batch
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                waves = list(pool.map(one, range(concurrency)))
        wall += time.perf_counter() - start
        audio_s += sum(len(w) for w in waves) / SAMPLE_RATE
    row = {"concurrency": concurrency, "mode": "batched" if batched else "unbatched", "rounds": rounds,
           "wall_s": round(wall / rounds, 4), "audio_s": round(audio_s / rounds, 3), "rtf": round(wall / audio_s, 5),
           "audio_s_per_s": round(audio_s / wall, 3), "latency_p50_s": round(percentile(latencies, 50), 4),
           "latency_p95_s": round(percentile(latencies, 95), 4)}
    if torch.cuda.is_available():
        row["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return row


def first_audio(engine, clip, options, rounds: int) -> float:
    """Median seconds to the first segment of a stream (planned short, sampled alone)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        first = engine.items(clip, REF_TEXT, TEXT, options, streaming=True)[0]
        synced(engine.synthesize_batch)([first])
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def markdown(result: dict) -> str:
    lines = [f"# Engine benchmark on {result['machine']}", "",
             f"{result['model']}, random weights, {result['text_chars']} characters of text after a "
             f"{result['reference_s']} s reference; torch {result['torch']}; stood in: {result['stood_in'] or 'none'}; "
             f"Whisper: {result['whisper']}.", "",
             "| dtype | cold start (s) | phases (s) |", "| --- | --- | --- |"]
    for dtype, start in result["cold_start"].items():
        phases = ", ".join(f"{k} {v}" for k, v in start.items() if k != "total_s")
        lines.append(f"| {dtype} | {start['total_s']} | {phases} |")
    lines += ["", "| dtype | NFE | engine (s) | f5-tts infer_process (s) | engine / f5 |",
              "| --- | --- | --- | --- | --- |"]
    for r in result["engine_vs_f5"]:
        lines.append(f"| {r['dtype']} | {r['nfe']} | {r['engine_s']} | {r['f5_infer_process_s']} | "
                     f"{r['engine_vs_f5']} |")
    lines += ["", "| dtype | NFE | concurrency | mode | wall (s) | RTF | audio s per s | latency p50 (s) "
              "| latency p95 (s) | first audio (s) | peak GPU memory (GB) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["cases"]:
        lines.append(f"| {r['dtype']} | {r['nfe']} | {r['concurrency']} | {r['mode']} | {r['wall_s']} | {r['rtf']} | "
                     f"{r['audio_s_per_s']} | {r['latency_p50_s']} | {r['latency_p95_s']} | "
                     f"{r.get('first_audio_s', '')} | {r.get('peak_gpu_memory_gb', 'n/a')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny DiT and Vocos, float32, NFE 2: a smoke run")
    parser.add_argument("--dtypes", nargs="+", default=None)
    parser.add_argument("--nfe", type=int, nargs="+", default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument("--runs", type=int, default=None, help="timed runs of the engine against f5-tts")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for the result files")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick for a smoke run")
    dtypes = args.dtypes or (["float32"] if args.quick else ["float16", "bfloat16"])
    nfes = args.nfe or ([2] if args.quick else [16, 32])
    concurrencies = args.concurrency or ([1, 2] if args.quick else [1, 8, 32])
    runs = args.runs or (1 if args.quick else 5)
    name = "tiny" if args.quick else "base"
    arch = TINY_DIT if args.quick else {}
    checkpoint = random_f5(args.models_dir / f"f5-{name}-random" / "model.safetensors", arch)
    vocoder = random_vocos(args.models_dir / f"vocos-{name}-random", TINY_VOCOS if args.quick else VOCOS_24KHZ)
    ref = reference()

    result = {"machine": machine(args.device), "device": args.device, "model": f"F5TTS_v1_Base ({name})",
              "arch_overrides": arch, "torch": torch.__version__, "python": sys.version.split()[0],
              "reference_s": len(ref) / SAMPLE_RATE, "text_chars": len(TEXT), "stood_in": STOOD_IN,
              "whisper": WHISPER, "cold_start": {}, "engine_vs_f5": [], "cases": []}
    result_name = f"{result['machine']}-gpu" + ("-quick" if args.quick else "")

    def save(row: dict | None = None) -> Path:  # after every row: a run cut short keeps what it measured
        if row:
            print(row, flush=True)
        result["load_average"] = os.getloadavg()
        return write_result(result_name, result, markdown(result), directory=args.out)

    for dtype in dtypes:
        engine, result["cold_start"][dtype] = cold_start(SynthesizerSettings(
            model_name=f"F5TTS_v1_Base-{name}-random", architecture_overrides=arch, checkpoint=str(checkpoint),
            vocoder=str(vocoder), device=args.device, dtype=dtype, max_segment_seconds=30))
        save({dtype: result["cold_start"][dtype]})
        clip = engine.prepare(ref)  # once, as a Synthesizer replica keeps it (its reference cache)
        for nfe in nfes:
            options = SynthesisOptions(nfe_step=nfe, seed=0)
            ratio = engine_vs_f5(engine, clip, ref, options, runs)
            result["engine_vs_f5"].append({"dtype": dtype, "nfe": nfe, **ratio})
            save(result["engine_vs_f5"][-1])
            for concurrency in concurrencies:
                for batched in (False, True):
                    rounds = 1 if args.quick else max(1, 8 // concurrency)
                    row = {"dtype": dtype, "nfe": nfe, **case(engine, clip, options, concurrency, batched, rounds)}
                    if concurrency == 1 and not batched:
                        row["first_audio_s"] = first_audio(engine, clip, options, rounds)
                    result["cases"].append(row)
                    save(row)
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(save().with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

"""GPU benchmark of the synthesis engine: F5TTS_v1_Base's architecture with random weights.

    python bench/gpu.py                        # one CUDA GPU: fp16 and bf16, NFE 16 and 32,
                                               # concurrency 1 and 8, batched and unbatched
    python bench/gpu.py --device cpu --quick   # smoke run: tiny DiT, float32, NFE 2, concurrency 1 and 2

Weights are random (no model hub needed), which does not change the cost of a step; the vocoder is
Vocos with the architecture of charactr/vocos-mel-24khz, also random. The DiT runs with
`attn_mask_enabled: True`, which batching needs for each item to equal its solo result (f5-tts warns
that the masked attention can cost much GPU memory: the peak is reported per case).

Per case: wall time for `concurrency` requests, RTF (wall / seconds of audio made), request latency
p50, throughput, first streamed audio at concurrency 1, and peak GPU memory
(`torch.cuda.max_memory_allocated`). "unbatched" runs the requests from `concurrency` threads
through `SynthesisEngine.synthesize`; "batched" hands all their segments to the engine's batch API in
one call, when the engine has one. Writes bench/results/<machine>-gpu[-quick].json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, write_result
from speech_service.config import SynthesisOptions, SynthesizerSettings
from speech_service.synthesis.engine import SynthesisEngine
from speech_service.weights.offline import TINY_DIT, TINY_VOCOS

SAMPLE_RATE = 24000
REF_TEXT = "The quick brown fox jumps over the lazy dog, and the dog sleeps in the warm sun."
TEXT = ("Good morning, and welcome aboard. Today we travel along the coast, past the old harbour "
        "and the lighthouse, and we expect to arrive a little after noon.")
# charactr/vocos-mel-24khz's architecture
VOCOS_24KHZ = {**TINY_VOCOS,
               "backbone": {"class_path": "vocos.models.VocosBackbone",
                            "init_args": {"input_channels": 100, "dim": 512, "intermediate_dim": 1536,
                                          "num_layers": 8}},
               "head": {"class_path": "vocos.heads.ISTFTHead",
                        "init_args": {"dim": 512, "n_fft": 1024, "hop_length": 256, "padding": "center"}}}


def random_f5(path: Path, arch: dict) -> Path:
    from importlib.resources import files

    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from speech_service.synthesis import f5_modules

    if path.exists():
        return path
    config = OmegaConf.load(str(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml")))
    full_arch = {**OmegaConf.to_container(config.model.arch), **arch}
    _, vocab_size = f5_modules.submodule("utils").get_tokenizer(
        str(files("f5_tts").joinpath("infer/examples/vocab.txt")), "custom")
    torch.manual_seed(0)
    model = f5_modules.submodule("cfm").CFM(
        transformer=f5_modules.backbone_class("DiT")(**full_arch, text_num_embeds=vocab_size, mel_dim=100))
    with torch.no_grad():
        for p in model.parameters():  # every parameter random: no all-zero layer that skips work
            p.normal_(0, 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("mel_spec.")}, str(path))
    return path


def random_vocos(directory: Path, config: dict) -> Path:
    from vocos import Vocos

    if (directory / "pytorch_model.bin").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    torch.save(Vocos.from_hparams(str(directory / "config.yaml")).state_dict(), directory / "pytorch_model.bin")
    return directory


def reference(seconds: float = 5.0) -> np.ndarray:
    """A speech-like stand-in: a voiced tone with a syllable-rate envelope (weights are random anyway)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.1 * envelope * np.sin(2 * np.pi * 140 * t) * (1 + 0.3 * np.sin(2 * np.pi * 280 * t))).astype(np.float32)


def synced(fn):
    def run(*args):
        out = fn(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return run


def case(engine, ref, options, concurrency: int, batched: bool) -> dict:
    texts = [TEXT] * concurrency
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    latencies: list[float] = []

    def one(text):
        start = time.perf_counter()
        wave = synced(engine.synthesize)(ref, REF_TEXT, text, options)
        latencies.append(time.perf_counter() - start)
        return wave

    start = time.perf_counter()
    if batched:
        items = [item for text in texts for item in engine.items(ref, REF_TEXT, text, options)]
        waves = synced(engine.synthesize_batch)(items)
        latencies = [time.perf_counter() - start] * concurrency  # every request ends with the batch
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            waves = list(pool.map(one, texts))
    wall = time.perf_counter() - start
    audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
    result = {"concurrency": concurrency, "mode": "batched" if batched else "unbatched",
              "wall_s": round(wall, 4), "audio_s": round(audio_s, 3), "rtf": round(wall / audio_s, 5),
              "latency_p50_s": round(statistics.median(latencies), 4),
              "throughput_audio_s_per_s": round(audio_s / wall, 3)}
    if torch.cuda.is_available():
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return result


def first_audio(engine, ref, options) -> float:
    start = time.perf_counter()
    first = engine.items(ref, REF_TEXT, TEXT, options, streaming=True)[0]  # a stream's first segment
    engine.synthesize_batch([first])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def markdown(result: dict) -> str:
    lines = [f"# Engine benchmark on {result['machine']}", "",
             f"{result['model']}, random weights, {result['text_chars']} characters of text after a "
             f"{result['reference_s']} s reference; torch {result['torch']}; load average at the end "
             f"{tuple(round(x, 1) for x in result['load_average'])}.", "",
             "| dtype | NFE | concurrency | mode | wall (s) | RTF | latency p50 (s) | audio s per s | first audio (s) "
             "| peak GPU memory (GB) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["cases"]:
        if "skipped" in r:
            lines.append(f"| {r['dtype']} | {r['nfe']} | {r['concurrency']} | {r['mode']} | {r['skipped']} "
                         "| | | | | |")
            continue
        lines.append(f"| {r['dtype']} | {r['nfe']} | {r['concurrency']} | {r['mode']} | {r['wall_s']} | {r['rtf']} | "
                     f"{r['latency_p50_s']} | {r['throughput_audio_s_per_s']} | {r.get('first_audio_s', '')} | "
                     f"{r.get('peak_gpu_memory_gb', 'n/a')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny DiT and Vocos, NFE 2: a smoke run")
    parser.add_argument("--dtypes", nargs="+", default=None)
    parser.add_argument("--nfe", type=int, nargs="+", default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "bench")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu --quick for a smoke run")
    dtypes = args.dtypes or (["float32"] if args.quick else ["float16", "bfloat16"])
    nfes = args.nfe or ([2] if args.quick else [16, 32])
    concurrencies = args.concurrency or ([1, 2] if args.quick else [1, 8])
    arch = {**(TINY_DIT if args.quick else {}), "attn_mask_enabled": True}
    name = "tiny" if args.quick else "base"
    checkpoint = random_f5(args.models_dir / f"f5-{name}-random" / "model.safetensors", arch)
    vocoder = random_vocos(args.models_dir / f"vocos-{name}-random", TINY_VOCOS if args.quick else VOCOS_24KHZ)
    ref = reference()

    cases = []
    for dtype in dtypes:
        engine = SynthesisEngine.load(SynthesizerSettings(
            model_name=f"F5TTS_v1_Base-{name}-random", architecture_overrides=arch, checkpoint=str(checkpoint),
            vocoder=str(vocoder), device=args.device, dtype=dtype, max_segment_seconds=30))
        clip = engine.prepare(ref)  # once, as a Synthesizer replica keeps it (its reference cache)
        for nfe in nfes:
            options = SynthesisOptions(nfe_step=nfe, seed=0)
            synced(engine.synthesize)(clip, REF_TEXT, TEXT, options)  # warm-up at this NFE
            for concurrency in concurrencies:
                for batched in (False, True):
                    row = {"dtype": dtype, "nfe": nfe}
                    row.update(case(engine, clip, options, concurrency, batched))
                    if concurrency == 1 and not batched:
                        row["first_audio_s"] = round(first_audio(engine, clip, options), 4)
                    cases.append(row)
                    print(row, flush=True)
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result = {"machine": machine(args.device), "device": args.device, "model": f"F5TTS_v1_Base ({name})",
              "arch_overrides": arch, "torch": torch.__version__, "reference_s": len(ref) / SAMPLE_RATE,
              "text_chars": len(TEXT), "load_average": os.getloadavg(), "cases": cases}
    path = write_result(f"{result['machine']}-gpu" + ("-quick" if args.quick else ""), result, markdown(result))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

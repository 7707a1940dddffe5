"""A model switch on a warm Synthesizer replica: the replica holds one model (`max_models: 1`), its
weights already in the node's cache, and requests alternate between two models, so each one unloads
the other and loads its own (fetch from the cache, weights onto the device, warm-up).

    python bench/model_switch.py              # tiny F5 <-> tiny E2, and F5TTS_v1_Base (random) <-> tiny E2
    python bench/model_switch.py --no-base    # the tiny pair only

For each switch: the replica's load time (`EngineCache.load_s`), the request's latency with the switch
and without it (the same request once more), and the process's resident memory with the large model
held and after it was unloaded. Writes bench/results/<machine>-model-switch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, summary, write_result  # noqa: E402
from bench.engine_vs_f5 import base_checkpoint  # noqa: E402
from speech_service import audio  # noqa: E402
from speech_service.config import SynthesisOptions, SynthesizerSettings  # noqa: E402
from speech_service.models import ModelRegistry, ModelSpec  # noqa: E402
from speech_service.references import Reference  # noqa: E402
from speech_service.storage.voices import sha256  # noqa: E402
from speech_service.synthesis.replica import SynthesisReplica  # noqa: E402
from speech_service.weights.offline import TINY_DIT, TINY_UNETT, prepare  # noqa: E402

REF_TEXT = "The quick brown fox jumps over the lazy dog."
TEXT = "Good morning, and welcome aboard."


def rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def reference() -> Reference:
    t = np.arange(3 * audio.SAMPLE_RATE, dtype=np.float32) / audio.SAMPLE_RATE
    wav = audio.encoding.to_wav_bytes((0.1 * np.sin(2 * np.pi * 180 * t)).astype(np.float32))
    return Reference("bench", sha256(wav), REF_TEXT, wav)


def timed(replica: SynthesisReplica, ref: Reference, model: str, nfe: int) -> float:
    started = time.perf_counter()
    speech = asyncio.run(replica.synthesize(replace(ref, model=model), TEXT, SynthesisOptions(nfe_step=nfe, seed=1)))
    assert not isinstance(speech, Exception), speech
    return time.perf_counter() - started


def switches(specs: list[ModelSpec], settings: SynthesizerSettings, runs: int, nfe: int) -> dict:
    replica = SynthesisReplica(ModelRegistry(specs, specs[0].name, []))
    replica.reconfigure(settings.model_copy(update={"max_models": 1, "preload": []}))
    ref = reference()
    for spec in specs:  # first loads: the node's cache filled, the imports paid
        timed(replica, ref, spec.name, nfe)
    loads: dict[str, list[float]] = {s.name: [] for s in specs}
    switched: dict[str, list[float]] = {s.name: [] for s in specs}
    warm: dict[str, list[float]] = {s.name: [] for s in specs}
    memory: dict[str, list[float]] = {s.name: [] for s in specs}
    for _ in range(runs):
        for spec in specs:
            switched[spec.name].append(timed(replica, ref, spec.name, nfe))
            loads[spec.name].append(replica.models.load_s[spec.name])
            memory[spec.name].append(rss_mb())
            warm[spec.name].append(timed(replica, ref, spec.name, nfe))
    stats = replica.models.stats()
    return {name: {"load_s": summary(loads[name]), "request_with_switch_s": summary(switched[name]),
                   "request_warm_s": summary(warm[name]), "rss_mb_while_held": summary(memory[name]),
                   "loads": stats[name]["loads"], "evictions": stats[name]["evictions"]}
            for name in loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("models/bench"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nfe", type=int, default=2)
    parser.add_argument("--no-base", action="store_true")
    args = parser.parse_args()
    paths = prepare(Path("models/offline"))
    vocoder = str(paths["vocoder"])
    tiny_e2 = ModelSpec(name="e2-tiny", architecture="E2TTS_Base", architecture_overrides=TINY_UNETT,
                        checkpoint=str(paths["e2_checkpoint"]), vocoder=vocoder)
    pairs = {"tiny": [ModelSpec(name="f5-tiny", architecture_overrides=TINY_DIT,
                                checkpoint=str(paths["checkpoint"]), vocoder=vocoder), tiny_e2]}
    if not args.no_base:
        base = base_checkpoint(args.models_dir / "f5-base-random" / "model.safetensors")
        pairs["base"] = [ModelSpec(name="F5TTS_v1_Base-random", checkpoint=str(base), vocoder=vocoder), tiny_e2]
    settings = SynthesizerSettings(device="cpu", cache_dir=str(args.models_dir / "cache"))
    result = {"machine": machine(), "runs": args.runs, "nfe": args.nfe, "text": TEXT, "rss_mb_start": rss_mb(),
              "pairs": {name: switches(specs, settings, args.runs, args.nfe) for name, specs in pairs.items()}}
    print(write_result(f"{machine()}-model-switch", result))
    for pair, models in result["pairs"].items():
        for name, r in models.items():
            print(f"{pair:5} {name:22} load p50 {r['load_s']['p50']:.2f} s  request with switch "
                  f"{r['request_with_switch_s']['p50']:.2f} s, warm {r['request_warm_s']['p50']:.2f} s, "
                  f"RSS {r['rss_mb_while_held']['p50']:.0f} MB")


if __name__ == "__main__":
    main()

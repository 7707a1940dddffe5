"""Time `SynthesisEngine.synthesize` against f5-tts's own `infer_process` on the same inputs.

    python bench/engine_vs_f5.py --model tiny --nfe 32 --runs 5
    python bench/engine_vs_f5.py --model base --nfe 4 --runs 2     # F5TTS_v1_Base arch, random weights

Writes bench/results/<device>-<model>.json. Weights are random (no model hub here), which does not
change the cost of a step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from speech_service import audio
from speech_service.audio import encoding, preparation, uploads
from speech_service.config import SynthesisOptions, SynthesizerSettings
from speech_service.synthesis.engine import SynthesisEngine
from speech_service.weights.offline import TINY_DIT, prepare, write_tiny_f5

REF_TEXT = "The quick brown fox jumps over the lazy dog. Speech synthesis is fun to test."
GEN_TEXT = ("Good morning, and welcome aboard. Today we travel along the coast, past the old harbour "
            "and the lighthouse, and we expect to arrive a little after noon.")


def base_checkpoint(path: Path) -> Path:
    """F5TTS_v1_Base's architecture with random weights, saved as the package's loader expects."""
    from importlib.resources import files

    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    if path.exists():
        return path
    config = OmegaConf.load(str(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml")))
    arch = OmegaConf.to_container(config.model.arch)
    _, vocab_size = get_tokenizer(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), "custom")
    model = CFM(transformer=DiT(**arch, text_num_embeds=vocab_size, mel_dim=100))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("mel_spec.")}, str(path))
    return path


def timed_pair(a, b, runs: int) -> tuple[list[float], list[float]]:
    """Time `a` and `b` alternately (after one warm-up each), so drift on the machine hits both."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            out.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--nfe", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "offline")
    args = parser.parse_args()

    paths = prepare(args.models_dir)
    if args.model == "base":
        checkpoint, overrides = base_checkpoint(args.models_dir / "f5-base-random" / "model.safetensors"), {}
    else:
        checkpoint, overrides = write_tiny_f5(paths["checkpoint"]), TINY_DIT
    settings = SynthesizerSettings(model_name=args.model, architecture_overrides=overrides,
                                   checkpoint=str(checkpoint), vocoder=str(paths["vocoder"]))
    engine = SynthesisEngine.load(settings)

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "ref.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), REF_TEXT], check=True)
        ref = preparation.prepare_reference(uploads.decode(wav.read_bytes(), max_seconds=600))
        ref_path = Path(tmp) / "ref24k.wav"
        ref_path.write_bytes(encoding.to_wav_bytes(ref.audio))
        params = SynthesisOptions(nfe_step=args.nfe, seed=0)
        out_len = len(engine.synthesize(ref.audio, REF_TEXT, GEN_TEXT, params)) / audio.SAMPLE_RATE

        from f5_tts.infer.utils_infer import infer_process

        ours, theirs = timed_pair(
            lambda: engine.synthesize(ref.audio, REF_TEXT, GEN_TEXT, params),
            lambda: infer_process(str(ref_path), REF_TEXT, GEN_TEXT, engine.model, engine.vocoder,
                                  nfe_step=args.nfe, show_info=lambda *_: None, progress=None,
                                  device=engine.device),
            args.runs)

    result = {
        "model": args.model, "nfe_step": args.nfe, "runs": args.runs, "device": engine.device,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "audio_seconds": round(out_len, 2),
        "engine_s": {"min": min(ours), "median": statistics.median(ours), "max": max(ours)},
        "f5_infer_process_s": {"min": min(theirs), "median": statistics.median(theirs), "max": max(theirs)},
    }
    result["engine_rtf"] = result["engine_s"]["median"] / out_len
    result["engine_vs_f5"] = result["engine_s"]["median"] / result["f5_infer_process_s"]["median"]
    target = REPO / "bench" / "results" / f"{engine.device.split(':')[0]}-{args.model}-nfe{args.nfe}.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

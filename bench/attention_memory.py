"""Peak CPU memory of one batched model call, with the padding mask as f5-tts builds it and as ours.

    python bench/attention_memory.py                        # F5TTS_v1_Base, random weights, 8 x 2000 frames
    python bench/attention_memory.py --model tiny --frames 1500

A batch of several items hands the DiT a padding mask. f5-tts's attention expands it to
batch x heads x frames x frames, which the attention kernel turns into floats (with guidance the
batch is twice the items); `sampling.PaddingMaskAttention` hands it over as batch x 1 x 1 x frames.
Each case loads the model as the engine does (`loading.load_f5`) in a process of its own, then runs
one ODE step with guidance; it reports the process's peak resident set (ru_maxrss) before and after
that step (tracemalloc does not see torch's allocations). "f5" puts f5-tts's own processor back.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ATTENTIONS = ("f5", "broadcast")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def load(model: str, models_dir: Path):
    import torch

    from bench.random_models import f5_config, random_f5
    from speech_service.synthesis import f5_modules
    from speech_service.synthesis.loading import load_f5
    from speech_service.weights.offline import TINY_DIT

    arch = {**(TINY_DIT if model == "tiny" else {}), "attn_mask_enabled": True}  # as SynthesisEngine.load
    checkpoint = random_f5(models_dir / f"f5-{model}-random" / "model.safetensors", arch)
    config = f5_config()
    return load_f5(f5_modules.backbone_class(config["backbone"]), {**config["arch"], **arch}, config["mel_spec"],
                   checkpoint, "", False, "cpu", torch.float32)


def f5_attention(model) -> None:
    """f5-tts's own processor again, with the same settings (the memory before our change)."""
    from speech_service.synthesis import f5_modules
    from speech_service.synthesis.sampling import PaddingMaskAttention

    for module in model.modules():
        if isinstance(getattr(module, "processor", None), PaddingMaskAttention):
            processor = f5_modules.submodule("modules").AttnProcessor.__new__(
                f5_modules.submodule("modules").AttnProcessor)
            processor.__dict__.update(module.processor.__dict__)
            module.processor = processor


def one_step(model, items: int, frames: int) -> None:
    import torch

    from speech_service.synthesis.sampling import sample_batch

    conds = [torch.randn(frames // 4, 100) for _ in range(items)]
    text = list("a quick brown fox jumps over the lazy dog " * max(1, frames // 200))
    with torch.inference_mode():
        sample_batch(model, conds, [text] * items, [frames] * items, list(range(items)), steps=1, cfg_strength=2.0,
                     sway_sampling_coef=-1.0)


def case(model_name: str, attention: str, items: int, frames: int, models_dir: Path) -> dict:
    model = load(model_name, models_dir)
    if attention == "f5":
        f5_attention(model)
    one_step(model, 2, 64)  # thread pools and kernels chosen before the baseline
    before = peak_rss_gib()
    start = time.perf_counter()
    one_step(model, items, frames)
    return {"model": model_name, "attention": attention, "items": items, "frames": frames,
            "peak_rss_before_gib": round(before, 3), "peak_rss_gib": round(peak_rss_gib(), 3),
            "step_growth_gib": round(peak_rss_gib() - before, 3), "seconds": round(time.perf_counter() - start, 1)}


def measure(model: str = "base", items: int = 8, frames: int = 2000, attentions=ATTENTIONS,
            models_dir: Path = REPO / "models" / "bench") -> list[dict]:
    """Each case in a fresh process, one after the other (a peak is per process)."""
    rows = []
    for attention in attentions:
        out = subprocess.run([sys.executable, __file__, "--case", attention, "--model", model, "--items", str(items),
                              "--frames", str(frames), "--models-dir", str(models_dir)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["base", "tiny"], default="base")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "bench")
    parser.add_argument("--case", choices=ATTENTIONS, help="run one case in this process and print it")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.model, args.case, args.items, args.frames, args.models_dir)))
        return
    rows = measure(args.model, args.items, args.frames, models_dir=args.models_dir)
    from bench.common import machine, write_result

    path = write_result(f"{machine()}-attention-memory-{args.model}", {"machine": machine(), "cases": rows})
    print(json.dumps(rows, indent=2), "\n", path)


if __name__ == "__main__":
    main()

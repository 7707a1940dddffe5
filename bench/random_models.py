"""Models with random weights for the benchmarks: F5-TTS with any f5-tts architecture and Vocos with
the architecture of charactr/vocos-mel-24khz (no model hub needed; the cost of a step does not
depend on the weights), and a speech-like reference clip."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
import yaml

from speech_service.weights.offline import TINY_VOCOS

SAMPLE_RATE = 24000
VOCOS_24KHZ = {**TINY_VOCOS,
               "backbone": {"class_path": "vocos.models.VocosBackbone",
                            "init_args": {"input_channels": 100, "dim": 512, "intermediate_dim": 1536,
                                          "num_layers": 8}},
               "head": {"class_path": "vocos.heads.ISTFTHead",
                        "init_args": {"dim": 512, "n_fft": 1024, "hop_length": 256, "padding": "center"}}}


def f5_config(architecture: str = "F5TTS_v1_Base") -> dict:
    from omegaconf import OmegaConf

    config = OmegaConf.load(str(files("f5_tts").joinpath(f"configs/{architecture}.yaml")))
    return OmegaConf.to_container(config.model)


def random_f5(path: Path, arch: dict, architecture: str = "F5TTS_v1_Base") -> Path:
    """A checkpoint of `architecture` with `arch` over its own, every parameter random (no all-zero
    layer that skips work); written once."""
    from safetensors.torch import save_file

    from speech_service.synthesis import f5_modules

    if path.exists():
        return path
    config = f5_config(architecture)
    _, vocab_size = f5_modules.submodule("utils").get_tokenizer(
        str(files("f5_tts").joinpath("infer/examples/vocab.txt")), "custom")
    torch.manual_seed(0)
    model = f5_modules.submodule("cfm").CFM(transformer=f5_modules.backbone_class(config["backbone"])(
        **{**config["arch"], **arch}, text_num_embeds=vocab_size, mel_dim=100))
    with torch.no_grad():
        for p in model.parameters():
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

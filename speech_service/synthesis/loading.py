"""F5-TTS and Vocos built the way `f5_tts.infer.utils_infer` builds them, on the target device."""

from __future__ import annotations

import logging
import warnings
from importlib.resources import files
from pathlib import Path

import torch

from speech_service.synthesis import f5_modules

logger = logging.getLogger(__name__)


def _dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


def load_f5(backbone: type, arch: dict, mel_spec: dict, checkpoint: Path, vocab: str, use_ema: bool,
            device: str, dtype: torch.dtype):
    """The CFM model as `f5_tts.infer.utils_infer.load_model` + `load_checkpoint` build it (f5-tts 1.1),
    with the package's own classes and key handling, but built on `device` and with the weights
    read straight onto it (no copy through host memory first). With `attn_mask_enabled`, its
    attention takes the padding mask as one that broadcasts (`sampling.mask_padding`)."""
    from speech_service.synthesis.sampling import mask_padding

    utils = f5_modules.submodule("utils")
    cfm = f5_modules.submodule("cfm")
    vocab_char_map, vocab_size = utils.get_tokenizer(
        vocab or str(files("f5_tts").joinpath("infer/examples/vocab.txt")), "custom")
    with torch.device(device), warnings.catch_warnings():
        # f5-tts warns that the mask costs much GPU memory; `mask_padding` below is why it does not
        warnings.filterwarnings("ignore", message="attn_mask_enabled=True", category=UserWarning)
        model = cfm.CFM(
            transformer=backbone(**arch, text_num_embeds=vocab_size, mel_dim=mel_spec["n_mel_channels"]),
            mel_spec_kwargs=mel_spec,
            odeint_kwargs={"method": "euler"},
            vocab_char_map=vocab_char_map,
        )
    model = model.to(dtype)
    safetensors = checkpoint.suffix == ".safetensors"
    if safetensors:
        from safetensors.torch import load_file

        state = load_file(str(checkpoint), device=device)
    else:
        state = torch.load(str(checkpoint), map_location=device, weights_only=True)
    if use_ema:  # the EMA weights, keys renamed as load_checkpoint does
        ema = state if safetensors else state["ema_model_state_dict"]
        weights = {k.replace("ema_model.", ""): v for k, v in ema.items() if k not in ("initted", "step")}
        for key in ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"):
            weights.pop(key, None)  # f5-tts: "patch for backward compatibility, 305e3ea"
    else:
        weights = state if safetensors else state["model_state_dict"]
    model.load_state_dict(weights)
    mask_padding(model)
    return model.eval()


def load_vocos(vocos_class: type, directory: Path, device: str):
    """Vocos as `f5_tts.infer.utils_infer.load_vocoder("vocos", is_local=True)` loads it, on `device`."""
    with torch.device(device):
        vocoder = vocos_class.from_hparams(str(directory / "config.yaml"))
    state = torch.load(str(directory / "pytorch_model.bin"), map_location=device, weights_only=True)
    vocoder.load_state_dict(state)
    return vocoder.eval()

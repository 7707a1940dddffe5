"""The synthesis engine: F5-TTS + Vocos through the `f5-tts` package's own loaders, no Ray.

`SynthesisEngine.load(settings)` builds the model the way `f5_tts.api.F5TTS` does; `synthesize`
splits text into sentence-sized segments that fit beside the reference clip, guards that no
segment asks the model for more text than it has mel frames to fill, samples each segment with
`CFM.sample`, vocodes, and cross-fades.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from . import f5_modules
from .audio import SAMPLE_RATE
from .config import SynthesisDefaults, SynthesizerSettings
from .devices import torch_device
from .errors import BadRequest, Unprocessable
from .model_source import fetch_dir, fetch_file

logger = logging.getLogger(__name__)

HOP_LENGTH = 256
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH
TARGET_RMS = 0.1
VOCODER_FILES = ["config.yaml", "pytorch_model.bin"]


@dataclass(frozen=True)
class SynthesisParams:
    nfe_step: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    cross_fade_duration: float = 0.15
    speed: float = 1.0
    seed: int | None = None

    @classmethod
    def from_request(cls, defaults: SynthesisDefaults, **overrides) -> SynthesisParams:
        values = defaults.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Segment:
    text: str
    duration_frames: int  # reference + generated frames the model fills


class _NoClock:
    def phase(self, name: str):
        return nullcontext()


def _dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


def chunk_text(text: str, max_chars: int = 135) -> list[str]:
    """Sentences joined into chunks of at most `max_chars` UTF-8 bytes: f5-tts's own chunking
    (`f5_tts.infer.utils_infer.chunk_text`, f5-tts 1.1), copied because importing that module costs
    6-9 s of cold start (it imports transformers' pipelines)."""
    chunks = []
    current = ""
    for sentence in re.split(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])", text):
        if not sentence:
            continue
        spaced = sentence + " " if len(sentence[-1].encode("utf-8")) == 1 else sentence
        if len(current.encode("utf-8")) + len(sentence.encode("utf-8")) <= max_chars:
            current += spaced
        else:
            if current:
                chunks.append(current.strip())
            current = spaced
    if current:
        chunks.append(current.strip())
    return chunks


def split_text(text: str, max_bytes: int) -> list[str]:
    """Sentence-sized pieces of at most `max_bytes` UTF-8 bytes (f5-tts's chunking, then words)."""
    pieces: list[str] = []
    for chunk in chunk_text(text, max_chars=max_bytes):
        while len(chunk.encode()) > max_bytes:  # no punctuation to split at: split between words
            head = chunk.encode()[:max_bytes].decode(errors="ignore")
            cut = head.rfind(" ")
            cut = cut if cut > 0 else len(head)
            pieces.append(chunk[:cut].strip())
            chunk = chunk[cut:].strip()
        if chunk:
            pieces.append(chunk)
    return pieces


def normalize_ref_text(ref_text: str) -> str:
    """F5 expects the reference transcript to end a sentence and be followed by a space."""
    text = ref_text.strip()
    if not re.search(r"[.!?。！？]$", text):
        text += "."
    return text + " "


class SynthesisEngine:
    def __init__(self, model, vocoder, *, device: str, model_name: str, max_segment_seconds: float,
                 defaults: SynthesisDefaults | None = None):
        self.model = model
        self.vocoder = vocoder
        self._lock = threading.Lock()  # the DiT caches text features between ODE steps: one call at a time
        self.device = device
        self.model_name = model_name
        self.defaults = defaults or SynthesisDefaults()
        self.max_segment_seconds = max_segment_seconds
        # F5's text position table is finite: longer segments fail deep inside the model.
        position_table = getattr(getattr(model.transformer, "text_embed", None), "precompute_max_pos", 8192)
        self.max_frames = min(position_table, int(max_segment_seconds * 1.5 * FRAMES_PER_SECOND))

    @classmethod
    def load(cls, settings: SynthesizerSettings, clock=None) -> SynthesisEngine:
        """Build the engine; `clock` (a `coldstart.ColdStartClock`) times the phases of the start."""
        clock = clock or _NoClock()
        device = torch_device(settings.device)
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        cfg = OmegaConf.load(str(files("f5_tts").joinpath(f"configs/{settings.architecture}.yaml")))
        if cfg.model.mel_spec.mel_spec_type != "vocos":
            raise ValueError(f"{settings.architecture} needs the {cfg.model.mel_spec.mel_spec_type} vocoder; "
                             "this service runs Vocos")
        with clock.phase("imports"):
            backbone = f5_modules.backbone_class(cfg.model.backbone)
            f5_modules.submodule("cfm")
            from vocos import Vocos
        with clock.phase("fetch"):
            checkpoint = fetch_file(settings.checkpoint, settings.cache_dir)
            vocoder_dir = fetch_dir(settings.vocoder, settings.cache_dir, VOCODER_FILES)
            vocab = str(fetch_file(settings.vocab, settings.cache_dir)) if settings.vocab else ""
        with clock.phase("weights"):
            logger.info("loading %s from %s on %s, %d threads", settings.model_name, checkpoint, device,
                        torch.get_num_threads())
            arch = {**OmegaConf.to_container(cfg.model.arch), **settings.architecture_overrides}
            model = load_f5(backbone, arch, OmegaConf.to_container(cfg.model.mel_spec), checkpoint, vocab,
                            settings.use_ema, device, _dtype(settings.dtype, device))
            vocoder = load_vocos(Vocos, vocoder_dir, device)
        engine = cls(model, vocoder, device=device, model_name=settings.model_name,
                     max_segment_seconds=settings.max_segment_seconds, defaults=settings.defaults)
        with clock.phase("warm_up"):
            engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """One tiny synthesis, so the first request does not pay for lazy initialisation
        (the text front end's dictionaries, kernels chosen on first use)."""
        t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        reference = 0.1 * np.sin(2 * np.pi * 220 * t)
        self.synthesize(reference, "Warm up.", "Hello.", SynthesisParams(nfe_step=2, seed=0))

    # -- planning (pure, cheap) ------------------------------------------------------------
    def plan(self, ref_samples: int, ref_text: str, text: str, speed: float = 1.0) -> list[Segment]:
        """Split `text` into segments and check each fits the frames the model must fill."""
        convert_char_to_pinyin = f5_modules.submodule("utils").convert_char_to_pinyin
        ref_text = normalize_ref_text(ref_text)
        ref_frames = ref_samples // HOP_LENGTH
        ref_s = ref_samples / SAMPLE_RATE
        ref_bytes = len(ref_text.encode())
        if not text.strip():
            raise BadRequest("The input text is empty.", code="empty_input")
        room_s = max(self.max_segment_seconds - ref_s, 1.0)
        max_bytes = max(int(ref_bytes / ref_s * room_s * speed), 8)
        segments = []
        for piece in split_text(text, max_bytes):
            local_speed = 0.3 if len(piece.encode()) < 10 else speed  # f5-tts: stretch very short text
            duration = ref_frames + int(ref_frames / ref_bytes * len(piece.encode()) / local_speed)
            tokens = len(convert_char_to_pinyin([ref_text + piece])[0])
            if tokens > duration:
                raise Unprocessable(
                    f"The voice's transcript and text need {tokens} text positions but the clip and "
                    f"speed give only {duration} mel frames: the transcript is too long for its "
                    "clip. Correct it with PATCH /v1/voices/{name}.",
                    code="text_exceeds_frames",
                )
            if duration > self.max_frames:
                raise Unprocessable(
                    f"A segment would need {duration / FRAMES_PER_SECOND:.0f} s of audio, over the "
                    f"model's {self.max_frames / FRAMES_PER_SECOND:.0f} s limit; raise speed or "
                    "shorten the text between punctuation marks.",
                    code="segment_too_long",
                )
            segments.append(Segment(piece, duration))
        return segments

    # -- synthesis ------------------------------------------------------------------------
    def synthesize_segments(self, reference: np.ndarray, ref_text: str, text: str,
                            params: SynthesisParams) -> Iterator[np.ndarray]:
        """Yield one waveform (float32, 24 kHz) per text segment, in order."""
        convert_char_to_pinyin = f5_modules.submodule("utils").convert_char_to_pinyin
        segments = self.plan(len(reference), ref_text, text, params.speed)
        ref_text = normalize_ref_text(ref_text)
        audio = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)).unsqueeze(0)
        rms = float(torch.sqrt(torch.mean(torch.square(audio))))
        if rms < TARGET_RMS:
            audio = audio * TARGET_RMS / max(rms, 1e-8)
        audio = audio.to(self.device)
        ref_frames = len(reference) // HOP_LENGTH
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        for segment in segments:
            with self._lock, torch.inference_mode():
                mel, _ = self.model.sample(
                    cond=audio,
                    text=convert_char_to_pinyin([ref_text + segment.text]),
                    duration=segment.duration_frames,
                    steps=params.nfe_step,
                    cfg_strength=params.cfg_strength,
                    sway_sampling_coef=params.sway_sampling_coef,
                    seed=seed,
                )
                mel = mel.to(torch.float32)[:, ref_frames:, :].permute(0, 2, 1)
                wave = self.vocoder.decode(mel)
            if rms < TARGET_RMS:
                wave = wave * rms / TARGET_RMS
            yield wave.squeeze().float().cpu().numpy().astype(np.float32)

    def stream(self, reference: np.ndarray, ref_text: str, text: str, params: SynthesisParams) -> Iterator[np.ndarray]:
        """The speech, cross-faded, in pieces that can be played as they come."""
        waves = self.synthesize_segments(reference, ref_text, text, params)
        return cross_fade(waves, int(params.cross_fade_duration * SAMPLE_RATE))

    def synthesize(self, reference: np.ndarray, ref_text: str, text: str, params: SynthesisParams) -> np.ndarray:
        return np.concatenate(list(self.stream(reference, ref_text, text, params)))


def load_f5(backbone: type, arch: dict, mel_spec: dict, checkpoint: Path, vocab: str, use_ema: bool,
            device: str, dtype: torch.dtype):
    """The CFM model as `f5_tts.infer.utils_infer.load_model` + `load_checkpoint` build it (f5-tts 1.1),
    with the package's own classes and key handling, but built on `device` and with the weights
    read straight onto it (no copy through host memory first)."""
    utils = f5_modules.submodule("utils")
    cfm = f5_modules.submodule("cfm")
    vocab_char_map, vocab_size = utils.get_tokenizer(
        vocab or str(files("f5_tts").joinpath("infer/examples/vocab.txt")), "custom")
    with torch.device(device):
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
    return model.eval()


def load_vocos(vocos_class: type, directory: Path, device: str):
    """Vocos as `f5_tts.infer.utils_infer.load_vocoder("vocos", is_local=True)` loads it, on `device`."""
    with torch.device(device):
        vocoder = vocos_class.from_hparams(str(directory / "config.yaml"))
    state = torch.load(str(directory / "pytorch_model.bin"), map_location=device, weights_only=True)
    vocoder.load_state_dict(state)
    return vocoder.eval()


def cross_fade(waves: Iterable[np.ndarray], overlap: int) -> Iterator[np.ndarray]:
    """Join waveforms, blending up to `overlap` samples linearly at each seam.

    Yields as soon as a piece is final: each wave's last `overlap` samples are held back until the
    next wave arrives to blend with.
    """
    held = np.zeros(0, dtype=np.float32)
    for wave in waves:
        n = min(len(held), len(wave))
        if n:
            fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
            seam = held[len(held) - n :] * (1 - fade) + wave[:n] * fade
            wave = np.concatenate([held[: len(held) - n], seam, wave[n:]])
        elif len(held):
            wave = np.concatenate([held, wave])
        keep = min(overlap, len(wave))
        if len(wave) > keep:
            yield wave[: len(wave) - keep].astype(np.float32)
        held = wave[len(wave) - keep :]
    if len(held):
        yield held.astype(np.float32)

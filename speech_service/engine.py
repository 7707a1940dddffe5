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
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch
from omegaconf import OmegaConf

from .audio import SAMPLE_RATE
from .config import SynthesisDefaults, SynthesizerSettings
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


def pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


def split_text(text: str, max_bytes: int) -> list[str]:
    """Sentence-sized pieces of at most `max_bytes` UTF-8 bytes (f5-tts's chunking, then words)."""
    from f5_tts.infer.utils_infer import chunk_text

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
    def load(cls, settings: SynthesizerSettings) -> SynthesisEngine:
        from f5_tts.infer.utils_infer import load_model, load_vocoder
        from hydra.utils import get_class

        device = pick_device(settings.device)
        cfg = OmegaConf.load(str(files("f5_tts").joinpath(f"configs/{settings.architecture}.yaml")))
        backbone = get_class(f"f5_tts.model.{cfg.model.backbone}")
        arch = {**OmegaConf.to_container(cfg.model.arch), **settings.architecture_overrides}
        mel_spec_type = cfg.model.mel_spec.mel_spec_type
        checkpoint = fetch_file(settings.checkpoint, settings.cache_dir)
        vocoder_dir = fetch_dir(settings.vocoder, settings.cache_dir, VOCODER_FILES)
        vocab = str(fetch_file(settings.vocab, settings.cache_dir)) if settings.vocab else ""
        logger.info("loading %s from %s on %s", settings.model_name, checkpoint, device)
        model = load_model(backbone, arch, str(checkpoint), mel_spec_type, vocab, "euler", settings.use_ema, device)
        model = model.to(_dtype(settings.dtype, device))
        vocoder = load_vocoder(mel_spec_type, True, str(vocoder_dir), device)
        return cls(model, vocoder, device=device, model_name=settings.model_name,
                   max_segment_seconds=settings.max_segment_seconds, defaults=settings.defaults)

    # -- planning (pure, cheap) ------------------------------------------------------------
    def plan(self, ref_samples: int, ref_text: str, text: str, speed: float = 1.0) -> list[Segment]:
        """Split `text` into segments and check each fits the frames the model must fill."""
        from f5_tts.model.utils import convert_char_to_pinyin

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
        from f5_tts.model.utils import convert_char_to_pinyin

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

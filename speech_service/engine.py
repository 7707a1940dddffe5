"""The synthesis engine: F5-TTS + Vocos through the `f5-tts` package's own loaders, no Ray.

`SynthesisEngine.load(settings)` builds the model the way `f5_tts.api.F5TTS` does. `plan` splits
text into segments that fit beside the reference clip (as long as fit for a whole response; for a
stream, the first about one sentence and then growing) and guards that no segment asks the model
for more text than it has mel frames to fill.
`synthesize_batch` samples segments of any requests together, one model call per group of equal
sampling knobs (`sampling.sample_batch`, each item exactly its solo result), and vocodes each;
`synthesize` and `stream` are one request's speech, cross-faded. `items` first writes numbers and
symbols of the text and of the voice's transcript as words (`spoken_text`), so the plan and its guard
see what the model reads.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.resources import files
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from . import f5_modules
from .audio import HOP_LENGTH, SAMPLE_RATE, cross_fade, join
from .config import F5_DEFAULTS, SynthesisOptions, SynthesizerSettings
from .devices import torch_device
from .errors import BadRequest, Unprocessable
from .model_source import fetch_dir, fetch_file
from .references import ClipCache
from .spoken_text import normalize_for_speech

logger = logging.getLogger(__name__)

FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH
TARGET_RMS = 0.1
VOCODER_FILES = ["config.yaml", "pytorch_model.bin"]


@dataclass(frozen=True)
class Segment:
    text: str
    duration_frames: int  # reference + generated frames the model fills


class _NoClock:
    def phase(self, name: str):
        return nullcontext()


@dataclass(frozen=True)
class Clip:
    """A reference clip made ready for the model once (replicas cache these by the clip's sha256)."""

    mel: torch.Tensor  # frames x n_mels, on the model's device
    samples: int
    rms: float  # before loudness normalisation; the speech is scaled back to it


@dataclass(frozen=True)
class BatchItem:
    """One segment of one request: what `synthesize_batch` needs to make its audio."""

    clip: Clip
    ref_text: str  # normalised (`normalize_ref_text`)
    segment: Segment
    options: SynthesisOptions  # every knob set
    seed: int


def _dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


# f5-tts's clause boundaries (`utils_infer.chunk_text`): after , ; : . ! ? and their CJK forms.
_CLAUSE_END = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")
_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]]*$")


# A full stop after a title or an initial does not end a clause ("Dr. Who", "J. R. R. Tolkien",
# "e.g. this"), nor one before a lowercase word ("etc. and", "U.S. law"): seams there split a name.
_ABBREVIATION_END = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Mx|Dr|Prof|St|Mt|Jr|Sr|Gen|Col|Capt|Lt|Sgt|Rev|"
                               r"Sen|Rep|Gov|No|vs|cf|e\.g|i\.e|[A-Z])\.$")


def _breaks_between(before: str, after: str) -> bool:
    return not (before.endswith(".") and (_ABBREVIATION_END.search(before) or after[:1].islower()))


def _clauses(text: str, max_bytes: int) -> list[str]:
    """Clauses of at most `max_bytes` UTF-8 bytes; a longer clause is split between words."""
    joined: list[str] = []
    for part in filter(None, (p.strip() for p in _CLAUSE_END.split(text))):
        if joined and not _breaks_between(joined[-1], part):
            joined[-1] += " " + part
        else:
            joined.append(part)
    pieces: list[str] = []
    for clause in joined:
        while len(clause.encode()) > max_bytes:  # no punctuation to split at: split between words
            head = clause.encode()[:max_bytes].decode(errors="ignore")
            cut = head.rfind(" ")
            cut = cut if cut > 0 else len(head)
            pieces.append(clause[:cut].strip())
            clause = clause[cut:].strip()
        if clause:
            pieces.append(clause)
    return pieces


_ENDS_CLAUSE = re.compile(r"[;:,.!?；：，。！？][\"')\]]*$")
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*•–]|(\d{1,3})[.)])[ \t]+")  # "- milk", "2. eggs", "3) bread"


def _paragraphs(text: str) -> list[str]:
    """Paragraphs (split at blank lines) and list items (a line of its own each), on one line each."""
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        item = _LIST_ITEM.match(line)
        if item or not line.strip():
            paragraphs.append([])
        if item:  # a bullet is not read; a number is, followed by a pause
            line = (f"{item.group(1)}, " if item.group(1) else "") + line[item.end():]
        paragraphs[-1].append(line)
    return [flat for lines in paragraphs if (flat := " ".join(" ".join(lines).split()))]


def flatten_layout(text: str) -> str:
    """The text on one line, its layout turned into punctuation: a paragraph or list item that ends
    without it (a heading, "- milk") gets a full stop, so it keeps its pause; a single line break,
    often only where an editor wrapped the text, is a space. Runs before `normalize_for_speech`,
    which would turn "2." into a word."""
    paragraphs = _paragraphs(text)
    ended = [p if _ENDS_CLAUSE.search(p) else p + "." for p in paragraphs[:-1]]
    return " ".join([*ended, *paragraphs[-1:]])


def split_text(text: str, max_bytes: int, *, short_first: bool = False) -> list[str]:
    """Segments of at most `max_bytes` UTF-8 bytes, each as long as fits: every segment repeats the
    reference in the model's input, and every boundary is a seam, so fewer is better.

    With `short_first` (streaming), the first segment ends at the first sentence end, so the first
    audio comes after one sentence is synthesized; the next may hold twice its bytes, each later
    one twice the one before, up to `max_bytes`, so long inputs soon get long segments. Segments
    end at a sentence end where one fits, else at a clause end, else between words.
    """
    segments: list[str] = []
    current: list[str] = []
    budget = max_bytes

    def close(upto: int) -> None:
        nonlocal budget, current
        segments.append(" ".join(current[:upto]))
        if short_first:
            budget = min(max_bytes, 2 * (len(segments[0].encode()) if len(segments) == 1 else budget))
        current = current[upto:]

    for clause in _clauses(text, max_bytes):
        while current and len(" ".join([*current, clause]).encode()) > budget:
            ends = [i + 1 for i, c in enumerate(current) if _SENTENCE_END.search(c)]
            close(ends[-1] if ends else len(current))
        current.append(clause)
        if short_first and not segments and _SENTENCE_END.search(clause):
            close(len(current))
    if current:
        close(len(current))
    return segments


def normalize_ref_text(ref_text: str) -> str:
    """F5 expects the reference transcript to end a sentence and be followed by a space."""
    text = ref_text.strip()
    if not re.search(r"[.!?。！？]$", text):
        text += "."
    return text + " "


class SynthesisEngine:
    def __init__(self, model, vocoder, *, device: str, model_name: str, max_segment_seconds: float,
                 defaults: SynthesisOptions | None = None, max_batch_size: int = 8,
                 max_batch_frames: int = 16384, reference_cache_size: int = 64):
        # No engine-wide lock: the DiT keeps its between-step text cache per thread (f5-tts 1.1.22)
        # and `sample_batch` clears it around each call, so calls from several threads are safe.
        self.model = model
        self.vocoder = vocoder
        self.device = device
        self.model_name = model_name
        self.defaults = defaults or SynthesisOptions()
        self.max_segment_seconds = max_segment_seconds
        self.max_batch_size = max_batch_size
        self.max_batch_frames = max_batch_frames
        self.batch_sizes: Counter[int] = Counter()  # model calls by number of segments; for operators
        self.on_batch: Callable[[int], object] | None = None  # also told each call's size (metrics)
        self.normalize_text = True  # numbers and symbols as words (`spoken_text`); a live setting
        self.clips = ClipCache(self.prepare, reference_cache_size)  # voices' clips, prepared once
        self._stats_lock = threading.Lock()
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
            # Batched items must not attend to each other's padding (see sampling.py); a solo call
            # passes no mask, so this changes nothing for it.
            arch["attn_mask_enabled"] = True
            model = load_f5(backbone, arch, OmegaConf.to_container(cfg.model.mel_spec), checkpoint, vocab,
                            settings.use_ema, device, _dtype(settings.dtype, device))
            vocoder = load_vocos(Vocos, vocoder_dir, device)
        engine = cls(model, vocoder, device=device, model_name=settings.model_name,
                     max_segment_seconds=settings.max_segment_seconds, defaults=settings.defaults,
                     max_batch_size=settings.max_batch_size, max_batch_frames=settings.max_batch_frames,
                     reference_cache_size=settings.reference_cache_size)
        engine.normalize_text = settings.normalize_text
        with clock.phase("warm_up"):
            engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """One tiny synthesis, so the first request does not pay for lazy initialisation
        (the text front end's dictionaries, kernels chosen on first use)."""
        t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        reference = 0.1 * np.sin(2 * np.pi * 220 * t)
        self.synthesize(reference, "Warm up.", "Hello.", SynthesisOptions(nfe_step=2, seed=0))

    def resolve(self, options: SynthesisOptions | None) -> SynthesisOptions:
        """Every knob set: the request's, else the configured default, else F5's."""
        return (options or SynthesisOptions()).over(self.defaults).over(F5_DEFAULTS)

    # -- planning (pure, cheap) ------------------------------------------------------------
    def plan(self, ref_samples: int, ref_text: str, text: str, speed: float = 1.0, *,
             streaming: bool = False) -> list[Segment]:
        """Split `text` into segments (`split_text`; a short first one when `streaming`) and check
        each fits the frames the model must fill."""
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
        for piece in split_text(text, max_bytes, short_first=streaming):
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

    def prepare(self, reference: np.ndarray | Clip) -> Clip:
        """The clip's mel, computed as `CFM.sample` would from the loudness-normalised wave."""
        if isinstance(reference, Clip):
            return reference
        audio = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)).unsqueeze(0)
        rms = float(torch.sqrt(torch.mean(torch.square(audio))))
        if rms < TARGET_RMS:
            audio = audio * TARGET_RMS / max(rms, 1e-8)
        with torch.inference_mode():
            mel = self.model.mel_spec(audio.to(self.device)).permute(0, 2, 1)[0]
        return Clip(mel=mel, samples=len(reference), rms=rms)

    def items(self, reference: np.ndarray | Clip, ref_text: str, text: str,
              options: SynthesisOptions | None = None, *, streaming: bool = False) -> list[BatchItem]:
        """One request as batch items, one per segment (`plan`); raises the planning errors."""
        options = self.resolve(options)
        clip = self.prepare(reference)
        text = flatten_layout(text)
        if self.normalize_text:  # what the model reads, never what is stored
            ref_text, text = normalize_for_speech(ref_text), normalize_for_speech(text)
        segments = self.plan(clip.samples, ref_text, text, options.speed, streaming=streaming)
        seed = options.seed if options.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        ref_text = normalize_ref_text(ref_text)
        return [BatchItem(clip, ref_text, segment, options, seed) for segment in segments]

    # -- synthesis ------------------------------------------------------------------------
    def synthesize_batch(self, items: list[BatchItem]) -> list[np.ndarray]:
        """One waveform (float32, 24 kHz) per item, in order, each exactly as if sampled alone.

        Items sharing sampling knobs run as one model call, split so that no call exceeds
        `max_batch_size` items or `max_batch_frames` padded frames."""
        waves: list[np.ndarray | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: (items[i].options.sampling_key(),
                                                         -items[i].segment.duration_frames))
        for _, same_knobs in groupby(order, key=lambda i: items[i].options.sampling_key()):
            for chunk in self._chunks(list(same_knobs), items):
                for i, wave in zip(chunk, self._sample([items[i] for i in chunk])):
                    waves[i] = wave
        return waves

    def _chunks(self, indices: list[int], items: list[BatchItem]) -> Iterator[list[int]]:
        """Consecutive runs (longest first) within the batch size and the frame budget."""
        chunk: list[int] = []
        for i in indices:
            longest = items[chunk[0]].segment.duration_frames if chunk else items[i].segment.duration_frames
            if chunk and (len(chunk) == self.max_batch_size or (len(chunk) + 1) * longest > self.max_batch_frames):
                yield chunk
                chunk = []
            chunk.append(i)
        if chunk:
            yield chunk

    def _sample(self, items: list[BatchItem]) -> list[np.ndarray]:
        from .sampling import sample_batch

        convert_char_to_pinyin = f5_modules.submodule("utils").convert_char_to_pinyin

        options = items[0].options
        with torch.inference_mode():
            mels = sample_batch(
                self.model,
                conds=[item.clip.mel for item in items],
                texts=[convert_char_to_pinyin([item.ref_text + item.segment.text])[0] for item in items],
                durations=[item.segment.duration_frames for item in items],
                seeds=[item.seed for item in items],
                steps=options.nfe_step,
                cfg_strength=options.cfg_strength,
                sway_sampling_coef=options.sway_sampling_coef,
            )
            waves = []
            for item, mel in zip(items, mels):
                ref_frames = item.clip.samples // HOP_LENGTH
                wave = self.vocoder.decode(mel.to(torch.float32)[ref_frames:, :].T.unsqueeze(0))
                if item.clip.rms < TARGET_RMS:
                    wave = wave * item.clip.rms / TARGET_RMS
                waves.append(wave.squeeze().float().cpu().numpy().astype(np.float32))
        self._record(len(items), len(items) * max(item.segment.duration_frames for item in items))
        return waves

    def _record(self, size: int, frames: int) -> None:
        with self._stats_lock:
            self.batch_sizes[size] += 1
        if self.on_batch is not None:
            self.on_batch(size)
        logger.info("sampled %d segment(s) in one model call, %d padded frames", size, frames)

    def stream(self, reference: np.ndarray | Clip, ref_text: str, text: str,
               options: SynthesisOptions | None = None) -> Iterator[np.ndarray]:
        """The speech, cross-faded, in pieces that can be played as they come."""
        items = self.items(reference, ref_text, text, options, streaming=True)  # errors before the first piece
        waves = (self.synthesize_batch([item])[0] for item in items)
        return cross_fade(waves, cross_fade_samples(items))

    def synthesize(self, reference: np.ndarray | Clip, ref_text: str, text: str,
                   options: SynthesisOptions | None = None) -> np.ndarray:
        """The whole speech; all its segments sampled as one batch."""
        items = self.items(reference, ref_text, text, options)
        return join(self.synthesize_batch(items), cross_fade_samples(items))


def cross_fade_samples(items: list[BatchItem]) -> int:
    return int(items[0].options.cross_fade_duration * SAMPLE_RATE)


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

"""The synthesis engine: F5-TTS + Vocos through the `f5-tts` package's own loaders, no Ray.

`SynthesisEngine.load(settings)` builds the model the way `f5_tts.api.F5TTS` does. `plan_script`
writes numbers and symbols of each line and of its voice's transcript as words (`text.spoken`), then
`plan` splits it into segments that fit beside the reference clip (as long as fit for a whole
response; for a stream, the first about one sentence and then growing) and guards that no segment
asks the model for more text than it has mel frames to fill. `synthesize_batch` samples segments of
any requests and voices together, one model call per group of equal sampling knobs
(`sampling.sample_batch`, each item exactly its solo result), and vocodes each; `synthesize` is one
request's whole speech (the warm-up's; requests go through `SynthesisReplica`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from importlib.resources import files
from itertools import groupby

import numpy as np
import torch
from omegaconf import OmegaConf

from speech_service.audio import HOP_LENGTH, SAMPLE_RATE
from speech_service.audio.seams import join
from speech_service.config import F5_DEFAULTS, SynthesisOptions, SynthesizerSettings
from speech_service.devices import torch_device
from speech_service.errors import BadRequest, Unprocessable
from speech_service.models import ModelSpec
from speech_service.plans import Segment, SpeechPlan
from speech_service.synthesis import f5_modules
from speech_service.synthesis.clips import Clip, ClipCache
from speech_service.synthesis.loading import _dtype, load_f5, load_vocos
from speech_service.text.chinese import reading_tokens
from speech_service.text.mapped import word_spans
from speech_service.text.script import Line, Script
from speech_service.text.segments import normalize_ref_text, split_text
from speech_service.text.spoken import normalize_for_speech, speak
from speech_service.weights.source import fetch_weights

logger = logging.getLogger(__name__)

FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH
TARGET_RMS = 0.1


class _NoClock:
    def phase(self, name: str):
        return nullcontext()


@dataclass(frozen=True)
class BatchItem:
    """One segment of one request: what `synthesize_batch` needs to make its audio."""

    clip: Clip
    ref_text: str  # normalised (`normalize_ref_text`)
    segment: Segment
    options: SynthesisOptions  # every knob set
    seed: int


class SynthesisEngine:
    def __init__(self, model, vocoder, *, device: str, model_name: str, max_segment_seconds: float,
                 defaults: SynthesisOptions | None = None, max_batch_size: int = 8,
                 max_batch_frames: int = 16384, reference_cache_size: int = 64):
        # No engine-wide lock: the DiT keeps its between-step text cache per thread (f5-tts 1.1.22)
        # and `sample_batch` clears it around each call, so calls from several threads are safe.
        self.model, self.vocoder, self.device, self.model_name = model, vocoder, device, model_name
        self.defaults = defaults or SynthesisOptions()
        self.max_segment_seconds = max_segment_seconds
        self.max_batch_size = max_batch_size
        self.max_batch_frames = max_batch_frames
        self.batch_sizes: Counter[int] = Counter()  # model calls by number of segments; for operators
        self.on_batch: Callable[[int], object] | None = None  # also told each call's size (metrics)
        self.live_settings: SynthesizerSettings | None = None  # the replica's, once it applied them
        self.normalize_text = True  # numbers and symbols as words (`spoken_text`); a live setting
        self.clips = ClipCache(self.prepare, reference_cache_size)  # voices' clips, prepared once
        self._stats_lock = threading.Lock()
        # F5's text position table is finite: longer segments fail deep inside the model.
        position_table = getattr(getattr(model.transformer, "text_embed", None), "precompute_max_pos", 8192)
        self.max_frames = min(position_table, int(max_segment_seconds * 1.5 * FRAMES_PER_SECOND))

    @classmethod
    def load(cls, settings: SynthesizerSettings, clock=None, spec: ModelSpec | None = None) -> SynthesisEngine:
        """Build the engine of `spec` (None: the model the weight fields of `settings` state) as
        `settings` runs it; `clock` (a `coldstart.ColdStartClock`) times the phases of the start."""
        clock = clock or _NoClock()
        spec = spec or settings.weights_of(ModelSpec(name=settings.model_name), default=True)
        device = torch_device(settings.device)
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        configs = files("f5_tts").joinpath("configs")
        if not configs.joinpath(f"{spec.architecture}.yaml").is_file():
            raise ValueError(f"no f5-tts architecture {spec.architecture!r}; one of "
                             f"{', '.join(sorted(p.name[:-5] for p in configs.iterdir() if p.name.endswith('.yaml')))}")
        cfg = OmegaConf.load(str(configs.joinpath(f"{spec.architecture}.yaml")))
        if cfg.model.mel_spec.mel_spec_type != "vocos":
            raise ValueError(f"{spec.architecture} needs the {cfg.model.mel_spec.mel_spec_type} vocoder; "
                             "this service runs Vocos")
        with clock.phase("imports"):
            backbone = f5_modules.backbone_class(cfg.model.backbone)
            f5_modules.submodule("cfm")
            from vocos import Vocos
        with clock.phase("fetch"):
            checkpoint, vocoder_dir, vocab = fetch_weights(spec.checkpoint, spec.vocoder, spec.vocab,
                                                           settings.cache_dir)
        with clock.phase("weights"):
            logger.info("loading %s from %s on %s, %d threads", spec.name, checkpoint, device,
                        torch.get_num_threads())
            arch = {**OmegaConf.to_container(cfg.model.arch), **spec.architecture_overrides}
            # Batched items must not attend to each other's padding (see sampling.py); a solo call
            # passes no mask, so this changes nothing for it.
            arch["attn_mask_enabled"] = True
            model = load_f5(backbone, arch, OmegaConf.to_container(cfg.model.mel_spec), checkpoint, vocab,
                            spec.use_ema, device, _dtype(settings.dtype, device))
            vocoder = load_vocos(Vocos, vocoder_dir, device)
        engine = cls(model, vocoder, device=device, model_name=spec.name,
                     max_segment_seconds=settings.max_segment_seconds,
                     defaults=spec.defaults.over(settings.defaults),
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
        ref_frames, ref_s, ref_bytes = ref_samples // HOP_LENGTH, ref_samples / SAMPLE_RATE, len(ref_text.encode())
        if not text.strip():
            raise BadRequest("The input text is empty.", code="empty_input")
        room_s = max(self.max_segment_seconds - ref_s, 1.0)
        max_bytes = max(int(ref_bytes / ref_s * room_s * speed), 8)
        segments = []
        for piece in split_text(text, max_bytes, short_first=streaming):
            local_speed = 0.3 if len(piece.encode()) < 10 else speed  # f5-tts: stretch very short text
            duration = ref_frames + int(ref_frames / ref_bytes * len(piece.encode()) / local_speed)
            tokens = len(reading_tokens(ref_text + piece, convert_char_to_pinyin))
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

    def plan_speech(self, clip: Clip, ref_text: str, text: str, options: SynthesisOptions | None = None, *,
                    streaming: bool = False) -> SpeechPlan:
        """Plain text's plan: its layout read as punctuation, one line in the voice of `clip`."""
        return self.plan_script([clip], [ref_text], Script.plain(text).lines, options, streaming=streaming)

    def plan_script(self, clips: list[Clip], ref_texts: list[str], lines: tuple[Line, ...],
                    options: SynthesisOptions | None = None, *, streaming: bool = False) -> SpeechPlan:
        """The text pipeline's last stages: each line's numbers as words, then segments that fit beside
        its voice's clip (`plan`), the line's pause after its last; knobs resolved, one seed for all."""
        options = self.resolve(options)
        segments: list[Segment] = []
        for line in lines:
            clip, ref_text, spoken = clips[line.reference], ref_texts[line.reference], line.text
            if self.normalize_text:  # what the model reads, never what is stored
                ref_text, spoken = normalize_for_speech(ref_text), speak(spoken)
            if not spoken.text.strip():  # markup with nothing to say (a break alone): a longer pause before
                segments[-1:] = [replace(s, pause_s=s.pause_s + line.pause_s) for s in segments[-1:]]
                continue
            speed = options.speed * line.rate
            planned = self.plan(clip.samples, ref_text, spoken.text, speed, streaming=streaming and not segments)
            spans = word_spans(spoken, [segment.text for segment in planned])
            segments.extend(replace(segment, spans=words, reference=line.reference, speed=speed)
                            for segment, words in zip(planned, spans))
            segments[-1] = replace(segments[-1], pause_s=line.pause_s)
        if not segments:
            raise BadRequest("The input text is empty.", code="empty_input")
        seed = options.seed if options.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        return SpeechPlan(segments, options, seed)

    def plan_items(self, clips: list[Clip], ref_texts: list[str], plan: SpeechPlan) -> list[BatchItem]:
        """The plan's segments as batch items, each with its own voice's clip and transcript."""
        ref_texts = [normalize_ref_text(normalize_for_speech(t) if self.normalize_text else t) for t in ref_texts]
        return [BatchItem(clips[segment.reference], ref_texts[segment.reference], segment, plan.options, plan.seed)
                for segment in plan.segments]

    def items(self, reference: np.ndarray | Clip, ref_text: str, text: str,
              options: SynthesisOptions | None = None, *, streaming: bool = False) -> list[BatchItem]:
        """Plain text as batch items, one per segment; raises the planning errors."""
        clip = self.prepare(reference)
        return self.plan_items([clip], [ref_text], self.plan_speech(clip, ref_text, text, options, streaming=streaming))

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
        from speech_service.synthesis.sampling import sample_batch

        convert_char_to_pinyin = f5_modules.submodule("utils").convert_char_to_pinyin

        options = items[0].options
        with torch.inference_mode():
            mels = sample_batch(
                self.model,
                conds=[item.clip.mel for item in items],
                texts=[reading_tokens(item.ref_text + item.segment.text, convert_char_to_pinyin) for item in items],
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

    def synthesize(self, reference: np.ndarray | Clip, ref_text: str, text: str,
                   options: SynthesisOptions | None = None) -> np.ndarray:
        """The whole speech; all its segments sampled as one batch."""
        items = self.items(reference, ref_text, text, options)
        return join(self.synthesize_batch(items), cross_fade_samples(items))


def cross_fade_samples(items: list[BatchItem]) -> int:
    return int(items[0].options.cross_fade_duration * SAMPLE_RATE)

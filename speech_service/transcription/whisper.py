"""Transcription backends. The default is faster-whisper (CTranslate2)."""

from __future__ import annotations

import hashlib
import logging
import threading
from contextlib import nullcontext
from typing import Protocol

import numpy as np

from speech_service.audio import SAMPLE_RATE
from speech_service.audio.resampling import resample_poly
from speech_service.config import TranscriberSettings
from speech_service.devices import whisper_device
from speech_service.errors import BadRequest
from speech_service.transcription.heard import HeardWord, packed, snap_to_silences, split_heard

logger = logging.getLogger(__name__)


class _NoClock:
    def phase(self, name: str):
        return nullcontext()

WHISPER_RATE = 16_000  # Whisper listens at 16 kHz; references are stored at SAMPLE_RATE
# Clips heard together (`listen_all`): what fits one window, a second of silence between clips.
PACK_WINDOW_S = 28.0
PACK_GAP_S = 1.0


class TranscriptionBackend(Protocol):
    model_name: str

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Text spoken in mono float32 24 kHz `audio`."""

    def listen(self, audio: np.ndarray, language: str | None = None) -> list[HeardWord]:
        """The words spoken in it, timed."""


class WhisperBackend:
    def __init__(self, settings: TranscriberSettings, clock=None):
        """`clock` (a `coldstart.ColdStartClock`) times the phases of the start."""
        clock = clock or _NoClock()
        with clock.phase("imports"):
            from faster_whisper import WhisperModel
        device = whisper_device(settings.device)
        self.model_name = settings.model
        self.beam_size = settings.beam_size
        logger.info("loading Whisper %s on %s with %s CPU threads", settings.model, device, settings.cpu_threads)
        with clock.phase("weights"):  # a model name is fetched from the hub here, once
            self.model = WhisperModel(settings.model, device=device, compute_type=settings.compute_type,
                                      cpu_threads=settings.cpu_threads or 0, download_root=settings.cache_dir)
        self.encoder = EncoderCache(self.model.encode)
        self.model.encode = self.encoder  # faster-whisper calls self.encode for every window
        with clock.phase("warm_up"):
            self.warm_up()

    def warm_up(self) -> None:
        """One short encoder pass and one decoder step, so that a device's lazy set-up (CUDA's) is
        not paid by the first upload. A full 30 s window would cost a CPU replica's cold start
        about as much as the first upload's own encoder pass, and the first upload on a CPU runs no
        slower without it."""
        import ctranslate2

        second = np.zeros((1, self.model.model.n_mels, 100), dtype=np.float32)  # 100 frames: 1 s
        self.model.model.detect_language(self.model.model.encode(ctranslate2.StorageView.from_array(second)))

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        segments, _ = self._decode(audio, language)
        return " ".join(s.text.strip() for s in segments).strip()

    def listen(self, audio: np.ndarray, language: str | None = None) -> list[HeardWord]:
        """The words heard in mono float32 24 kHz `audio`, timed (`heard.snap_to_silences`).

        One decoding pass, its length bounded by the clip's: speech that is noise (a failed synthesis)
        must not cost the temperature fallback's five more passes, or a loop of hallucinated text
        (about 3 tokens a second is speech; 8 leave room for numbers)."""
        segments, audio16k = self._decode(audio, language, word_timestamps=True, temperature=0.0,
                                          max_new_tokens=_max_tokens(len(audio) * WHISPER_RATE // SAMPLE_RATE))
        words = [HeardWord(w.word, w.start, w.end) for s in segments for w in (s.words or [])]
        return snap_to_silences(words, audio16k, WHISPER_RATE)

    def listen_all(self, clips: list[np.ndarray], language: str | None = None) -> list[list[HeardWord]]:
        """`listen` for many clips at once: clips that fit one of Whisper's 30 s windows together
        (with a second of silence between them) are heard in one pass, whose cost is mostly the
        window's, not the audio's."""
        heard: list[list[HeardWord]] = [[] for _ in clips]
        gap = np.zeros(int(PACK_GAP_S * SAMPLE_RATE), np.float32)
        for run in packed([len(c) for c in clips], SAMPLE_RATE, PACK_WINDOW_S, PACK_GAP_S):
            joined = np.concatenate([part for i in run for part in (gap, clips[i])][1:])
            starts = list(np.cumsum([0] + [len(clips[i]) + len(gap) for i in run[:-1]]) / SAMPLE_RATE)
            durations = [len(clips[i]) / SAMPLE_RATE for i in run]
            for i, words in zip(run, split_heard(self.listen(joined, language), starts, durations)):
                heard[i] = words
        return heard

    def _decode(self, audio: np.ndarray, language: str | None, **options) -> tuple[list, np.ndarray]:
        """Whisper's segments of `audio` (decoded to the end), and the audio at 16 kHz."""
        if language is not None and language not in self.model.supported_languages:
            raise BadRequest(f"Whisper does not know the language code '{language}'.", code="unsupported_language")
        audio16k = resample_poly(audio, WHISPER_RATE, SAMPLE_RATE)
        try:
            if language is None and self.model.model.is_multilingual:
                language = self.detect_language(audio16k)
            segments, _ = self.model.transcribe(audio16k, language=language, beam_size=self.beam_size,
                                                condition_on_previous_text=False, **options)
            return list(segments), audio16k
        finally:
            self.encoder.forget()  # an encoder output is megabytes (on the GPU, with a large model)

    def detect_language(self, audio16k: np.ndarray) -> str:
        """The language, detected on the very window transcription encodes first.

        Asked for no language, faster-whisper runs an encoder pass of its own to detect it, then
        encodes the window again to transcribe it: on a CPU that doubles an upload's transcription.
        Transcription's first window leaves out the features' last frame (faster-whisper's
        `content_frames`); detecting on the same input lets `EncoderCache` hand the second pass
        the first one's output. Were the inputs ever to differ, the cache would miss, costing time,
        never text."""
        features = self.model.feature_extractor(audio16k)
        language, _, _ = self.model.detect_language(features=features[..., :-1])
        return language


def _max_tokens(samples16k: int) -> int:
    return min(440, 10 + int(8 * samples16k / WHISPER_RATE))  # Whisper's window holds 448 tokens


class EncoderCache:
    """Whisper's encoder with the last output kept, per thread, keyed by the input's bytes."""

    def __init__(self, encode):
        self._encode = encode
        self._last = threading.local()
        self.passes = 0  # encoder passes run (tests read it)

    def __call__(self, features: np.ndarray):
        key = (features.shape, hashlib.blake2b(np.ascontiguousarray(features).tobytes(), digest_size=16).digest())
        if getattr(self._last, "key", None) != key:
            self._last.key, self._last.output = key, self._encode(features)
            self.passes += 1
        return self._last.output

    def forget(self) -> None:
        """Drop this thread's kept output."""
        self._last.__dict__.clear()


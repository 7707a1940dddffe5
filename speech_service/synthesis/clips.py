"""A Synthesizer replica's prepared reference clips: decoded, loudness-normalised and as a mel on
its device, cached by the clip's sha256.

A request names its voice's clip by sha256 and carries the transcript (`references.Reference`); the
clip's bytes come only when the replica lacks it: `ClipCache.get` then raises `ReferenceMissing` and
the caller (`SpeechService.send`) sends the same call again with the clip. So a clip is read,
shipped and decoded once per replica, not once per request. The transcript is never cached, so a
cached clip never meets a transcript written for other audio (docs/ARCHITECTURE.md, "Reference cache").
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from speech_service.audio import read_wav_bytes
from speech_service.errors import ReferenceMissing
from speech_service.references import Reference

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """A reference clip made ready for the model once (replicas cache these by the clip's sha256)."""

    mel: torch.Tensor  # frames x n_mels, on the model's device
    samples: int
    rms: float  # before loudness normalisation; the speech is scaled back to it


class ClipCache:
    """Prepared clips by sha256, least recently used evicted beyond `size`; thread-safe."""

    def __init__(self, prepare: Callable[[np.ndarray], Clip], size: int):
        self.prepare = prepare
        self.size = size
        self.hits = self.prepared = 0  # requests served from the cache; clips decoded and prepared
        self._clips: OrderedDict[str, Clip] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, reference: Reference) -> Clip:
        """The prepared clip; from `reference.wav` when not held (raises `ReferenceMissing` when
        the reference names a clip this cache does not hold and carries no bytes)."""
        with self._lock:
            clip = self._clips.get(reference.sha256)
            if clip is not None:
                self._clips.move_to_end(reference.sha256)
                self.hits += 1
                return clip
        if reference.wav is None:
            raise ReferenceMissing(f"This replica holds no clip {reference.sha256[:16]} "
                                   f"(voice '{reference.voice}'); send it.")
        if hashlib.sha256(reference.wav).hexdigest() != reference.sha256:  # would pair text and audio wrongly
            raise ValueError(f"the clip sent for voice '{reference.voice}' does not match its sha256")
        clip = self.prepare(read_wav_bytes(reference.wav))
        logger.info("prepared the clip of voice %s (%s)", reference.voice, reference.sha256[:16])
        with self._lock:
            self.prepared += 1
            self._clips[reference.sha256] = clip
            while len(self._clips) > self.size:
                self._clips.popitem(last=False)
        return clip

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"clips": len(self._clips), "size": self.size, "hits": self.hits, "prepared": self.prepared}

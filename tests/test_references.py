"""The replica's cache of prepared reference clips: a voice's clip is prepared once per replica and
never paired with a transcript written for other audio."""

import hashlib

import numpy as np
import pytest

from speech_service import audio
from speech_service.audio import encoding
from speech_service.errors import ReferenceMissing
from speech_service.references import Reference
from speech_service.synthesis.clips import ClipCache


def clip_bytes(frequency: float) -> bytes:
    t = np.arange(12000, dtype=np.float32) / audio.SAMPLE_RATE
    return encoding.to_wav_bytes(0.2 * np.sin(2 * np.pi * frequency * t))


def reference(wav: bytes, text: str = "Hello.", voice: str = "alice") -> Reference:
    return Reference(voice, hashlib.sha256(wav).hexdigest(), text, wav)


class Prepared:
    """A stand-in for the engine's mel: records what it was made from."""

    def __init__(self):
        self.calls = []

    def __call__(self, samples: np.ndarray):
        self.calls.append(samples)
        return ("clip", float(samples[100]))


def test_a_named_clip_is_asked_for_then_prepared_once():
    prepare = Prepared()
    cache = ClipCache(prepare, size=4)
    ref = reference(clip_bytes(220))
    with pytest.raises(ReferenceMissing) as missing:
        cache.get(ref.named())
    assert ref.sha256[:16] in missing.value.message and prepare.calls == []
    first = cache.get(ref)
    assert cache.get(ref.named()) is first and cache.get(ref.named()) is first
    assert len(prepare.calls) == 1  # decoded once, from the bytes sent
    assert np.allclose(prepare.calls[0], audio.read_wav_bytes(ref.wav))
    assert cache.stats() == {"clips": 1, "size": 4, "hits": 2, "prepared": 1}


def test_bytes_that_do_not_match_their_sha256_are_refused():
    good, other = clip_bytes(220), clip_bytes(330)
    cache = ClipCache(Prepared(), size=4)
    with pytest.raises(ValueError, match="does not match"):
        cache.get(Reference("alice", hashlib.sha256(good).hexdigest(), "Hello.", other))
    with pytest.raises(ReferenceMissing):  # nothing was cached under the claimed sha256
        cache.get(Reference("alice", hashlib.sha256(good).hexdigest(), "Hello."))


def test_the_least_recently_used_clip_is_evicted():
    refs = [reference(clip_bytes(f)) for f in (200, 300, 400)]
    cache = ClipCache(Prepared(), size=2)
    cache.get(refs[0]), cache.get(refs[1])
    cache.get(refs[0].named())  # 0 used more recently than 1
    cache.get(refs[2])
    cache.get(refs[0].named())
    with pytest.raises(ReferenceMissing):
        cache.get(refs[1].named())
    assert cache.stats()["clips"] == 2

"""ElevenLabs' output formats: each name's bytes decode to the audio at its rate, in its codec."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from speech_service.audio import SAMPLE_RATE
from speech_service.audio.output_formats import SUPPORTED, encode_piece, parse_output_format, ulaw_decode, ulaw_encode
from speech_service.errors import BadRequest


def decode_output(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """The float samples and rate in `data` of output format `name`, read by libsndfile (not by us)."""
    fmt = parse_output_format(name)
    if fmt.codec == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, fmt.sample_rate
    if fmt.codec == "ulaw":
        samples, _ = sf.read(io.BytesIO(data), format="RAW", subtype="ULAW", samplerate=8000, channels=1,
                             dtype="float32")
        return samples, fmt.sample_rate
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def tone(hz: float, seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_each_format_decodes_to_the_duration_rate_and_pitch_sent(name):
    data = encode_piece(tone(1000, 1.5), parse_output_format(name))
    samples, rate = decode_output(data, name)
    assert rate == SUPPORTED[name].sample_rate
    if SUPPORTED[name].codec == "mp3":
        # LAME's delay and padding, unless the first frame had room for the tag that says to drop them
        assert 1.5 <= len(samples) / rate <= 1.5 + 0.08
    else:
        assert len(samples) == -(-int(1.5 * SAMPLE_RATE) * rate // SAMPLE_RATE)
    assert peak_hz(samples, rate) == pytest.approx(1000, abs=3)
    middle = samples[len(samples) // 4: -len(samples) // 4]
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("name", [n for n, f in SUPPORTED.items() if f.codec == "mp3"])
def test_mp3_is_a_constant_bitrate_file_at_the_named_rate(name):
    data = encode_piece(tone(440, 1.0), SUPPORTED[name])
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", "-"], input=data,
                           capture_output=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], int(stream["sample_rate"])) == ("mp3", SUPPORTED[name].sample_rate)
    assert int(stream["bit_rate"]) == SUPPORTED[name].bitrate_kbps * 1000


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_a_tone_keeps_its_frequency_and_length_after_resampling(rate):
    name = f"pcm_{rate}"
    samples, _ = decode_output(encode_piece(tone(1234, 2.0), SUPPORTED[name]), name)
    assert len(samples) == -(-2 * SAMPLE_RATE * rate // SAMPLE_RATE)
    assert peak_hz(samples, rate) == pytest.approx(1234, abs=1)


def test_mu_law_round_trips_within_its_quantisation():
    x = np.arange(-32768, 32768, dtype=np.int16)
    encoded = ulaw_encode(x)
    assert len(encoded) == len(x)
    back = ulaw_decode(encoded).astype(np.int64)
    libsndfile, _ = sf.read(io.BytesIO(encoded), format="RAW", subtype="ULAW", samplerate=8000, channels=1,
                            dtype="int16")
    assert np.array_equal(back, libsndfile)
    # G.711 steps double with each of its 8 segments: a decoded sample lies within half a step, which
    # is 1/32 of the biased magnitude (|x| + 132), and no more than 512 apart near full scale.
    clipped = np.clip(x.astype(np.int64), -32635, 32635)
    error = np.abs(back - clipped)
    assert error.max() <= 512
    assert (error <= (np.abs(clipped) + 132) / 32).all()
    assert ulaw_encode(np.array([0], np.int16)) == b"\xff"  # silence is 0xFF in G.711


def test_an_unknown_format_is_a_400_listing_the_supported_names():
    with pytest.raises(BadRequest) as caught:
        parse_output_format("opus_48000_64")
    error = caught.value
    assert (error.status_code, error.code, error.param) == (400, "unsupported_output_format", "output_format")
    assert all(name in error.message for name in SUPPORTED)

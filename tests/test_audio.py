import asyncio
import io
import subprocess

import numpy as np
import pytest
import soundfile as sf

from speech_service import audio
from speech_service.audio import encoding, preparation, uploads
from speech_service.errors import BadRequest, Unprocessable

from conftest import convert, decode_file, tiered

SR = audio.SAMPLE_RATE


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".ogg", ".m4a"])
def test_decodes_common_formats_to_24k_mono(short_wav, tmp_path, suffix):
    expected_s = sf.info(str(short_wav)).duration
    src = convert(short_wav, tmp_path / f"voice{suffix}") if suffix != ".wav" else short_wav
    samples = decode_file(src)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SR - expected_s) < 0.1  # codecs pad a little, never more


def test_decodes_stereo_and_other_rates(short_wav, tmp_path):
    stereo = tmp_path / "stereo44k.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(short_wav), "-ac", "2", "-ar", "44100",
                    str(stereo)], check=True)
    assert abs(len(decode_file(stereo)) - len(decode_file(short_wav))) < SR * 0.05


@pytest.mark.parametrize("data, code", [(b"", "empty_audio"), (b"definitely not audio" * 50, "unsupported_audio"),
                                        (b"fLaC" + b"\x00" * 500, "undecodable_audio")])
def test_rejects_empty_and_undecodable(data, code):
    with pytest.raises(BadRequest) as err:
        uploads.decode(data, max_seconds=600)
    assert err.value.code == code


def test_rejects_audio_over_the_length_limit(short_wav):
    with pytest.raises(Unprocessable) as err:
        uploads.decode(short_wav.read_bytes(), max_seconds=1.0)
    assert err.value.code == "audio_too_long"


def test_rejects_silence_and_near_silence():
    with pytest.raises(BadRequest) as err:
        preparation.prepare_reference(np.zeros(SR * 3, dtype=np.float32))
    assert err.value.code == "silent_audio"
    hiss = (np.random.default_rng(0).standard_normal(SR * 3) * 1e-4).astype(np.float32)
    with pytest.raises(BadRequest):
        preparation.prepare_reference(hiss)


def test_rejects_a_click_shorter_than_the_minimum():
    clip = np.zeros(SR * 2, dtype=np.float32)
    clip[SR : SR + SR // 10] = 0.5 * np.sin(np.arange(SR // 10) * 0.3)
    with pytest.raises(BadRequest) as err:
        preparation.prepare_reference(clip, min_s=0.3)
    assert err.value.code == "audio_too_short"


def test_short_reference_is_trimmed_not_clipped(short_wav):
    padded = np.concatenate([np.zeros(SR), decode_file(short_wav), np.zeros(SR)])
    ref = preparation.prepare_reference(padded)
    assert not ref.clipped
    assert ref.duration_s < len(padded) / SR - 1.5  # both silent edges went
    assert ref.original_duration_s == pytest.approx(len(padded) / SR)


def test_long_reference_is_clipped_at_a_pause(long_wav):
    samples = decode_file(long_wav)
    ref = preparation.prepare_reference(samples, max_clip_s=12)
    assert ref.clipped and 6 <= ref.duration_s <= 12.05
    # The clip is a prefix of the recording (minus its leading silence) that ends where a pause begins.
    body = ref.audio[: -int(0.05 * SR)]
    hop = int(preparation.FRAME_S * SR)
    start = next(o for o in range(0, SR * 2, hop) if np.array_equal(samples[o : o + 1000], body[:1000]))
    assert np.array_equal(samples[start : start + len(body)], body)
    after = samples[start + len(body) : start + len(body) + SR // 5]
    assert np.sqrt(np.mean(after**2)) < 0.02 * np.sqrt(np.mean(body**2))


def test_reference_without_pauses_is_cut_hard():
    t = np.arange(SR * 20) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    ref = preparation.prepare_reference(tone, max_clip_s=12)
    assert ref.clipped and ref.duration_s == pytest.approx(12.05, abs=0.02)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_encodes_every_response_format(tmp_path, fmt):
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR * 2) / SR)).astype(np.float32)
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(encoding.encode(tone, fmt))
    assert abs(len(decode_file(path)) / SR - 2.0) < 0.1


def test_whole_flac_is_lossless_and_mp3_is_128_kbps_without_a_gap():
    """Made in this process, not by ffmpeg: FLAC carries exactly the samples that pcm and wav do; MP3 is
    constant 128 kbps and decodes (here by ffmpeg, as most players would) to the same audio, its
    encoder delay trimmed."""
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR * 2) / SR)).astype(np.float32)
    flac, rate = sf.read(io.BytesIO(encoding.encode(tone, "flac")), dtype="int16")
    assert rate == SR and np.array_equal(flac, np.frombuffer(encoding.encode(tone, "pcm"), "<i2"))
    mp3 = encoding.encode(tone, "mp3")
    assert len(mp3) * 8 / 2 == pytest.approx(128_000, rel=0.06)
    decoded = uploads.decode(mp3, max_seconds=10)
    assert len(decoded) == pytest.approx(len(tone), abs=SR // 100)
    n = min(len(decoded), len(tone))
    assert np.corrcoef(decoded[:n], tone[:n])[0, 1] > 0.99


def test_pcm_is_raw_16_bit_little_endian():
    tone = np.array([0.0, 0.5, -0.5, 1.0], dtype=np.float32)
    assert np.frombuffer(encoding.encode(tone, "pcm"), "<i2").tolist() == [0, 16384, -16384, 32767]


def _heard_seconds(encoded: bytes) -> float:
    """How much audio a player could make of the bytes so far (a cut-off stream decodes up to the cut)."""
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-i", "pipe:0", "-f", "s16le", "-ac", "1",
                           "-ar", str(SR), "pipe:1"], input=encoded, capture_output=True)
    return len(proc.stdout) / 2 / SR


@pytest.mark.parametrize("fmt", tiered(["mp3", "opus", "aac", "flac", "wav", "pcm"], fast={"mp3", "pcm"}))
def test_a_stream_is_playable_before_its_input_ends(fmt):
    """The first segment's audio must leave the encoder while later segments are still being made:
    ffmpeg probes a pipe's input (megabytes by default) before it encodes anything, and Ogg waits for
    a full page, which would hold a stream's first audio back until most of the text is done."""
    first = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR // 2) / SR)).astype(np.float32)  # one short segment
    heard, finished = asyncio.Event(), False

    async def segments():
        nonlocal finished
        yield first
        try:  # the next segment only comes once the first is audible, or after a bound
            await asyncio.wait_for(heard.wait(), 5)
        except asyncio.TimeoutError:
            pass
        yield first
        finished = True

    async def listen() -> bool:
        """Whether the input had ended when the first 0.25 s became playable."""
        received, ended_first = b"", None
        async for data in encoding.StreamEncoder(fmt).encode(segments()):
            received += data
            playable = len(received) / 2 / SR if fmt == "pcm" else _heard_seconds(received)
            if ended_first is None and playable >= 0.25:
                ended_first = finished
                heard.set()
        return ended_first

    assert asyncio.run(listen()) is False, "nothing was playable before the input ended"

import subprocess

import jiwer
import pytest

from speech_service import audio
from speech_service.audio import preparation
from speech_service.transcription.whisper import resample_poly

from conftest import LONG_TEXT, SHORT_TEXT, decode_file, espeak


def normalise(text: str) -> str:
    return jiwer.RemovePunctuation()(text.lower()).replace("seven", "7")


@pytest.mark.slow  # seconds of model calls: make test, not the minute loop
@pytest.mark.parametrize("sentence", [SHORT_TEXT, "Please call me back tomorrow morning about the meeting."])
def test_whisper_base_transcribes_espeak_speech(whisper, speech_dir, sentence):
    wav = espeak(sentence, speech_dir / f"asr-{abs(hash(sentence))}.wav")
    text = whisper.transcribe(decode_file(wav), "en")
    assert jiwer.wer(normalise(sentence), normalise(text)) <= 0.25, text


@pytest.mark.slow
def test_transcribes_the_clipped_clip_not_the_whole_recording(whisper, long_wav):
    ref = preparation.prepare_reference(decode_file(long_wav), max_clip_s=12)
    text = whisper.transcribe(ref.audio)
    words, all_words = normalise(text).split(), normalise(LONG_TEXT).split()
    assert 0.25 * len(all_words) < len(words) < 0.75 * len(all_words)
    assert jiwer.wer(" ".join(all_words[: len(words)]), " ".join(words)) <= 0.35


@pytest.mark.parametrize("n", [1, 5, 101, 3 * 24000 + 7])
def test_resampling_to_whisper_rate_matches_scipy(n):
    import numpy as np
    from scipy.signal import resample_poly as scipy_resample_poly

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ours, theirs = resample_poly(x, 16000, 24000), scipy_resample_poly(x, 16000, 24000)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.slow
def test_an_upload_without_a_language_is_encoded_once_and_heard_as_with_one(whisper, speech_dir):
    """faster-whisper alone encodes the first window twice when it detects the language."""
    clip = decode_file(espeak(SHORT_TEXT, speech_dir / "asr-detect.wav"))
    before = whisper.encoder.passes
    detected = whisper.transcribe(clip)
    assert whisper.encoder.passes - before == 1
    assert detected == whisper.transcribe(clip, "en")


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_the_language_of_an_upload_is_detected(whisper, speech_dir):
    wav = speech_dir / "asr-de.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(wav), "Guten Morgen, wie geht es dir heute?"], check=True)
    assert whisper.detect_language(resample_poly(decode_file(wav), 16000, audio.SAMPLE_RATE)) == "de"

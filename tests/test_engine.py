import numpy as np
import pytest

from speech_service import audio
from speech_service.audio import preparation
from speech_service.audio.seams import cross_fade
from speech_service.config import SynthesisOptions
from speech_service.errors import BadRequest, Unprocessable
from speech_service.synthesis.engine import SynthesisEngine, cross_fade_samples
from speech_service.text.segments import split_text

from conftest import SHORT_TEXT, decode_file, engine_stream

SR = audio.SAMPLE_RATE


@pytest.fixture(scope="module")
def reference(short_wav):
    return preparation.prepare_reference(decode_file(short_wav)).audio


def test_loads_through_f5_tts_loaders_on_the_cpu(engine):
    from f5_tts.model.backbones.dit import DiT
    from f5_tts.model.cfm import CFM

    assert isinstance(engine.model, CFM) and isinstance(engine.model.transformer, DiT)
    assert engine.device == "cpu"
    assert sum(p.numel() for p in engine.model.parameters()) < 1_000_000  # the tiny DiT


def test_speech_length_follows_the_reference_speaking_rate(engine, reference):
    text = "A sentence of about the same length as the reference one."
    wave = engine.synthesize(reference, SHORT_TEXT, text, SynthesisOptions(nfe_step=4, seed=1))
    ref_s = len(reference) / SR
    expected_s = ref_s * len(text) / (len(SHORT_TEXT) + 2)
    assert wave.dtype == np.float32 and np.isfinite(wave).all()
    assert 0.7 * expected_s < len(wave) / SR < 1.3 * expected_s
    slower = engine.synthesize(reference, SHORT_TEXT, text, SynthesisOptions(nfe_step=4, seed=1, speed=0.5))
    assert len(slower) / len(wave) == pytest.approx(2.0, rel=0.1)


def test_same_seed_same_audio(engine, reference):
    params = SynthesisOptions(nfe_step=4, seed=7)
    a = engine.synthesize(reference, SHORT_TEXT, "Hello there, friend.", params)
    b = engine.synthesize(reference, SHORT_TEXT, "Hello there, friend.", params)
    c = engine.synthesize(reference, SHORT_TEXT, "Hello there, friend.", SynthesisOptions(nfe_step=4, seed=8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.slow
def test_long_text_is_spoken_in_segments_that_each_fit(engine, reference):
    text = " ".join(f"This is sentence number {i}, which the service speaks in turn." for i in range(30))
    segments = engine.plan(len(reference), SHORT_TEXT, text)
    assert len(segments) > 3
    assert " ".join(s.text for s in segments) == text
    assert all(s.duration_frames <= engine.max_frames for s in segments)
    wave = engine.synthesize(reference, SHORT_TEXT, text, SynthesisOptions(nfe_step=2, seed=0))
    assert len(wave) / SR > 0.5 * len(text) / (len(SHORT_TEXT) / (len(reference) / SR))


def test_the_model_reads_layout_as_punctuation_and_numbers_as_words(engine, reference):
    items = engine.items(reference, SHORT_TEXT, "Shopping\n\n1. Eggs\n2. Milk, 3 litres", SynthesisOptions(seed=1))
    assert " ".join(item.segment.text for item in items) == "Shopping. one, Eggs. two, Milk, three litres"


def test_text_without_punctuation_is_split_between_words():
    text = " ".join(["word"] * 200)
    pieces = split_text(text, 50)
    assert all(len(p.encode()) <= 50 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert split_text("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]


def test_transcript_longer_than_its_clip_is_refused_before_the_model(engine, reference):
    """Rule 3: a transcript of a 25 s recording paired with a 3 s clip never reaches CFM.sample."""
    long_transcript = "The morning train left the station at seven, and everyone went home. " * 6
    with pytest.raises(Unprocessable) as err:
        engine.plan(len(reference), long_transcript, "Hello.")
    assert err.value.code == "text_exceeds_frames"
    with pytest.raises(Unprocessable):
        engine.synthesize(reference, long_transcript, "Hello.", SynthesisOptions(nfe_step=2))


def test_a_segment_longer_than_the_model_can_fill_is_refused(engine, reference):
    short_span = SynthesisEngine(engine.model, engine.vocoder, device="cpu", model_name="tiny",
                                 max_segment_seconds=2.0)
    with pytest.raises(Unprocessable) as err:
        short_span.plan(len(reference), SHORT_TEXT, "Hello there.")
    assert err.value.code == "segment_too_long"
    assert engine.max_frames <= 8192  # F5's text position table


def test_empty_text_is_refused(engine, reference):
    with pytest.raises(BadRequest):
        engine.plan(len(reference), SHORT_TEXT, "   ")


def join(waves, overlap):
    return np.concatenate(list(cross_fade(waves, overlap)))


def test_cross_fade_blends_the_seam():
    a, b = np.ones(1000, np.float32), np.zeros(1000, np.float32)
    out = join([a, b], 100)
    assert len(out) == 1900
    assert out[899] == 1.0 and out[1000] == 0.0 and 0.0 < out[950] < 1.0
    assert len(join([a, b], 0)) == 2000
    # A wave shorter than the overlap is blended in whole: 1000 + 50 + 1000 - 50 - 100.
    assert len(join([a, np.zeros(50, np.float32), b], 100)) == 1900


def test_cross_fade_yields_each_piece_once_it_is_final():
    pieces = cross_fade(iter([np.ones(1000, np.float32), np.zeros(1000, np.float32)]), 100)
    assert len(next(pieces)) == 900  # the first wave, less the part that waits for the seam
    assert sum(len(p) for p in pieces) == 1000


def test_streamed_pieces_are_their_segments_cross_faded(engine, reference):
    """A stream samples its segments one by one and cross-fades piece by piece; the same segments
    sampled as one batch and joined at once give the same audio to within float rounding
    (tests/test_batching.py holds batched items to their solo results)."""
    text = "First sentence here. A second one follows it. And a third, to finish."
    params = SynthesisOptions(nfe_step=2, seed=4, cross_fade_duration=0.15)
    pieces = list(engine_stream(engine, reference, SHORT_TEXT, text, params))
    items = engine.items(reference, SHORT_TEXT, text, params, streaming=True)
    whole = join(engine.synthesize_batch(items), cross_fade_samples(items))
    streamed = np.concatenate(pieces)
    assert len(items) >= 2 and len(pieces) >= 2 and len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() <= 1e-5 * np.abs(whole).max()


def test_the_tiny_checkpoint_has_no_all_zero_tensor(offline_models):
    from speech_service.weights.offline import zero_tensors

    assert zero_tensors(offline_models["checkpoint"]) == []


def test_the_tiny_model_listens_to_text_reference_and_seed(engine, reference, long_wav):
    """With F5's zero-initialised output layer the DiT predicted zero flow: the output was the seeded
    noise whatever the text or the voice. Random weights everywhere make each input matter."""
    other_voice = preparation.prepare_reference(decode_file(long_wav)).audio[: len(reference)]
    params = SynthesisOptions(nfe_step=4, seed=3)
    base = engine.synthesize(reference, SHORT_TEXT, "Hello there, friend.", params)
    variants = [
        engine.synthesize(reference, SHORT_TEXT, "Yellow chair, brand.", params),  # same length, new text
        engine.synthesize(other_voice, SHORT_TEXT, "Hello there, friend.", params),
        engine.synthesize(reference, SHORT_TEXT, "Hello there, friend.", SynthesisOptions(nfe_step=4, seed=4)),
    ]
    for variant in variants:
        assert len(variant) == len(base)
        assert np.abs(variant - base).max() > 1e-3 * np.abs(base).max()


def test_the_model_reads_numbers_as_words_unless_switched_off(engine, reference):
    """With normalisation on, "3" reaches the model as "three": the same audio, seed for seed. Off,
    the digit reaches the model and the speech differs."""
    params = SynthesisOptions(nfe_step=4, seed=5)
    words = engine.synthesize(reference, SHORT_TEXT, "I have three apples.", params)
    assert np.array_equal(engine.synthesize(reference, SHORT_TEXT, "I have 3 apples.", params), words)
    engine.normalize_text = False
    try:
        digit = engine.synthesize(reference, SHORT_TEXT, "I have 3 apples.", params)
    finally:
        engine.normalize_text = True
    assert len(digit) != len(words) or np.abs(digit - words).max() > 1e-3 * np.abs(words).max()


def test_the_voice_transcript_is_read_as_words_too(engine, reference):
    """A transcript saying "1984" where the clip says "nineteen eighty-four": the model sees the words
    (the stored transcript is not the engine's to change; it only gets the string)."""
    params = SynthesisOptions(nfe_step=4, seed=6)
    transcript = "In nineteen eighty-four, we moved."
    as_words = engine.synthesize(reference, transcript, "Hello there, friend.", params)
    as_digits = engine.synthesize(reference, "In 1984, we moved.", "Hello there, friend.", params)
    assert np.array_equal(as_digits, as_words)

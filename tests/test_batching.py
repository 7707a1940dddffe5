"""Batched synthesis gives every item exactly its solo result (F5-TTS issue #1179 reports batched
items losing characters), on the tiny model with every parameter random, so a leak between items
would show."""

import numpy as np
import pytest
import torch

from speech_service import audio
from speech_service.audio import preparation
from speech_service.config import SynthesisOptions
from speech_service.synthesis.engine import SynthesisEngine

from conftest import LONG_TEXT, SHORT_TEXT, decode_file, engine_stream

LONG_REF_TEXT = "The morning train left the station at seven. Passengers read newspapers and drank coffee."


@pytest.fixture(scope="module")
def voices(short_wav, long_wav):
    """Two voices: the short espeak clip and about 5 s of another recording with its own words."""
    short = preparation.prepare_reference(decode_file(short_wav)).audio
    long = decode_file(long_wav)[: int(5.2 * audio.SAMPLE_RATE)]
    return {"short": (short, SHORT_TEXT), "long": (long, LONG_REF_TEXT)}


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def mixed_items(engine, voices, nfe_step=4):
    """Short and long texts and durations, two voices, different seeds, several segments."""
    requests = [
        ("short", "Hi.", 1),
        ("long", "A much longer sentence, spoken slowly and with care, to fill many frames.", 2),
        ("short", "Two sentences here. And then one more that is somewhat longer than the first.", 3),
        ("long", "Yes.", 4),
        ("short", LONG_TEXT, 5),
    ]
    items = []
    for voice, text, seed in requests:
        reference, ref_text = voices[voice]
        # Planned as for a stream: short first segments, so more items and more lengths.
        items += engine.items(reference, ref_text, text, SynthesisOptions(nfe_step=nfe_step, seed=seed),
                              streaming=True)
    return items


def test_one_item_is_exactly_what_cfm_sample_gives(engine, voices):
    """`sample_batch` is `CFM.sample` with per-item seeds: alone, an item is bit for bit the package's."""
    from f5_tts.model.utils import convert_char_to_pinyin

    from speech_service.synthesis.sampling import sample_batch

    item = engine.items(*voices["long"], "Hello there, friend.", SynthesisOptions(nfe_step=6, seed=9))[0]
    text = convert_char_to_pinyin([item.ref_text + item.segment.text])
    with torch.inference_mode():
        ours = sample_batch(engine.model, [item.clip.mel], text, [item.segment.duration_frames], [9],
                            steps=6, cfg_strength=2.0, sway_sampling_coef=-1.0)[0]
        theirs, _ = engine.model.sample(cond=item.clip.mel.unsqueeze(0), text=text,
                                        duration=item.segment.duration_frames, steps=6, cfg_strength=2.0,
                                        sway_sampling_coef=-1.0, seed=9)
    assert torch.equal(ours, theirs[0])


@pytest.mark.slow
def test_every_item_of_a_mixed_batch_is_its_solo_result(engine, voices):
    items = mixed_items(engine, voices)
    durations = {item.segment.duration_frames for item in items}
    assert len(items) >= 7 and max(durations) > 2 * min(durations)
    before = engine.batch_sizes.copy()
    engine.max_batch_size = len(items)
    try:
        batched = engine.synthesize_batch(items)
    finally:
        engine.max_batch_size = 8
    assert engine.batch_sizes - before == {len(items): 1}  # one model call for all of them
    for item, wave in zip(items, batched):
        solo = engine.synthesize_batch([item])[0]
        assert len(wave) == len(solo)
        assert relative_difference(wave, solo) <= 1e-5, item.segment.text


@pytest.mark.slow  # seconds of model calls: make test, not the minute loop
def test_without_the_attention_mask_a_shorter_item_would_change(synth_settings, voices):
    """The check above can fail: the F5TTS_v1_Base config's own `attn_mask_enabled: False` leaks."""
    unmasked = SynthesisEngine.load(synth_settings)
    for block in unmasked.model.transformer.transformer_blocks:
        block.attn.processor.attn_mask_enabled = False
    items = mixed_items(unmasked, voices)
    unmasked.max_batch_size = len(items)
    batched = unmasked.synthesize_batch(items)
    shortest = min(range(len(items)), key=lambda i: items[i].segment.duration_frames)
    solo = unmasked.synthesize_batch([items[shortest]])[0]
    assert relative_difference(batched[shortest], solo) > 1e-3


@pytest.mark.slow  # seconds of model calls: make test, not the minute loop
def test_batches_are_split_by_size_and_frame_budget_and_knobs(engine, voices):
    items = mixed_items(engine, voices)[:5] + mixed_items(engine, voices, nfe_step=3)[:2]
    solo = [engine.synthesize_batch([item])[0] for item in items]
    longest = max(item.segment.duration_frames for item in items)
    engine.max_batch_size, engine.max_batch_frames = 2, 2 * longest
    try:
        before = engine.batch_sizes.copy()
        batched = engine.synthesize_batch(items)
    finally:
        engine.max_batch_size, engine.max_batch_frames = 8, 16384
    calls = engine.batch_sizes - before
    assert sum(size * n for size, n in calls.items()) == len(items)
    assert max(calls) == 2 and sum(calls.values()) >= 4  # 5 items in >= 3 calls, 2 items in 1
    for a, b in zip(batched, solo):
        assert len(a) == len(b) and relative_difference(a, b) <= 1e-5


@pytest.mark.slow
def test_a_whole_response_takes_the_fewest_segments_and_one_model_call(engine, voices):
    """Every segment repeats the reference in the model's input and adds a seam, so a whole response
    takes the longest segments that fit; only a stream starts with a short one."""
    options = SynthesisOptions(nfe_step=4, seed=2)
    text = LONG_TEXT + " " + LONG_TEXT
    ref_samples = len(voices["short"][0])
    whole_plan = engine.plan(ref_samples, SHORT_TEXT, text)
    stream_plan = engine.plan(ref_samples, SHORT_TEXT, text, streaming=True)
    assert 2 <= len(whole_plan) < len(stream_plan)
    assert stream_plan[0].text == "The morning train left the station at seven."
    assert " ".join(s.text for s in whole_plan) == " ".join(s.text for s in stream_plan) == text
    assert len(engine.plan(ref_samples, SHORT_TEXT, "Two sentences here. And one more.")) == 1  # no seam
    before = engine.batch_sizes.copy()
    whole = engine.synthesize(*voices["short"], text, options)
    assert engine.batch_sizes - before == {len(whole_plan): 1}
    streamed = np.concatenate(list(engine_stream(engine, *voices["short"], text, options)))
    assert len(streamed) == pytest.approx(len(whole), rel=0.05)  # the same text at the voice's pace


def test_streaming_yields_the_first_sentence_before_sampling_the_second(engine, voices):
    text = "First sentence here. A second one follows it. And a third, to finish. The fourth ends it."
    segments = engine.plan(len(voices["short"][0]), SHORT_TEXT, text, streaming=True)
    assert segments[0].text == "First sentence here." and len(segments) >= 2
    steps = []
    hook = engine.model.transformer.register_forward_hook(lambda *_: steps.append(1))
    try:
        pieces = engine_stream(engine, *voices["short"], text, SynthesisOptions(nfe_step=4, seed=1))
        first = next(pieces)
        steps_for_first = len(steps)
        rest = list(pieces)
    finally:
        hook.remove()
    assert len(first) > 0 and rest
    assert steps_for_first == 4  # one segment's ODE steps (guidance runs in the same forward)
    assert len(steps) == 4 * len(segments)

"""The model's text pipeline against any text a caller may send: numbers of any length in every form
the rules know, symbols, and arbitrary Unicode. It answers every text (the text functions raise
nothing; only a typed 4xx would be allowed), each word keeps a span inside the caller's text, and
the time it takes grows with the input, not faster."""

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speech_service.errors import ServiceError
from speech_service.text.layout import layout
from speech_service.text.mapped import MappedText, word_spans
from speech_service.text.segments import split_text
from speech_service.text.spoken import normalize_for_speech, speak
from speech_service.text.words import heard_tokens

# English forms, each with the numbers `a`, `b` and `c` in it: what every rule of `text.spoken` reads.
ENGLISH_FORMS = [
    "{a}", "-{a}", "{a}.{b}", "{a}.{b}.{c}", ".{a}", "{a},{b}", "the {a}th", "{a}st", "{a}nd", "{a}rd", "{a},{b}th",
    "{a}:{b}", "{a}:5", "{a}/{b}", "{a}/4", "{a}/{b}/{c}", "{a}.{b}/{c}", "${a}", "${a}.{b}", "€{a},{b}", "£{a}",
    "¥{a}", "US${a}M", "-${a}-{b}", "{a} USD", "{a}.{b} EUR", "{a}%", "{a}-{b}%", "{a}-{b}", "{a} – {b}",
    "{a}-{b}-{c}", "in {a}", "between {a} and {b}", "{a}s", "{a} AD", "FY{a}", "{a}-{b}", "{a}:{b} pm",
    "{a}:{b}:{c}", "{a}pm", "{a} kg", "{a}-{b} km/h", "a {a} GB disk", "{a}'{b}\"", "({a}) {b}-{c}",
    "+{a} {b} {c}", "call {a}-{b}", "{a}p", "May {a}", "{a} May", "{a}/{b}/2024", "{a}-01-02", "No. {a}",
    "#{a}", "~{a}", "{a}x{b}", "{a} × {b}", "{a}^{b}", "{a}°C", "{a}¢", "{a}+{b}={c}", "{a} & {b}", "MP{a}",
]
CHINESE_FORMS = [
    "第{a}", "第{a}名", "{a}个", "{a}年", "{a}年{b}月{c}日", "{a}-{b}-{c}", "是{a}.{b}", "{a}/{b}的人", "{a}-{b}天",
    "{a}～{b}人", "增长{a}%", "是¥{a}", "是￥{a}.{b}", "{a}元", "{a}块", "{a}:{b}开会", "{a}:{b}:{c}", "气温-{a}℃",
    "{a}°F", "重{a}kg", "{a}室", "电话{a}", "是+86 {a}", "是{a}-{b}", "请拨打{a}", "-{a}", "{a},{b}人",
]
ROMAN_FORMS = ["Chapter {r}", "Henry {r}", "World War {r}", "Pope Leo {r}'s"]

MAX_BYTES = 135  # about what a 5 s reference clip leaves a segment (the engine's plan sizes it so)


def digit_runs(longest: int = 2000):
    """Digits of any length from 1 to `longest`: a short pattern (leading zeros and all) repeated."""
    return st.builds(lambda pattern, length: (pattern * length)[:length],
                     st.text("0123456789", min_size=1, max_size=12), st.integers(1, longest))


def numbers_in(forms: list[str]):
    return st.builds(lambda form, a, b, c: form.format(a=a, b=b, c=c),
                     st.sampled_from(forms), digit_runs(), digit_runs(), digit_runs())


def plan_text(text: str) -> tuple[MappedText, list[str]]:
    """What `SynthesisEngine.plan_speech` does to the text before the model: layout, numbers and
    symbols as words, segments, each word's span; checked for a valid map back to `text`."""
    try:
        spoken = speak(layout(text))
        segments = split_text(spoken.text, MAX_BYTES)
        spans = word_spans(spoken, segments)
    except ServiceError as error:  # the only refusal allowed: a clear 4xx
        assert 400 <= error.status_code < 500, error
        raise
    assert len(spoken.spans) == len(spoken.text)
    assert all(0 <= a <= b <= len(text) for a, b in spoken.spans)
    assert [len(s) for s in spans] == [len(segment.split()) for segment in segments]
    assert all(0 <= a <= b <= len(text) for words in spans for a, b in words)
    assert "".join(spoken.text.split()) == "".join("".join(segments).split())  # no character lost or added
    return spoken, segments


def no_ascii_digit(text: str) -> bool:
    return not any("0" <= c <= "9" for c in text)


@pytest.mark.slow  # 60 generated texts spoken; test_text keeps examples of each form fast
@settings(max_examples=60, deadline=None)
@given(st.lists(numbers_in(ENGLISH_FORMS), min_size=1, max_size=4), st.sampled_from([" ", ", ", ". ", "\n\n"]))
def test_english_numbers_of_any_length_in_every_form_are_spoken(parts, sep):
    text = sep.join(parts)
    spoken, _ = plan_text(text)
    assert no_ascii_digit(spoken.text), (text, spoken.text)


@pytest.mark.slow  # 60 generated texts read; test_chinese keeps examples of each form fast
@settings(max_examples=60, deadline=None)
@given(st.lists(numbers_in(CHINESE_FORMS), min_size=1, max_size=4), st.sampled_from(["，", "。", " "]))
def test_chinese_numbers_of_any_length_in_every_form_are_read(parts, sep):
    text = "说" + sep.join(parts)
    spoken, _ = plan_text(text)
    assert no_ascii_digit(spoken.text), (text, spoken.text)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(ROMAN_FORMS), st.text("IVXLCDM", min_size=1, max_size=2000))
def test_roman_numerals_of_any_length_are_answered(form, numeral):
    plan_text(form.format(r=numeral))


@pytest.mark.slow  # seconds: `make test` runs it, the minute loop keeps the per-form tests
@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(), digit_runs(), numbers_in(ENGLISH_FORMS + CHINESE_FORMS),
                          st.sampled_from(list("$€£¥¢&+=#~°@%×^/:-–.,'’\"()") + ["\n", "\n\n", "- ", "1. "])),
                max_size=8))
def test_any_unicode_text_with_numbers_and_symbols_is_answered(pieces):
    """Any text: Unicode of every script (digits of other scripts too, "３", "٣"), numbers and
    symbols mixed in; also as the quality check reads the words Whisper heard."""
    text = "".join(pieces)
    plan_text(text)
    normalize_for_speech(text)  # the voice's transcript
    heard_tokens(text.split())


# -- one long number in each form: answered, and in time that grows with the input ------------

LONG = "1234567890" * 32  # 320 digits: past num2words' range (it overflows at 10**306)


def long_number_in(form: str, digits: str = LONG) -> str:
    return form.format(a=digits, b=digits[::-1], c=digits, r="X" * len(digits))


@pytest.mark.parametrize("form", ENGLISH_FORMS + CHINESE_FORMS + ROMAN_FORMS)
def test_a_320_digit_number_is_answered_in_every_form(form):
    spoken, _ = plan_text(long_number_in(form))
    if form not in ROMAN_FORMS:
        assert no_ascii_digit(spoken.text), spoken.text


@pytest.mark.parametrize("form", ["the {a}th", "{a}:5", "{a}/4", "${a}", "{a} USD", "第{a}个"])
def test_a_number_past_pythons_int_limit_is_answered(form):
    """int() refuses a string of over 4300 digits (a ValueError: a 500 for the request)."""
    assert no_ascii_digit(normalize_for_speech(long_number_in(form, "1" * 5000)))


@pytest.mark.parametrize("form", ["the {a}th", "{a}:5", "{a}/{b}", "${a}", "{a}-{b}", "{a}.{b}", "第{a}个"])
def test_a_long_ordinal_ratio_amount_range_or_decimal_is_read_digit_by_digit(form):
    """A run too long to be a quantity (an id, a pasted code) is read as its digits, all of them,
    as a number over 15 digits always was: none is dropped and none overflows the number reader."""
    spoken = normalize_for_speech(long_number_in(form))
    ones = spoken.count("one") + spoken.count("一")
    assert ones >= 32 * len(set(re.findall(r"\{\w\}", form)))  # every "1" of every number


def test_a_long_ordinal_ends_with_its_last_digit_as_an_ordinal():
    assert normalize_for_speech("the 12345678901234567th") == (
        "the one two three four five six seven eight nine zero one two three four five six seventh")
    assert normalize_for_speech("the 1234567th") == (
        "the one million two hundred thirty-four thousand five hundred sixty-seventh")


def test_a_long_chinese_decimal_keeps_every_digit():
    """cn2an keeps 16 decimal places and drops the rest (with a warning on every request)."""
    assert normalize_for_speech("是0." + "5" * 40) == "是零点" + "五" * 40
    full_width = "是１２３４５６７８９０１２３４５"  # common in Chinese text; all dropped when read as a code
    assert normalize_for_speech(full_width) == "是一二三四五六七八九零一二三四五"
    assert normalize_for_speech("第٣个") == "第三个"  # Arabic-Indic digits: read, not refused


@pytest.mark.parametrize("text", ["版本1.2.3", "共0,0000人", "约.5倍"])
def test_no_digit_is_left_in_chinese_text_whatever_its_punctuation(text):
    assert no_ascii_digit(normalize_for_speech(text))


def planning_time(text: str) -> float:
    start = time.perf_counter()
    plan_text(text)
    return time.perf_counter() - start


@pytest.mark.slow  # seconds: `make test` runs it, the minute loop keeps the per-form tests
@pytest.mark.parametrize("forms, sep", [(ENGLISH_FORMS, ". "), (CHINESE_FORMS, "。")])
def test_every_form_with_long_numbers_at_once_is_planned_quickly(forms, sep):
    """Every form with 320-digit numbers in one text (about 40,000 characters): planned in well
    under the bound (linear work is about half a second here; int() or a rescan of a long run per
    number is far more)."""
    text = sep.join(long_number_in(form) for form in forms)
    assert planning_time(text) < 5.0


@pytest.mark.slow  # seconds: `make test` runs it, the minute loop keeps the per-form tests
@pytest.mark.parametrize("form", ["the {a}th", "{a}:5", "${a}.{b}", "{a}-{b}", "第{a}个", "是{a}.{b}"])
def test_time_grows_linearly_with_long_numbers(form):
    """Ten times the input takes about ten times as long, not a hundred (loosely: a shared machine)."""
    one = long_number_in(form)
    sep = "。" if form in CHINESE_FORMS else ". "
    small, large = (sep.join([one] * (chars // len(one) + 1)) for chars in (2000, 20000))
    small_s, large_s = min(planning_time(small) for _ in range(2)), planning_time(large)
    assert large_s < 40 * small_s + 0.2, (small_s, large_s)
    assert large_s < 3.0


def test_a_long_run_of_clauses_joined_at_abbreviations_is_split_in_linear_time():
    """Clauses joined because a full stop before a lowercase word ends none ("etc. and") were
    searched again from their start for every clause added, and a clause too long was copied and
    encoded again for every piece cut from it: time quadratic in the run."""
    for text in ("a. " * 7000, "word " * 4000):
        start = time.perf_counter()
        segments = split_text(text, MAX_BYTES)
        assert time.perf_counter() - start < 1.0
        assert "".join("".join(segments).split()) == "".join(text.split())
        assert all(len(segment.encode()) <= MAX_BYTES for segment in segments)

"""Pronunciation lexicons as text: how rules match (literal text, whole words, the case rule, the
longest match, the earlier lexicon), what a replacement stands for, that matching stays linear in the
text whatever the rules, and W3C PLS documents read and written (docs/ARCHITECTURE.md, "Lexicons")."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from speech_service.config import LimitSettings
from speech_service.errors import BadRequest, PayloadTooLarge
from speech_service.service.lexicons import check_lexicon
from speech_service.text import lexicon as lexicon_module
from speech_service.text import pls
from speech_service.text.chinese import reading
from speech_service.text.lexicon import Lexicon, Rule, apply_lexicons, matcher
from speech_service.text.mapped import MappedText

LIMITS = LimitSettings()


def said(text: str, *rules: Rule, more: tuple[Rule, ...] = ()) -> str:
    lexicons = [Lexicon("first", rules)] + ([Lexicon("second", more)] if more else [])
    return apply_lexicons(MappedText.of(text), lexicons).text


def test_a_grapheme_is_literal_text_never_a_pattern():
    rule = Rule("a.c", alias="DOT")
    assert said("abc a.c", rule) == "abc DOT"
    assert said("x+ (x+) [x]", Rule("(x+)", alias="P"), Rule("[x]", alias="B")) == "x+ P B"
    assert said("aaaa", Rule("a*", alias="S")) == "aaaa"


def test_rules_match_whole_words_and_phrases_in_spaced_scripts_and_anywhere_in_chinese_and_japanese():
    assert said("concatenate the cat", Rule("cat", alias="feline")) == "concatenate the feline"
    assert said("don't, Don.", Rule("don", alias="DON")) == "don't, DON."
    assert said("New York,  new\nyork", Rule("New York", alias="Noo Yawk")) == "Noo Yawk,  Noo Yawk"
    assert said("我的银行卡", Rule("银行", alias="BANK")) == "我的BANK卡"
    assert said("東京タワーへ", Rule("東京", alias="Tokyo")) == "Tokyoタワーへ"
    assert said("新iPhone手机", Rule("iPhone", alias="eye phone")) == "新eye phone手机"
    assert said("C++, C#", Rule("C++", alias="see plus plus")) == "see plus plus, C#"


def test_case_rule_any_case_unless_the_rule_says_so():
    assert said("NGINX and nginx", Rule("Nginx", alias="engine x")) == "engine x and engine x"
    assert said("US and us", Rule("US", alias="you ess", case_sensitive=True)) == "you ess and us"
    assert said("STRASSE", Rule("straße", alias="street")) == "street"  # Unicode case folding


def test_the_longest_match_wins_then_the_earlier_lexicon():
    york, new_york = Rule("York", alias="Yoik"), Rule("New York", alias="Noo Yawk")
    assert said("New York and York", york, more=(new_york,)) == "Noo Yawk and Yoik"
    sensitive, insensitive = Rule("Siobhan", alias="one", case_sensitive=True), Rule("siobhan", alias="two")
    assert said("Siobhan", sensitive, more=(insensitive,)) == "one"
    assert said("Siobhan", insensitive, more=(sensitive,)) == "two"
    assert said("Siobhan", Rule("Siobhan", alias="one"), Rule("Siobhan", alias="two")) == "one"


def test_what_a_rule_writes_is_not_matched_again_nor_is_a_pinyin_reading_put_there_before():
    assert said("x", Rule("x", alias="x y"), Rule("y", alias="z")) == "x y"
    before = MappedText.of("a") + MappedText(reading("hang2"), ((1, 1),) * len(reading("hang2")))
    assert apply_lexicons(before, [Lexicon("l", (Rule("hang", alias="HANG"),))]).text == before.text


def test_a_pinyin_rule_reads_each_chinese_character_as_its_syllable():
    text = said("去银行取钱", Rule("银行", pinyin="yin2 hang2"))
    assert text == f"去{reading('yin2')}{reading('hang2')}取钱"


def test_a_replacement_stands_for_the_whole_of_what_it_replaced():
    out = apply_lexicons(MappedText.of("I use W3C daily"), [Lexicon("l", (Rule("W3C", alias="World Wide Web"),))])
    assert out.text == "I use World Wide Web daily"
    at = out.text.index("World")
    assert set(out.spans[at:at + len("World Wide Web")]) == {(6, 9)}
    assert out.spans[:at] == tuple((i, i + 1) for i in range(6)) and out.spans[-5:] == tuple(
        (i, i + 1) for i in range(10, 15))


# -- the rules checked ----------------------------------------------------------------------------

@pytest.mark.parametrize("rule, param", [
    (Rule("银行", pinyin="yin2"), "rules[0].pinyin"),  # one syllable per character
    (Rule("bank", pinyin="bank1"), "rules[0].pinyin"),  # no Chinese character to read
    (Rule("银行", pinyin="yin2 hangg"), "rules[0].pinyin"),
    (Rule("x", alias="y", pinyin="hang2"), "rules[0]"),
    (Rule("x"), "rules[0]"),
    (Rule("  ", alias="y"), "rules[0].grapheme"),
    (Rule("x" * (LIMITS.max_grapheme_chars + 1), alias="y"), "rules[0].grapheme"),
    (Rule("x", alias="y" * (LIMITS.max_alias_chars + 1)), "rules[0].alias"),
    (Rule("x\x00", alias="y"), "rules[0].grapheme"),
    (Rule("x", alias="\ue000"), "rules[0].alias"),
])
def test_a_rule_that_cannot_be_read_is_refused_naming_its_field(rule, param):
    with pytest.raises(BadRequest) as refused:
        check_lexicon(Lexicon("l", (rule,)), LIMITS)
    assert refused.value.param == param and refused.value.code == "invalid_lexicon"


def test_a_lexicon_over_its_rule_count_is_refused():
    rules = tuple(Rule(f"w{i}", alias="x") for i in range(LIMITS.max_lexicon_rules + 1))
    with pytest.raises(PayloadTooLarge):
        check_lexicon(Lexicon("l", rules), LIMITS)


# -- properties: literal matching and spans, against a plain reading of the rules --------------

LETTERS = "abAB.*+?()[]|\\^$银行'"
words = st.text(alphabet=LETTERS, min_size=1, max_size=4)
rules = st.builds(Rule, grapheme=st.lists(words, min_size=1, max_size=2).map(" ".join),
                  alias=st.text(alphabet="xyz ", min_size=1, max_size=5).map(str.strip).filter(bool),
                  case_sensitive=st.booleans())


def _wordlike(c: str) -> bool:
    return c.isalnum() and c not in "银行"


def _joins(text: str, at: int, step: int) -> bool:
    if not 0 <= at < len(text):
        return False
    if text[at] == "'":
        return 0 <= at + step < len(text) and _wordlike(text[at + step])
    return _wordlike(text[at])


def plainly(text: str, lexicons: list[Lexicon]) -> MappedText:
    """The rules read plainly: at each place every rule is tried (leftmost, longest, earliest)."""
    ordered = [rule for lexicon in lexicons for rule in lexicon.rules]
    out, at, done = [], 0, 0
    source = MappedText.of(text)
    while at < len(text):
        found = None
        for rule in ordered:
            g, end = rule.grapheme, at + len(rule.grapheme)
            piece = text[at:end]
            same = piece == g if rule.case_sensitive else piece.lower() == g.lower()
            bounded = not (_wordlike(g[0]) and _joins(text, at - 1, -1)) and not (
                _wordlike(g[-1]) and _joins(text, end, 1))
            if same and bounded and (found is None or end > found[0]):
                found = (end, rule)
        if found is None:
            at += 1
            continue
        out += [source.slice(done, at), MappedText(found[1].alias, ((at, found[0]),) * len(found[1].alias))]
        at = done = found[0]
    return MappedText.join([*out, source.slice(done, len(text))], sep="") if out else source


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(words, max_size=12).map(" ".join), st.lists(rules, min_size=1, max_size=6),
       st.lists(rules, max_size=3))
def test_matching_is_literal_and_each_replacement_spans_what_it_replaced(text, first, second):
    lexicons = [Lexicon("first", tuple(first)), Lexicon("second", tuple(second))]
    assert apply_lexicons(MappedText.of(text), lexicons) == plainly(text, lexicons)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.lists(rules, min_size=1, max_size=4))
def test_any_text_keeps_a_span_in_the_callers_text_for_each_character(text, some):
    out = apply_lexicons(MappedText.of(text), [Lexicon("l", tuple(some))])
    assert len(out.spans) == len(out.text)
    assert all(0 <= start <= end <= len(text) for start, end in out.spans)
    assert [s for s, _ in out.spans] == sorted(s for s, _ in out.spans)


# -- linear in the text whatever the rules ---------------------------------------------------------

def _lines_run(function, *args) -> int:
    """Lines of the matcher's module executed by `function(*args)`: the work done, counted exactly."""
    module = str(Path(lexicon_module.__file__))
    count = 0

    def local(frame, event, arg):
        nonlocal count
        count += event == "line"
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename == module else None

    sys.settrace(calls)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.slow  # counts the lines run for 5000 rules
def test_matching_takes_work_linear_in_the_text_for_a_lexicon_of_the_most_rules():
    """The worst rules for a matcher: every phrase of up to 25 'a's, all matching at each place of
    'a a a ...', besides thousands of others in both case rules."""
    n = LIMITS.max_lexicon_rules
    nested = [Rule(" ".join(["a"] * k), alias="x") for k in range(1, LIMITS.max_grapheme_chars // 2 + 1)]
    others = [Rule(f"w{i}", alias="y", case_sensitive=i % 2 == 0) for i in range(n - len(nested))]
    lexicon = (Lexicon("most", tuple(nested + others)),)
    rules = matcher(lexicon)  # built once per set of lexicons; not what is measured
    small, large = (MappedText.of("a " * size + "W7 w8 " * size) for size in (150, 1500))
    work = _lines_run(rules.apply, large)
    assert 9 < work / _lines_run(rules.apply, small) < 11  # quadratic would be 100
    assert work / len(large.text) < 500  # about 120; trying each of the rules at each place would be thousands


# -- PLS -------------------------------------------------------------------------------------------

def pls_document(body: str, alphabet: str = "x-pinyin") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<lexicon version="1.0" '
            f'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="{alphabet}" xml:lang="zh-CN">'
            f"{body}</lexicon>").encode()


def test_a_pls_document_of_aliases_and_pinyin_is_read_as_its_rules():
    document = pls_document(
        "<lexeme><grapheme>W3C</grapheme><grapheme>w3c.org</grapheme><alias>World Wide Web</alias></lexeme>"
        "<lexeme role='case-sensitive'><grapheme>银行</grapheme><phoneme>yin2 hang2</phoneme></lexeme>"
        "<lexeme><grapheme>tomato</grapheme><phoneme alphabet='ipa'>təˈmeɪtoʊ</phoneme>"
        "<alias>toe-MAH-toe</alias><alias prefer='true'>tuh-MAY-toe</alias></lexeme>"
        "<lexeme><grapheme>重</grapheme><phoneme alphabet='pinyin'>chong2</phoneme></lexeme>")
    lexicon = pls.read(document, "mixed", LIMITS.max_lexicon_bytes)
    assert lexicon == Lexicon("mixed", (
        Rule("W3C", alias="World Wide Web"), Rule("w3c.org", alias="World Wide Web"),
        Rule("银行", pinyin="yin2 hang2", case_sensitive=True), Rule("tomato", alias="tuh-MAY-toe"),
        Rule("重", pinyin="chong2")), "zh-CN")


@pytest.mark.parametrize("alphabet", ["ipa", "x-sampa", "arpabet", "cmu"])
def test_a_phonetic_alphabet_is_refused_saying_why_and_what_to_write_instead(alphabet):
    document = pls_document("<lexeme><grapheme>tomato</grapheme><phoneme>t AH0 m EY1 t OW2</phoneme></lexeme>",
                            alphabet)
    with pytest.raises(BadRequest) as refused:
        pls.read(document, "l", LIMITS.max_lexicon_bytes)
    message = refused.value.message
    assert refused.value.code == "unsupported_alphabet" and alphabet in message
    assert "<alias>" in message and "x-pinyin" in message and "F5 reads letters" in message


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lexicon [<!ENTITY lol "lol">""" + b"".join(
    b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)) + b"""]>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="x-pinyin" xml:lang="en">
<lexeme><grapheme>&lol9;</grapheme><alias>x</alias></lexeme></lexicon>"""


def external(url: str) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE lexicon [<!ENTITY x SYSTEM "{url}">]><lexicon version="1.0" '
            'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="x-pinyin" xml:lang="en">'
            "<lexeme><grapheme>&x;</grapheme><alias>x</alias></lexeme></lexicon>").encode()


HOSTILE = {
    "billion laughs": BILLION_LAUGHS,
    "external file entity": external("file:///etc/passwd"),
    "external http entity": external("http://127.0.0.1:9/lexicon"),
    "parameter entity": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]><l/>',
    "undeclared entity": pls_document("<lexeme><grapheme>&lol;</grapheme><alias>x</alias></lexeme>"),
    "malformed": pls_document("<lexeme><grapheme>W3C</grapheme><alias>x</lexeme>"),
    "not xml": b"\x00\xff garbage",
    "empty": b"",
    "deep": b"<lexicon>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</lexicon>",
    "another root": b'<speak version="1.0">hi</speak>',
    "another version": pls_document("").replace(b'version="1.0" xmlns', b'version="2.0" xmlns'),
    "unknown element": pls_document("<lexeme><grapheme>a</grapheme><sub>b</sub></lexeme>"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_and_malformed_pls_documents_are_refused_with_400_at_once(name):
    started = time.monotonic()
    with pytest.raises(BadRequest) as refused:
        pls.read(HOSTILE[name], "l", LIMITS.max_lexicon_bytes)
    assert refused.value.code == "invalid_pls" and refused.value.status_code == 400
    assert time.monotonic() - started < 2  # an expanded billion laughs takes minutes and gigabytes


def test_a_pls_document_over_its_byte_limit_is_refused_before_it_is_parsed():
    with pytest.raises(PayloadTooLarge):
        pls.read(pls_document("<lexeme><grapheme>a</grapheme><alias>b</alias></lexeme>" * 20000), "l", 1024 * 512)


graphemes = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Co")), min_size=1, max_size=20)


@st.composite
def lexicons(draw) -> Lexicon:
    rules = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            han = draw(st.text(alphabet="银行重庆长", min_size=1, max_size=4))
            syllables = " ".join(draw(st.sampled_from(["yin2", "hang2", "chong2", "qing4", "zhang3", "lv4"]))
                                 for _ in han)
            rules.append(Rule(draw(st.sampled_from(["", "A "])) + han, pinyin=syllables,
                              case_sensitive=draw(st.booleans())))
        else:
            rules.append(Rule(draw(graphemes), alias=draw(graphemes), case_sensitive=draw(st.booleans())))
    language = draw(st.sampled_from([None, "en", "zh-CN", "en-GB"]))
    try:
        return check_lexicon(Lexicon("round-trip", tuple(rules), language), LIMITS)
    except BadRequest:
        assume(False)


@settings(max_examples=200, deadline=None)
@given(lexicons())
def test_a_lexicon_exported_as_pls_and_imported_again_is_the_same_lexicon(lexicon):
    again = pls.read(pls.write(lexicon), lexicon.name, LIMITS.max_lexicon_bytes)
    assert check_lexicon(again, LIMITS) == lexicon

"""SSML input (`text.ssml`): a `<speak>` document becomes the script's lines, every character it says
pointing at the caller's characters inside the markup; each supported element does what it says;
anything else, and every hostile document, is a 400 answered in bounded time and memory."""

import html
import socket
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speech_service.errors import BadRequest
from speech_service.text import chinese
from speech_service.text.mapped import word_spans
from speech_service.text.ssml import is_ssml, parse_ssml


def refused(document: str, code: str = "invalid_ssml") -> BadRequest:
    """`document` refused with `code`, within seconds and tens of megabytes however it was built."""
    assert is_ssml(document)  # the service reads it as SSML, not as text
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(BadRequest) as caught:
            parse_ssml(document)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 64 * 1024 * 1024, peak
    assert (caught.value.code, caught.value.param) == (code, "input"), caught.value.message
    return caught.value


def said(document: str) -> list[tuple[str, str]]:
    """Each line's text with the caller's text it stands for (its spans, covered)."""
    return [(line.text.text, document[slice(*line.text.covering(0, len(line.text.text)))])
            for line in parse_ssml(document)]


def words(document: str) -> list[tuple[str, str]]:
    """Each word of every line with the caller's characters its caption would name."""
    result = []
    for line in parse_ssml(document):
        [spans] = word_spans(line.text, [line.text.text])
        result.extend((word, document[start:end]) for word, (start, end) in zip(line.text.text.split(), spans))
    return result


# -- spans land on the caller's characters -------------------------------------------------------

_LETTERS = "abcXYZéß日本&<>\"'"
_ESCAPES = {"&": ["&amp;", "&#38;", "&#x26;"], "<": ["&lt;", "&#60;"], ">": ["&gt;", ">"], '"': ['"', "&quot;"],
            "'": ["'", "&apos;"], "é": ["é", "&#233;", "&#xE9;"]}


@st.composite
def pieces(draw):
    """One piece of a document: (markup before, the written text as XML, markup after, the text it
    means, the kind): a plain word (its characters escaped or in CDATA), a word in <sub> or in
    <say-as characters> (read as one caption), or a word in a wrapper that changes no text."""
    word = draw(st.text(_LETTERS, min_size=1, max_size=6))
    kind = draw(st.sampled_from(["word", "word", "cdata", "sub", "say-as"]))
    if kind == "cdata" and "]]>" not in word:
        return "<![CDATA[", word, "]]>", word, "word"
    if kind == "say-as":
        word = draw(st.text("abcXYZ", min_size=1, max_size=6))
        return '<say-as interpret-as="characters">', word, "</say-as>", " ".join(word.upper()), kind
    xml = "".join(draw(st.sampled_from(_ESCAPES.get(c, [c]))) for c in word)
    if kind == "sub":
        return '<sub alias="an alias">', xml, "</sub>", "an alias", kind
    before, after = draw(st.sampled_from([
        ("", ""), ("<s>", "</s>"), ("<p>", "</p>"), ('<voice name="bob">', "</voice>"), ("<!-- note -->", ""),
        ('<prosody rate="slow">', "</prosody>"), ('<voice style="soft">', "</voice>"), ("", '<break time="100ms"/>')]))
    return before, xml, after, word, "word"


@settings(max_examples=150, deadline=None)
@given(st.lists(pieces(), min_size=1, max_size=8), st.lists(st.sampled_from([" ", "\n", "\r\n", "  \t"]), min_size=8,
                                                           max_size=8), st.booleans())
def test_every_character_said_points_at_what_the_caller_wrote_never_inside_markup(parts, gaps, declared):
    document = '<?xml version="1.0" encoding="UTF-8"?>\n' if declared else ""
    document += '<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
    regions = []  # where each piece's written text is in the document
    for (before, xml, after, _, _), gap in zip(parts, gaps):
        document += gap + before
        regions.append((len(document), len(document) + len(xml)))
        document += xml + after
    document += "</speak>"
    assert is_ssml(document)

    lines = parse_ssml(document)
    chars = [(c, span) for line in lines for c, span in zip(line.text.text, line.text.spans)]
    for (_, _, _, meaning, kind), (start, end) in zip(parts, regions):
        mine = [(c, span) for c, span in chars if span[0] < span[1] and start <= span[0] and span[1] <= end]
        if kind == "word":  # each character on its own written form: itself, a reference or CDATA's
            assert "".join(c for c, _ in mine) == meaning
            assert all(html.unescape(document[a:b]) == c for c, (a, b) in mine), (document, mine)
        else:  # a reading: every character on the whole written text
            assert "".join(c for c, _ in mine) == meaning.replace(" ", "")
            assert {span for _, span in mine} == {(start, end)}
    placed = [span for _, span in chars if span[0] < span[1]]
    assert all(any(start <= a and b <= end for start, end in regions) for a, b in placed), "a span outside the text"
    # Nothing lost, nothing added but spaces and a sentence's full stop (which stand for nothing).
    assert all(c in " ." for c, span in chars if span[0] == span[1])
    assert " ".join(line.text.text for line in lines).replace(".", "").split() == " ".join(p[3] for p in parts).split()


def test_references_cdata_and_line_ends_keep_the_callers_characters():
    document = "<speak>caf&#233; &amp;\r\n <![CDATA[a<b]]>   naïve</speak>"
    assert words(document) == [("café", "caf&#233;"), ("&", "&amp;"), ("a<b", "a<b"), ("naïve", "naïve")]
    [line] = parse_ssml(document)
    assert line.text.text == "café & a<b naïve"  # whitespace collapses, as in plain text


# -- what each element does ----------------------------------------------------------------------

def test_is_ssml_only_for_a_speak_document():
    assert is_ssml("<speak>Hi</speak>")
    assert is_ssml('  \n<?xml version="1.0"?>\n<speak version="1.1">Hi</speak>')
    assert is_ssml("\ufeff<speak/>")
    assert is_ssml("<!-- chapter 1 -->\n<speak>Hi</speak>")
    assert is_ssml('<!DOCTYPE speak [<!ENTITY a "b">]><speak>&a;</speak>')  # so that it is refused, not read out
    for plain in ["Hello <speak>", "<speaker>Hi</speaker>", "speak", "<p>Hi</p>", "I <3 <speak> tags", ""]:
        assert not is_ssml(plain)


def test_a_break_ends_the_line_with_its_pause():
    lines = parse_ssml('<speak>Hello <break time="700ms"/> world<break time="1.5s"/><break strength="weak"/>'
                       "again<break/>end</speak>")
    assert [(line.text.text, line.pause_s) for line in lines] == [
        ("Hello", 0.7), ("world", 2.0), ("again", 0.75), ("end", 0.0)]
    [line] = parse_ssml('<speak>no <break strength="none"/>pause</speak>')  # "none": no break at all
    assert line.text.text == "no pause"
    first, second = parse_ssml('<speak><break time="1s"/>Late start</speak>')
    assert (first.text.text, first.pause_s, second.text.text) == ("", 1.0, "Late start")


def test_sentences_and_paragraphs_end_with_a_full_stop_that_stands_for_nothing():
    document = "<speak><p><s>First one</s><s>Second!</s></p><p>A heading</p>After</speak>"
    [line] = parse_ssml(document)
    assert line.text.text == "First one. Second! A heading. After"
    assert words(document)[1] == ("one.", "one")  # the caption names the word, not the added stop


def test_sub_says_its_alias_as_one_caption_on_the_written_text():
    document = '<speak>The <sub alias="World Wide Web Consortium">W3C</sub> met.</speak>'
    assert words(document) == [("The", "The"), ("World", "W3C"), ("Wide", "W3C"), ("Web", "W3C"),
                               ("Consortium", "W3C"), ("met.", "met")]


def test_phoneme_gives_each_chinese_character_its_pinyin():
    document = '<speak xml:lang="zh-CN">去<phoneme alphabet="x-pinyin" ph="yin2 hang2">银行</phoneme>。</speak>'
    [line] = parse_ssml(document)
    assert line.text.text == "去" + chinese.reading("yin2") + chinese.reading("hang2") + "。"
    hang = line.text.text.index(chinese.reading("hang2"))
    assert {document[a:b] for a, b in line.text.spans[hang:hang + len(chinese.reading("hang2"))]} == {"行"}
    [line] = parse_ssml('<speak><phoneme alphabet="pinyin" ph="lü4">绿</phoneme></speak>')
    assert line.text.text == chinese.reading("lv4")


@pytest.mark.parametrize("interpret_as, written, spoken", [
    ("characters", "R2-D2", "R two D two"),
    ("spell-out", "abc", "A B C"),
    ("digits", "1234", "one two three four"),
    ("cardinal", "1,234", "one thousand two hundred thirty-four"),
    ("number", "-3.5", "minus three point five"),
    ("ordinal", "21", "twenty-first"),
    ("ordinal", "3rd", "third"),
    ("telephone", "+1 (555) 123-4567", "plus one five five five one two three four five six seven"),
    ("date", "2024-03-15", "March fifteenth twenty twenty-four"),
])
def test_say_as_reads_its_text_as_one_caption(interpret_as, written, spoken):
    document = f'<speak>Say <say-as interpret-as="{interpret_as}">{written}</say-as> now</speak>'
    assert words(document) == [("Say", "Say"), *[(w, written) for w in spoken.split()], ("now", "now")]


@pytest.mark.parametrize("date_format, written, spoken", [
    ("mdy", "03/15/2024", "March fifteenth twenty twenty-four"),
    ("dmy", "15.03.2024", "the fifteenth of March twenty twenty-four"),
    ("md", "Mar 15", "March fifteenth"),
    ("y", "1999", "nineteen ninety-nine"),
    (None, "15 March 2024", "the fifteenth of March twenty twenty-four"),  # without a format: as written
    (None, "3/2024", "March twenty twenty-four"),
])
def test_say_as_date_follows_its_format(date_format, written, spoken):
    format_attribute = f' format="{date_format}"' if date_format else ""
    document = f'<speak><say-as interpret-as="date"{format_attribute}>{written}</say-as></speak>'
    assert said(document) == [(spoken, written)]


@pytest.mark.parametrize("interpret_as, written, spoken", [
    ("cardinal", "1234", "一千二百三十四"),
    ("ordinal", "3", "第三"),
    ("digits", "2024", "二零二四"),
    ("telephone", "138-1234-5678", "幺三八幺二三四五六七八"),
    ("date", "2024-03-15", "二零二四年三月十五日"),
])
def test_say_as_in_chinese_reads_chinese(interpret_as, written, spoken):
    document = f'<speak xml:lang="zh-CN">是<say-as interpret-as="{interpret_as}">{written}</say-as></speak>'
    [line] = parse_ssml(document)
    assert line.text.text == "是" + spoken
    assert {document[a:b] for a, b in line.text.spans[1:]} == {written}


def test_prosody_rate_multiplies_the_speed_of_its_words():
    rates = {line.text.text: line.rate for line in parse_ssml(
        '<speak>plain <prosody rate="50%">half <prosody rate="x-fast">nested</prosody></prosody>'
        '<prosody rate="1.5">quicker</prosody><prosody rate="+20%">more</prosody><prosody rate="slow">slow</prosody>'
        "</speak>")}
    assert rates == {"plain": 1.0, "half": 0.5, "nested": 0.75, "quicker": 1.5, "more": 1.2, "slow": 0.75}


def test_voices_speak_their_lines_and_the_innermost_wins():
    lines = parse_ssml('<speak>Narrator. <voice name="alice">Hi <voice style="whisper">psst</voice>'
                       '<voice name="bob">Yo</voice></voice> <voice name="alice">Still</voice> '
                       '<voice name="alice">me.</voice> Back.</speak>')
    assert [(line.text.text, line.voice, line.style) for line in lines] == [
        ("Narrator.", None, None), ("Hi", "alice", None), ("psst", "alice", "whisper"), ("Yo", "bob", None),
        ("Still me.", "alice", None), ("Back.", None, None)]  # the same voice twice in a row: one line


def test_a_document_with_nothing_to_say_is_empty_input():
    for document in ["<speak/>", "<speak>  \n </speak>", '<speak><break time="1s"/></speak>', "<speak><p/></speak>"]:
        refused(document, "empty_input")


# -- refusals ------------------------------------------------------------------------------------

def test_an_unsupported_element_is_named_with_what_is_supported():
    error = refused("<speak>Very <emphasis>loud</emphasis></speak>", "unsupported_ssml")
    assert "<emphasis>" in error.message
    assert all(f"<{name}>" in error.message for name in ("break", "sub", "phoneme", "say-as", "prosody", "voice"))
    assert "<audio>" in refused('<speak><audio src="x.wav"/></speak>', "unsupported_ssml").message
    vendor = '<speak xmlns:mstts="m"><mstts:express-as style="cheerful">x</mstts:express-as></speak>'
    assert "<mstts:express-as>" in refused(vendor, "unsupported_ssml").message


@pytest.mark.parametrize("document, named", [
    ('<speak><prosody pitch="high">x</prosody></speak>', "'pitch'"),
    ('<speak><voice name="a" gender="female">x</voice></speak>', "'gender'"),
    ('<speak><say-as interpret-as="date" detail="1">1999</say-as></speak>', "'detail'"),
    ('<speak><break time="1s" foo="bar"/>x</speak>', "'foo'"),
])
def test_an_unknown_attribute_is_named(document, named):
    assert named in refused(document, "unsupported_ssml").message


def test_ipa_is_refused_with_what_to_write_instead():
    error = refused('<speak><phoneme alphabet="ipa" ph="təˈmɑːtoʊ">tomato</phoneme></speak>', "unsupported_ssml")
    assert "'ipa'" in error.message and "<sub alias" in error.message and "pinyin" in error.message


@pytest.mark.parametrize("document", [
    '<speak><say-as interpret-as="expletive">darn</say-as></speak>',
])
def test_an_unsupported_say_as_is_named(document):
    assert "expletive" in refused(document, "unsupported_ssml").message


@pytest.mark.parametrize("document", [
    "<speak>unclosed", "<speak><p>x</s></speak>", "<speak>&nbsp;</speak>", "<speak>a & b</speak>",
    "<speak>x</speak><speak>y</speak>", '<speak a="1" a="2">x</speak>', "<speak>\x00</speak>", "<speak>\ud800</speak>",
    "<speak><speak>x</speak></speak>", "<speak>" + "<s>" * 33 + "deep" + "</s>" * 33 + "</speak>",
    "<speak>" + "<p>" * 20_000 + "</speak>",
    '<speak><break time="11s"/>x</speak>', '<speak><break time="soon"/>x</speak>',
    '<speak><break strength="huge"/></speak>', '<speak><break time="1s">words</break></speak>',
    "<speak>" + '<break time="10s"/>' * 7 + "x</speak>",  # 70 s of silence in all
    '<speak><prosody rate="10%">x</prosody></speak>', '<speak><prosody rate="500%">x</prosody></speak>',
    '<speak><prosody rate="4"><prosody rate="2">x</prosody></prosody></speak>',
    '<speak><prosody rate="quick">x</prosody></speak>',
    "<speak><sub>x</sub></speak>", '<speak><sub alias="y"><s>x</s></sub></speak>', "<speak><voice>x</voice></speak>",
    '<speak><phoneme ph="yin2">银行</phoneme></speak>', '<speak><phoneme ph="hang9">行</phoneme></speak>',
    '<speak><phoneme ph="tomato">tomato</phoneme></speak>',
    '<speak><say-as interpret-as="cardinal">many</say-as></speak>',
    '<speak><say-as interpret-as="ordinal">x</say-as></speak>',
    '<speak><say-as interpret-as="date">13/45/2024</say-as></speak>',
    '<speak><say-as interpret-as="date">x</say-as></speak>',
    '<speak><say-as interpret-as="date" format="qq">2024</say-as></speak>',
    '<speak><say-as interpret-as="telephone">x</say-as></speak>',
])
def test_a_malformed_or_invalid_document_is_refused(document):
    refused(document)


def test_element_nesting_is_bounded():
    ok = "<speak>" + "<s>" * 31 + "deep" + "</s>" * 31 + "</speak>"
    assert parse_ssml(ok)[0].text.text.startswith("deep")
    assert "32" in refused("<speak>" + "<s>" * 32 + "deep" + "</s>" * 32 + "</speak>").message


def test_billion_laughs_is_refused_before_it_expands():
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    refused(f'<?xml version="1.0"?><!DOCTYPE speak [{entities}]><speak>&lol9;</speak>')


def test_quadratic_blowup_is_refused_before_it_expands():
    refused(f'<!DOCTYPE speak [<!ENTITY a "{"x" * 100_000}">]><speak>{"&a;" * 20_000}</speak>')


def test_an_external_entity_file_is_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 1234")
    for document in [f'<!DOCTYPE speak [<!ENTITY x SYSTEM "file://{secret}">]><speak>&x;</speak>',
                     f'<!DOCTYPE speak SYSTEM "file://{secret}"><speak>x</speak>']:
        error = refused(document)
        assert "launch" not in error.message and str(tmp_path) not in error.message


def test_an_external_entity_url_is_never_fetched():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        for document in [f'<!DOCTYPE speak [<!ENTITY x SYSTEM "{url}">]><speak>&x;</speak>',
                         f'<!DOCTYPE speak [<!ENTITY % x SYSTEM "{url}"> %x;]><speak>x</speak>',
                         f'<!DOCTYPE speak SYSTEM "{url}"><speak>x</speak>',
                         f'<speak xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{url}"/></speak>']:
            refused(document, "unsupported_ssml" if "XInclude" in document else "invalid_ssml")
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_a_long_document_is_read_in_time_linear_in_it():
    started = time.monotonic()
    lines = parse_ssml("<speak>" + '<s>word <say-as interpret-as="cardinal">1234</say-as></s>' * 2000 + "</speak>")
    assert time.monotonic() - started < 5
    assert len(lines) == 1 and lines[0].text.text.count("word") == 2000
    refused("<speak>" + "<s>x</s>" * 1000 + '<say-as interpret-as="cardinal">' + "1" * 5000 + "x</say-as></speak>")

"""Text as F5-TTS should read it: numbers, amounts, times and symbols written out as English words.

F5-TTS learned from transcripts that mostly write numbers as words; given digits it mumbles or spells
them. `normalize_for_speech` rewrites English text before the engine plans it; Chinese text goes to
`text.chinese` (F5 reads it through pinyin, which has no digits). Text holding letters of any other
script (Japanese, Cyrillic, ...) is returned unchanged: English words there would be wrong.

The rules run in order, each on what the ones before left (their output holds no digits):
abbreviations ("Dr. Smith", "St. James St.", "e.g.", "No. 5"), Roman numerals ("World War II",
"Henry VIII"), money, dates, phone numbers, years, decades, times, measures ("5 kg", "60 mph"),
ordinals, percentages, ranges, digit chains, scores and fractions, symbols, and last any other
number. A four-digit number from 1100 to 2099 is read as a year ("nineteen eighty-four", "two
thousand five") after a word that sets a year ("in", "since", "by", "from", "until", "between",
"during", "before", "after", "year", a month, ...), before AD/BC, in a range of two such numbers,
and as a decade ("1990s"); elsewhere it is a cardinal ("1984 people"). Every digit of Latin-script
text becomes a word; a number's own punctuation ("5.20", "10:30", "1,000") never survives as a
clause or sentence break, and the text's own punctuation is kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from speech_service.text.chinese import is_chinese, speak_chinese
from speech_service.text.mapped import MappedText
from speech_service.text.numbers import (
    CURRENCY_CODES,
    DOLLAR_PREFIXES,
    MINUS,
    MONTH,
    MONTHS,
    NOT_MORE,
    NUM,
    NUMBERED_ROMAN,
    PER,
    REGNAL_ROMAN,
    TO,
    UNIT,
    YEAR,
    YEAR_WORDS,
    say_year,
)
from speech_service.text.readings import (
    read_abbreviation,
    read_cardinal,
    read_cents,
    read_day_month,
    read_decade,
    read_digit_chain,
    read_duration,
    read_era,
    read_feet_and_inches,
    read_fiscal_year,
    read_fraction,
    read_hour_with_meridiem,
    read_iso_date,
    read_measure,
    read_money,
    read_month_day,
    read_numbered_roman,
    read_ordinal_rule,
    read_out_of,
    read_padded,
    read_percent,
    read_phone,
    read_range,
    read_ratio,
    read_regnal_roman,
    read_slash_date,
    read_street_or_saint,
    read_suffix,
    read_time,
    read_title,
    read_year_span,
    read_years,
)

_AMPM = r"\s?(?P<{}>[AaPp])(?:\.\s?[Mm]\.|\s?[Mm]\b)"  # am, PM, p.m. (its dot handled by the rule)
_HH_MM = r"(?P<{}>[01]?\d|2[0-3]):(?P<{}>[0-5]\d)(?!:?\d)"
_HOUR = r"(?P<{}>1[0-2]|0?[1-9])"

# A phone number: with an area code ("(555) 123-4567", "555.123.4567", "+1 555-123-4567"), or in the
# international form ("+44 20 7946 0958"); seven digits only after a word that asks for a number
# ("call 555-1234"): without one, "500-1000" is a range.
_PHONE = (r"(?<![\w.,/+-])(?P<num>(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{3}[-.])\d{3}[-.]\d{4}"
          r"|\+\d{1,3}(?:[\s.-]\d{1,4}){2,4})(?![\w-]|[.,]\d)")
_LOCAL_PHONE = (r"(?P<lead>\b(?i:call|phone|tel|telephone|dial|fax|mobile|cell|text)\b[^\d\n]{0,12}?)"
                r"(?P<num>[2-9]\d{2}-\d{4}|911|999|112|111|988|311|411)(?![\w-]|[.,]\d)")  # or "call 911"
# Video resolutions: "1080p" → ten eighty p, "720p", "1080i".
_RESOLUTION = r"(?<![\w.,])(?P<n>480|576|720|1080|1440|2160|4320)(?P<scan>[pi])\b"
# Abbreviations read as words; letters only, so `normalize_for_speech` looks for them too.
# A title takes the name it is read with, so the two stay one caption ("Dr. Smith").
_TITLE = r"(?<![\w.])(?P<t>Mr|Mrs|Ms|Dr|Prof|Mt)\.?(?P<name>\s+[A-Z][\w'’-]*)"
_STREET = r"(?<![\w.])St\.(?=\s|$)"
_SUFFIX = r"(?<=\w)(?P<sep>,?\s)(?P<s>Jr|Sr)\."
_LATIN_ABBREVIATION = r"(?<![\w.])(?i:e\.g\.|i\.e\.|etc\.|vs\.?(?=\s)|approx\.)"

_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [(re.compile(p), f) for p, f in [
    (_TITLE, read_title),
    (_STREET, read_street_or_saint),
    (_SUFFIX, read_suffix),
    (_LATIN_ABBREVIATION, read_abbreviation),
    (NUMBERED_ROMAN, read_numbered_roman),
    (REGNAL_ROMAN, read_regnal_roman),
    (r"(?<![\w.])[Nn]o\.\s?(?=\d)", lambda m: "number "),
    # "$5.20", "US$5", "€5,50", "$3M"; then "12.50 EUR" (its empty groups give `read_money` the same names)
    ((rf"{MINUS}(?:(?<![\w])(?P<pre>{'|'.join(DOLLAR_PREFIXES)})(?=\$))?(?P<sym>[$€£¥])\s?"
      rf"(?P<a>{NUM}(?:,\d\d(?![\d,]))?)(?:{TO}[$€£¥]?(?P<b>{NUM}))?"
      rf"(?:\s(?P<scale>thousand|million|billion|trillion)\b|(?P<abbr>bn|mn|[kKmMB])\b)?(?P<code>)"), read_money),
    ((rf"{MINUS}(?<![\w.,])(?P<pre>)(?P<sym>)(?P<a>{NUM})(?:{TO}(?P<b>{NUM}))?"
      rf"(?:\s(?P<scale>thousand|million|billion|trillion))?(?P<abbr>)\s?(?P<code>{'|'.join(CURRENCY_CODES)})\b"),
     read_money),
    (r"(?<![\w-])(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12]\d|3[01])(?![\w-])", read_iso_date),
    (r"(?<![\w.,/])(?P<a>[0-3]?\d)/(?P<b>[0-3]?\d)/(?P<y>\d{4}|\d{2})(?![\w/]|[.,]\d)", read_slash_date),
    (rf"(?<![\w.,:/–-])(?P<y>{YEAR})[-–/](?P<yy>\d\d)(?![\w]|[-–/.,:]\d)", read_year_span),
    (rf"\bFY\s?(?P<y>{YEAR})(?!\d)", read_fiscal_year),
    (r"(?<![\w.,])(?P<ft>\d)['’′]\s?(?P<in>1[01]|\d)(?:\"|”|″|'')", read_feet_and_inches),
    (_PHONE, read_phone),
    (_LOCAL_PHONE, read_phone),
    (_RESOLUTION, lambda m: f"{say_year(m['n'])} {m['scan']}"),
    ((rf"\b(?P<month>{MONTH})\s+(?P<day>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?{NOT_MORE}"
      rf"(?:(?P<sep>,?\s+)(?P<year>\d{{4}}){NOT_MORE})?"), read_month_day),
    (rf"(?<![\w.,])(?P<day>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\s+(?:of\s+)?(?=(?:{MONTHS})\b)", read_day_month),
    ((rf"(?P<lead>\b(?i:{YEAR_WORDS})(?:\s+the\s+year)?(?:\s+|-))(?P<y1>{YEAR})"
      rf"(?:(?P<sep>\s*[-–]\s*|\s+(?:to|and|or|through|until)\s+)(?P<y2>{YEAR}))?{NOT_MORE}"), read_years),
    (r"(?<![\w.,])(?P<y>\d{1,4})\s?(?P<era>AD|BC|BCE|CE)\b", read_era),
    (r"(?<![\w.,'’])(?:(?P<y>1[1-9]\d0|20\d0)|['’]?(?P<d>[1-9]0))['’]?s\b", read_decade),
    (r"(?<![\w.,:])" + _HH_MM.format("h", "m") + "(?:" + _AMPM.format("ap") + ")?"
     r"(?:\s?[-–]\s?" + _HH_MM.format("h2", "m2") + "(?:" + _AMPM.format("ap2") + ")?)?", read_time),
    (r"(?<![\w.,:])(?P<h>\d{1,2}):(?P<m>[0-5]\d):(?P<s>[0-5]\d)(?![\d:])", read_duration),
    (r"(?<![\w.,:])" + _HOUR.format("h") + r"(?:\s?[-–]\s?" + _HOUR.format("h2") + ")?" + _AMPM.format("ap"),
     read_hour_with_meridiem),
    (r"(?<![\w.,:])(?P<a>\d+):(?P<b>\d)(?![\d:])", read_ratio),
    (rf"{MINUS}(?<![\w.,:/])(?P<a>{NUM})(?:{TO}(?P<b>{NUM}))?\s?(?P<unit>{UNIT})(?!\w|/(?!{PER}))", read_measure),
    (r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th|ST|ND|RD|TH)\b", read_ordinal_rule),
    (rf"{MINUS}(?<![\w.,])(?P<a>{NUM})(?:{TO}(?P<b>{NUM}))?\s?%", read_percent),
    (rf"(?<![\w.,:/–-])(?P<a>{NUM}){TO}(?P<b>{NUM})(?![\w]|[-–/]\d|[.,:]\d)", read_range),
    (r"(?<![\w.,])\d+(?:[-–]\d+){2,}(?!\w)", read_digit_chain),
    (rf"(?<![\w.,/])(?P<a>\d*\.\d+)/(?P<b>{NUM})(?![\w/]|[.,]\d)", read_out_of),
    (r"(?<![\w.,/])\d+(?:/\d+){1,2}(?![\w/]|[.,]\d)", read_fraction),
    (r"\s*&\s*", read_padded("and")),
    (r"(?<=\d)\s*\+\s*(?=[\d.])|(?<=\s)\+(?=\s)|(?<![\w+])\+(?=\d)|(?<=\d)\+(?![\w+])", read_padded("plus")),
    (r"(?<=\d)\s*=\s*(?=\d)|(?<=\s)=(?=\s)", read_padded("equals")),
    (r"(?<![\w&])#(?=\d)", lambda m: "number "),
    (rf"(?<![\w.,])(?P<n>{NUM})\s?¢", read_cents),
    (r"(?<=\d)\^(?=\d)", read_padded("to the power of")),
    (r"(?<=\d)x(?=\d)", read_padded("by")),  # dimensions: "1920x1080", "2x4"
    (r"(?<=\d)\s?×\s?(?=\d)", read_padded("times")),
    (r"(?<=\d)\s?[x×](?=\s|$|[,;:!?]|\.(?!\d))", lambda m: " times"),  # "2x faster"
    (r"(?<![\w~])~(?=\d)", lambda m: "about "),
    (rf"(?<=[\w$€£¥])\s?/\s?(?={PER})", read_padded("per")),
    (r"(?<=\d)\s?°\s?C\b", lambda m: " degrees Celsius"),
    (r"(?<=\d)\s?°\s?F\b", lambda m: " degrees Fahrenheit"),
    (r"(?<=\d)\s?°", lambda m: " degrees"),
    (r"(?<=\s)@(?=\s)", lambda m: "at"),
    (rf"{MINUS}(?P<n>{NUM})", read_cardinal),
]]
_SPOKEN = re.compile("|".join([r"[\d$€£¥¢&+=#~°@%×^]", _TITLE, _STREET, _SUFFIX, _LATIN_ABBREVIATION,
                                NUMBERED_ROMAN, REGNAL_ROMAN]))


def _latin_only(text: str) -> bool:
    return all(not c.isalpha() or c < "\u0250" or unicodedata.name(c, "").startswith("LATIN") for c in text)


def speak(text: MappedText) -> MappedText:
    """`text` with its numbers and spoken symbols as English words (Chinese text: in characters,
    `text.chinese`), each word knowing the caller's characters it stands for; unchanged if it has
    none, or if it holds letters of another script."""
    if is_chinese(text.text):
        return speak_chinese(text)
    if not _SPOKEN.search(text.text) or not _latin_only(text.text):
        return text
    for pattern, rule in _RULES:
        text = text.sub(pattern, rule)
    return text


def normalize_for_speech(text: str) -> str:
    """`speak`'s text alone."""
    return speak(MappedText.of(text)).text

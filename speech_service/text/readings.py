"""What each rule of `text.spoken` says for its match: money, dates, times, measures, phone
numbers, Roman numerals, abbreviations, ..."""

from __future__ import annotations

import re
from collections.abc import Callable

from speech_service.text.numbers import (
    CURRENCIES,
    CURRENCY_CODES,
    DOLLAR_PREFIXES,
    FRACTIONS,
    LATIN,
    MONTH_ABBR,
    MONTHS,
    SCALES,
    TITLES,
    UNITS,
    is_attributive,
    is_year,
    say_digits,
    say_integer,
    say_number,
    say_ordinal,
    say_plural,
    say_words,
    say_year,
)


def _minus(m: re.Match) -> str:
    return "minus " if m.group("neg") else ""


# -- the rules ------------------------------------------------------------------------------------

def read_money(m: re.Match) -> str:
    """ "$5.20" → five dollars and twenty cents, "US$5" → five US dollars, "12.50 EUR", "€5,50"."""
    unit, units, subunit, subunits = CURRENCY_CODES[m["code"]] if m["code"] else CURRENCIES[m["sym"]]
    if m["pre"]:
        unit, units = f"{DOLLAR_PREFIXES[m['pre']]} {unit}", f"{DOLLAR_PREFIXES[m['pre']]} {units}"
    amount, upper = re.sub(r",(\d\d)$", r".\1", m["a"]).replace(",", ""), m["b"]  # "5,50": a decimal comma
    scale = SCALES.get(m["scale"] or m["abbr"] or "")
    whole, _, cents = amount.partition(".")
    if upper or scale or len(cents) > 2 or (cents and not subunit) or amount.count(".") > 1:
        spoken = say_number(amount) + (f" to {say_number(upper)}" if upper else "") + (f" {scale}" if scale else "")
        single = (not upper and not scale and amount in ("1", "1.0", "1.00")) or is_attributive(m)
        return _minus(m) + f"{spoken} {unit if single else units}"
    main, sub = whole.lstrip("0"), cents.ljust(2, "0").lstrip("0")  # "" for none: a whole may be any length
    parts = []
    if main or not sub:
        single = main == "1" or (is_attributive(m) and not sub)
        parts.append(f"{say_integer(whole or '0')} {unit if single else units}")
    if sub:
        parts.append(f"{say_words(sub)} {subunit if sub == '1' or (is_attributive(m) and not main) else subunits}")
    return _minus(m) + " and ".join(parts)


def read_iso_date(m: re.Match) -> str:
    month = MONTHS.split("|")[int(m["month"]) - 1]
    return f"{month} {say_ordinal(m['day'])} {say_year(m['year'])}"


def _month_name(written: str) -> str:
    return MONTH_ABBR.get(written.rstrip("."), written)


def read_month_day(m: re.Match) -> str:
    year = f"{m['sep']}{say_year(m['year'])}" if m["year"] else ""
    return f"{_month_name(m['month'])} {say_ordinal(m['day'])}{year}"


def read_day_month(m: re.Match) -> str:
    """ "5 May" → the fifth of May (no second "the" after one written: "the 5th of May")."""
    the = "" if re.search(r"\bthe\s+$", m.string[:m.start()], re.IGNORECASE) else "the "
    return f"{the}{say_ordinal(m['day'])} of "


def read_slash_date(m: re.Match) -> str:
    """ "15/03/2024" and "03/15/2024" → March fifteenth twenty twenty-four: only when the day is over 12,
    so the order is certain ("05/03/2024" may be May or March: read number by number)."""
    first, second = int(m["a"]), int(m["b"])
    year = say_year(m["y"]) if is_year(m["y"]) else say_integer(m["y"])
    day, month = (first, second) if first > 12 else (second, first)
    if (first > 12) == (second > 12) or not 1 <= month <= 12 or day > 31:
        return f"{say_words(m['a'])} {say_words(m['b'])} {year}"
    return f"{MONTHS.split('|')[month - 1]} {say_ordinal(str(day))} {year}"


def read_years(m: re.Match) -> str:
    spoken = m["lead"] + say_year(m["y1"])
    if m["y2"]:
        dash = m["sep"].strip() in ("-", "–")  # "from 1990-2000": to; "between 1939-1945": and
        sep = (" and " if m["lead"].strip().lower() == "between" else " to ") if dash else m["sep"]
        spoken += sep + say_year(m["y2"])
    return spoken


def read_year_span(m: re.Match) -> str:
    """ "2020-21" → twenty twenty to twenty-one (a season, a fiscal year)."""
    start, end = int(m["y"]), int(m["yy"])
    if end <= start % 100 and not (start % 100 == 99 and end == 0):
        return m.group(0)  # not a span ("2020-19"): the range rule reads it
    return f"{say_year(m['y'])} to {say_year(str(start + 1)) if end == 0 else say_words(m['yy'])}"


def read_fiscal_year(m: re.Match) -> str:
    return f"FY {say_year(m['y'])}"


def read_duration(m: re.Match) -> str:
    """ "1:30:05" → one hour thirty minutes and five seconds."""
    parts = [f"{say_words(v)} {name if int(v) == 1 else name + 's'}"
             for v, name in ((m["h"], "hour"), (m["m"], "minute"), (m["s"], "second")) if int(v)]
    if not parts:
        return "zero seconds"
    return parts[0] if len(parts) == 1 else " ".join(parts[:-1]) + " and " + parts[-1]


def read_ratio(m: re.Match) -> str:
    return f"{say_words(m['a'])} to {say_words(m['b'])}"


def read_feet_and_inches(m: re.Match) -> str:
    feet, inches = int(m["ft"]), int(m["in"])
    return (f"{say_words(m['ft'])} {'foot' if feet == 1 else 'feet'} "
            f"{say_words(m['in'])} {'inch' if inches == 1 else 'inches'}")


def read_era(m: re.Match) -> str:
    return f"{say_year(m['y'])} {m['era']}"


def read_decade(m: re.Match) -> str:
    if m["y"]:
        return say_plural(say_year(m["y"]))
    return say_plural(say_words(m["d"]))


def _clock(hour: str, minute: str | None, meridiem: str | None) -> str:
    spoken = say_words(hour)
    if minute and minute != "00":
        spoken += f" oh {say_words(minute)}" if minute.startswith("0") else f" {say_words(minute)}"
    elif minute and not meridiem:
        spoken += " o'clock"
    return spoken + (f" {meridiem.upper()}M" if meridiem else "")


def _kept_stop(m: re.Match) -> str:
    """A full stop the match took ("p.m.", "etc.") that also ended the sentence: the end of the text
    or a capital follows. Kept, so the splitter still finds the sentence end."""
    ended = m.group(0).endswith(".") and re.match(r"\s*$|\s+[A-Z\"'(]", m.string[m.end():])
    return "." if ended else ""


def read_time(m: re.Match) -> str:
    spoken = _clock(m["h"], m["m"], m["ap"])
    if m["h2"]:
        spoken += " to " + _clock(m["h2"], m["m2"], m["ap2"])
    return spoken + _kept_stop(m)


def read_ordinal_rule(m: re.Match) -> str:
    return say_ordinal(m["n"].replace(",", ""))


def read_percent(m: re.Match) -> str:
    upper = f" to {say_number(m['b'])}" if m["b"] else ""
    return f"{_minus(m)}{say_number(m['a'])}{upper} percent"


def read_range(m: re.Match) -> str:
    a, b = m["a"], m["b"]
    if is_year(a) and is_year(b) and int(b) > int(a):
        return f"{say_year(a)} to {say_year(b)}"
    return f"{say_number(a)} to {say_number(b)}"


def read_measure(m: re.Match) -> str:
    """ "5 kg" → five kilograms, "1 km" → one kilometer, "5-10 min" → five to ten minutes."""
    one, many = UNITS[m["unit"]]
    spoken = say_number(m["a"]) + (f" to {say_number(m['b'])}" if m["b"] else "")
    single = (not m["b"] and m["a"] == "1") or is_attributive(m)
    return f"{_minus(m)}{spoken} {one if single else many}"


def read_fraction(m: re.Match) -> str:
    """ "1/2" → one half, "3/4" → three quarters, "2/3" → two thirds; others ("24/7", "50/50", a date
    "5/10/2024") number by number."""
    parts = m.group(0).split("/")
    count = parts[0].lstrip("0") or "0"  # any length: compared as digits, not as int() (4300 at most)
    if len(parts) == 2 and parts[1] in FRACTIONS and len(count) <= 3 and int(count) < int(parts[1]):
        name = FRACTIONS[parts[1]] or say_ordinal(parts[1])
        return f"{say_words(count)} {name if count == '1' else say_plural(name)}"
    *head, last = parts
    return " ".join([*(say_integer(p) for p in head), say_year(last) if len(parts) == 3 and is_year(last)
                     else say_integer(last)])


def read_phone(m: re.Match) -> str:
    """ "+1 (555) 123-4567" → plus one five five five one two three four five six seven."""
    number = m["num"]
    spoken = " ".join(say_digits(group) for group in re.findall(r"\d+", number))
    return (m.groupdict().get("lead") or "") + ("plus " if number.startswith("+") else "") + spoken


def read_out_of(m: re.Match) -> str:
    """ "4.5/5" → four point five out of five (a score; a fraction's numerator has no decimals)."""
    return f"{say_number(m['a'])} out of {say_number(m['b'])}"


def read_cents(m: re.Match) -> str:
    return f"{say_number(m['n'])} {'cent' if m['n'] == '1' else 'cents'}"


def read_title(m: re.Match) -> str:
    return TITLES[m["t"]] + m["name"]


def read_street_or_saint(m: re.Match) -> str:
    """ "St. James St." → Saint James Street: after a name (a capitalised word) "St." is a street,
    unless that word only starts the sentence and a name follows ("Yesterday St. Paul's"); before a
    name it is a saint; else it stays as written."""
    words = m.string[:m.start()].split()
    name_before = bool(words) and words[-1][:1].isupper()
    name_after = re.match(r"\s+[A-Z]", m.string[m.end():]) is not None
    starts_sentence = len(words) < 2 or (words[-2].endswith((".", "!", "?"))
                                         and words[-2].rstrip(".") not in {*TITLES, "St"})
    if name_before and not (name_after and starts_sentence):
        return "Street" + _kept_stop(m)
    return "Saint" if name_after else m.group(0)


def _roman(numeral: str) -> int:
    values = {"I": 1, "V": 5, "X": 10}
    total = sum(values[c] for c in numeral)
    return total - 2 * sum(values[a] for a, b in zip(numeral, numeral[1:]) if values[a] < values[b])


def read_numbered_roman(m: re.Match) -> str:
    return f"{m['w']} {say_words(str(_roman(m['r'])))}"


def read_regnal_roman(m: re.Match) -> str:
    return f"{m['king']} the {say_ordinal(str(_roman(m['reign']))).capitalize()}"


def read_suffix(m: re.Match) -> str:
    """ "King, Jr." → King, Junior."""
    return m["sep"] + {"Jr": "Junior", "Sr": "Senior"}[m["s"]] + _kept_stop(m)


def read_abbreviation(m: re.Match) -> str:
    """ "e.g." → for example; "etc." keeps a full stop that ended the sentence."""
    key = m.group(0).rstrip(".").lower()
    return LATIN[key] + (_kept_stop(m) if key == "etc" else "")


def read_digit_chain(m: re.Match) -> str:
    """A phone number or code: "555-123-4567" digit by digit."""
    return " ".join(say_digits(group) for group in re.split(r"[-–]", m.group(0)))


def read_padded(word: str) -> Callable[[re.Match], str]:
    """`word` with a space on each side that has text (R&D → R and D)."""
    def replace(m: re.Match) -> str:
        before = " " if m.start() > 0 and not m.string[m.start() - 1].isspace() else ""
        after = " " if m.end() < len(m.string) and not m.string[m.end()].isspace() else ""
        return f"{before}{word}{after}"
    return replace


def read_cardinal(m: re.Match) -> str:
    spoken = _minus(m) + say_number(m["n"])
    # "MP3" → "MP three", "5G" → "five G": a word beside the number stays a word of its own.
    if m.start() > 0 and m.string[m.start() - 1].isalpha():
        spoken = " " + spoken
    if m.end() < len(m.string) and m.string[m.end()].isalpha():
        spoken += " "
    return spoken


def read_hour_with_meridiem(m: re.Match) -> str:
    """ "7pm" → seven PM; "9-11am" → nine to eleven AM."""
    spoken = say_words(m["h"]) + (f" to {say_words(m['h2'])}" if m["h2"] else "")
    return spoken + f" {m['ap'].upper()}M" + _kept_stop(m)

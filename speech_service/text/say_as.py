"""What SSML's `<say-as interpret-as="...">` reads for the text it holds: letters and digits one by
one, numbers, ordinals, dates and phone numbers, in English (`text.numbers`) or, for Chinese text,
in Chinese characters (`text.chinese`). The reading is words only (no digit is left for the number
rules after it), and the whole of it stands for the written text (`text.ssml`)."""

from __future__ import annotations

import re

from speech_service.errors import BadRequest
from speech_service.text import chinese
from speech_service.text.numbers import MONTH_ABBR, MONTHS, say_digits, say_number, say_ordinal, say_year

INTERPRETATIONS = ("characters", "spell-out", "digits", "cardinal", "number", "ordinal", "date", "telephone")
DATE_FORMATS = ("mdy", "dmy", "ymd", "md", "dm", "ym", "my", "y", "m", "d")

_NUMBER = re.compile(r"(?P<neg>[-−])?\+?(?P<n>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)")
_ORDINAL = re.compile(r"第?(?P<n>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:st|nd|rd|th|\.)?", re.IGNORECASE)
_MONTH_NAMES = {name.lower(): n for n, name in enumerate(MONTHS.split("|"), 1)}
_MONTH_NAMES.update({abbr.lower(): _MONTH_NAMES[name.lower()] for abbr, name in MONTH_ABBR.items()})


def _refuse(interpret_as: str, written: str, why: str) -> BadRequest:
    return BadRequest(f'input: <say-as interpret-as="{interpret_as}"> holds {shown(written)}, {why}.',
                      code="invalid_ssml", param="input")


def shown(written: str) -> str:
    """`written` quoted for a message, cut short: a refusal need not repeat a long text."""
    return repr(written if len(written) <= 40 else written[:40] + "…")


def say_as(interpret_as: str, written: str, date_format: str | None, in_chinese: bool) -> str:
    """The words `written` is read as; a 400 naming the text when it is not what `interpret_as` says."""
    written = written.strip()
    if interpret_as in ("characters", "spell-out", "digits"):
        return _one_by_one(interpret_as, written, in_chinese)
    if interpret_as == "telephone":
        return _telephone(written, in_chinese)
    if interpret_as in ("cardinal", "number"):
        m = _NUMBER.fullmatch(written)
        if m is None:
            raise _refuse(interpret_as, written, "which is not a number")
        if in_chinese:
            return ("负" if m["neg"] else "") + chinese.number(m["n"])
        return ("minus " if m["neg"] else "") + say_number(m["n"])
    if interpret_as == "ordinal":
        m = _ORDINAL.fullmatch(written)
        if m is None:
            raise _refuse("ordinal", written, "which is not a whole number")
        digits = m["n"].replace(",", "")
        return "第" + chinese.number(digits) if in_chinese else say_ordinal(digits)
    return _date(written, date_format, in_chinese)


def _one_by_one(interpret_as: str, written: str, in_chinese: bool) -> str:
    """ "R2-D2" → R two D two: letters as capitals, digits as words, other symbols not read."""
    said = []
    for c in written:
        if c.isdecimal():
            said.append(chinese.digits(c) if in_chinese else say_digits(str(int(c))))
        elif c.isalpha():
            said.append(c.upper())
    if not said:
        raise _refuse(interpret_as, written, "which has no letter or digit to read")
    return ("" if in_chinese else " ").join(said)


def _telephone(written: str, in_chinese: bool) -> str:
    """ "+1 (555) 123-4567" → plus one five five five one two three four five six seven; in Chinese
    digit by digit with 1 as 幺."""
    groups = re.findall(r"[0-9]+", written)
    if not groups:
        raise _refuse("telephone", written, "which has no digits")
    plus = written.startswith("+")
    if in_chinese:
        return ("加" if plus else "") + "".join(chinese.digits(g).replace("一", "幺") for g in groups)
    return ("plus " if plus else "") + " ".join(say_digits(g) for g in groups)


def _date(written: str, date_format: str | None, in_chinese: bool) -> str:
    """ "2024-03-15" → March fifteenth twenty twenty-four (二零二四年三月十五日); `date_format` (W3C's
    say-as note: "mdy", "dmy", "ymd", ...) orders the fields, else `_guessed_format`."""
    fields = re.findall(r"[0-9]+|[^\W\d_]+", written)
    fields = [f for f in fields if f not in ("年", "月", "日", "号")]
    if not fields:
        raise _refuse("date", written, "which is not a date")
    date_format = (date_format or "").strip().lower() or _guessed_format(fields)
    if date_format not in DATE_FORMATS:
        raise _refuse("date", written, f"and its format {date_format!r} is not one of {', '.join(DATE_FORMATS)}")
    if len(fields) != len(date_format):
        raise _refuse("date", written, f"which is not the {len(date_format)} fields of format {date_format!r} "
                                          f"(a format is one of {', '.join(DATE_FORMATS)})")
    parts = dict(zip(date_format, fields))
    year, month, day = parts.get("y"), _month(parts.get("m"), written), parts.get("d")
    if (day is not None and not (day.isdecimal() and len(day) <= 2 and 1 <= int(day) <= 31)) or (
            year is not None and not year.isdecimal()):
        raise _refuse("date", written, "which is not a date")
    if in_chinese:
        return ((chinese.digits(year) + "年" if year else "") + (chinese.count(str(month)) + "月" if month else "")
                + (chinese.count(day) + "日" if day else ""))
    name = MONTHS.split("|")[month - 1] if month else None
    if day and name:
        said = f"the {say_ordinal(day)} of {name}" if date_format.startswith("d") else f"{name} {say_ordinal(day)}"
    else:
        said = name or (f"the {say_ordinal(day)}" if day else "")
    return " ".join(part for part in (said, say_year(year) if year else "") if part)


def _guessed_format(fields: list[str]) -> str:
    """Without a format: four digits are a year, a word is a month, a month's number comes before the
    day's (2024-03-15, 03/15/2024, 15 March 2024, March 2024)."""
    kinds = ["y" if len(f) == 4 and f.isdecimal() else "m" if not f.isdecimal() else "n" for f in fields]
    one = "d" if "m" in kinds or "y" not in kinds else "m"
    numbers = iter({3: "md", 2: "d" if "m" in kinds else "md", 1: one}.get(kinds.count("n"), ""))
    guessed = "".join(next(numbers, "n") if kind == "n" else kind for kind in kinds)
    return guessed if guessed in DATE_FORMATS else "ymd"


def _month(field: str | None, written: str) -> int | None:
    if field is None:
        return None
    month = int(field) if field.isdecimal() and len(field) <= 2 else _MONTH_NAMES.get(field.lower(), 0)
    if not 1 <= month <= 12:
        raise _refuse("date", written, f"whose month {shown(field)} is not a month")
    return month

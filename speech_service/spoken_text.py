"""Text as F5-TTS should read it: numbers, amounts, times and symbols written out as English words.

F5-TTS learned from transcripts that mostly write numbers as words; given digits it mumbles or spells
them. `normalize_for_speech` rewrites English text before the engine plans it. Text holding letters of
any other script (Chinese, Japanese, Cyrillic, ...) is returned unchanged: F5 reads Chinese through
pinyin, num2words (0.5) has no Chinese, and English words there would be wrong.

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

from num2words import num2words

_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December")
# A month's abbreviation, read as the month when a day follows ("Jan. 5", "Sept 3rd").
_MONTH_ABBR = {"Jan": "January", "Feb": "February", "Mar": "March", "Apr": "April", "Jun": "June",
               "Jul": "July", "Aug": "August", "Sep": "September", "Sept": "September", "Oct": "October",
               "Nov": "November", "Dec": "December"}
_MONTH = rf"(?:{_MONTHS}|(?:{'|'.join(_MONTH_ABBR)})\.?)"
_YEAR = r"(?:1[1-9]\d\d|20\d\d)"
# A number: grouped thousands, or plain digits with decimals (several dots: a version, "1.5.3").
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*|\.\d+)"
_NOT_MORE = r"(?![\w%]|[.,:]\d)"  # the number ends here (no suffix, no more digits)
_MINUS = r"(?:(?<![\w.,)\]])(?P<neg>[-−]))?"  # a sign, not a hyphen inside a word
_TO = r"(?:-|\s?–\s?)"  # a range's dash: "5-10", "5 – 10" (not "5 - 10", which may be a subtraction)
_SCALES = {"thousand": "thousand", "million": "million", "billion": "billion", "trillion": "trillion",
           "k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million",
           "B": "billion", "bn": "billion"}
# Denominators read as fractions ("3/4": three quarters); other slashes join numbers ("24/7").
_FRACTIONS = {"2": "half", "3": None, "4": "quarter", "5": None, "8": None, "10": None, "16": None, "100": None}
# symbol: (unit, units, subunit, subunits); yen has no subunit in use.
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", None, None)}
# "US$5", "C$5": whose dollar.
_DOLLAR_PREFIXES = {"US": "US", "CA": "Canadian", "C": "Canadian", "AU": "Australian", "A": "Australian",
                    "NZ": "New Zealand", "HK": "Hong Kong", "SG": "Singapore", "S": "Singapore"}
# "5 USD", "12.50 EUR": a currency's code after the amount.
_CURRENCY_CODES = {"USD": ("US dollar", "US dollars", "cent", "cents"), "EUR": _CURRENCIES["€"],
                   "GBP": _CURRENCIES["£"], "JPY": _CURRENCIES["¥"],
                   "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
                   "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"),
                   "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes"),
                   "CNY": ("yuan", "yuan", None, None), "INR": ("rupee", "rupees", "paisa", "paise")}
# Unit abbreviations after a number: (singular, plural). Only ones that are not also words or
# scales: not "m" (meters or million), "in", "s", "t".
_UNITS = {
    "mg": ("milligram", "milligrams"), "g": ("gram", "grams"), "kg": ("kilogram", "kilograms"),
    "lb": ("pound", "pounds"), "lbs": ("pounds", "pounds"), "oz": ("ounce", "ounces"),
    "mm": ("millimeter", "millimeters"), "cm": ("centimeter", "centimeters"),
    "km": ("kilometer", "kilometers"), "ft": ("foot", "feet"), "mi": ("mile", "miles"),
    "km/h": ("kilometer per hour", "kilometers per hour"), "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"), "m/s": ("meter per second", "meters per second"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"), "L": ("liter", "liters"),
    "ms": ("millisecond", "milliseconds"), "sec": ("second", "seconds"), "secs": ("seconds", "seconds"),
    "min": ("minute", "minutes"), "mins": ("minutes", "minutes"), "h": ("hour", "hours"),
    "hr": ("hour", "hours"), "hrs": ("hours", "hours"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"), "W": ("watt", "watts"), "kW": ("kilowatt", "kilowatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"), "V": ("volt", "volts"), "mAh": ("milliamp hour", "milliamp hours"),
    "dB": ("decibel", "decibels"), "fps": ("frame per second", "frames per second"),
    "bpm": ("beat per minute", "beats per minute"),
}
# Roman numerals from 1 to 39, read after a word that numbers things ("Chapter IV", "World War II")
# or after a monarch's or pope's name ("Henry VIII" → Henry the Eighth); elsewhere they may be
# letters ("MIX", "Rocky II", "I"), and stay as written.
_ROMAN = r"(?=[IVX])X{0,3}(?:IX|IV|V?I{0,3})"
_NUMBERED_ROMAN = (r"\b(?P<w>Chapter|Part|Volume|Book|Act|Scene|Section|Phase|Type|Class|Stage|Level|Round|"
                   rf"Season|Episode|War|Article|Title|Appendix|Psalm|Grade|Category|Tier)\s+(?P<r>{_ROMAN})\b(?![-'’]?\w)")
_REGNAL_ROMAN = (r"\b(?P<king>Henry|Edward|George|William|Richard|Charles|James|Elizabeth|Louis|Mary|John|"
                 r"Philip|Frederick|Peter|Catherine|Alexander|Nicholas|Ivan|Napoleon|Benedict|Gregory|Pius|Leo|"
                 r"Innocent|Clement|Paul|Ramesses|Constantine|Ferdinand|Alfonso|Otto|Gustav|Christian|Olaf|"
                 rf"Harald|Robert|Malcolm|Stephen|Anne|Victor|Umberto|Felipe|Willem)\s+(?P<reign>{_ROMAN})\b"
                 r"(?:(?=['’]s\b)|(?<=\sI)(?=\s*(?:[,.;:!?)]|$))|(?<!\sI)(?![-'’]?\w))")  # a lone "I": not "I think"
# Titles before a name, read as words ("Dr. Smith" → Doctor Smith; "Dr." alone may be a drive).
_TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor", "Mt": "Mount"}
# Latin abbreviations, read as what they stand for.
_LATIN = {"e.g": "for example", "i.e": "that is", "etc": "et cetera", "vs": "versus", "approx": "approximately"}
# What "/" means "per" before: "$5/month", "10 km/day".
_PER = (r"(?:hour|hr|day|week|month|mo|year|yr|night|person|head|user|seat|minute|min|second|sec|unit|item|"
        r"piece|page|word|kg|lb|km|mile|gallon|liter|litre)s?\b")
_UNIT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))  # longest first: "km/h"
_YEAR_WORDS = (rf"in|since|by|from|until|till|between|during|before|after|circa|year|early|late|mid|Q[1-4]|"
               rf"spring|summer|autumn|fall|winter|{_MONTHS}")


def _words(n: int) -> str:
    """num2words' English, American style: no "and" inside a number, no commas (they would be
    clause breaks for the engine's splitter)."""
    return num2words(n, lang="en").replace(",", "").replace(" and ", " ")


def _ordinal(n: int) -> str:
    return num2words(n, lang="en", to="ordinal").replace(",", "").replace(" and ", " ")


def _year(n: int) -> str:
    return num2words(n, lang="en", to="year").replace(" and ", " ")


def _digits(digits: str) -> str:
    return " ".join(_words(int(d)) for d in digits)


def _integer(digits: str) -> str:
    if (len(digits) > 1 and digits.startswith("0")) or len(digits) > 15:  # "007", an id: digit by digit
        return _digits(digits)
    return _words(int(digits))


def _number(text: str) -> str:
    """ "1,000" → one thousand, "3.14" → three point one four, "1.5.3" → one point five point three."""
    text = text.replace(",", "")
    parts = text.split(".")
    if len(parts) > 2:
        return " point ".join(_integer(p) for p in parts if p)
    whole, fraction = parts[0], parts[1] if len(parts) == 2 else ""
    spoken = _integer(whole) if whole else ""
    return f"{spoken} point {_digits(fraction)}".strip() if fraction else spoken


def _plural(words: str) -> str:
    """nineteen ninety → nineteen nineties, twenty → twenties, nineteen hundred → nineteen hundreds."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith(("x", "s")) else "s")


def _is_year(digits: str) -> bool:
    return re.fullmatch(_YEAR, digits) is not None


def _attributive(m: re.Match) -> bool:
    """After "a"/"an" an amount describes a noun and its unit stays singular: "a 5 kg bag" → a five
    kilogram bag, "a $20 bill" → a twenty dollar bill."""
    return re.search(r"\b[Aa]n?\s+$", m.string[:m.start()]) is not None


def _minus(m: re.Match) -> str:
    return "minus " if m.group("neg") else ""


# -- the rules ------------------------------------------------------------------------------------

def _money(m: re.Match) -> str:
    """ "$5.20" → five dollars and twenty cents, "US$5" → five US dollars, "12.50 EUR", "€5,50"."""
    unit, units, subunit, subunits = _CURRENCY_CODES[m["code"]] if m["code"] else _CURRENCIES[m["sym"]]
    if m["pre"]:
        unit, units = f"{_DOLLAR_PREFIXES[m['pre']]} {unit}", f"{_DOLLAR_PREFIXES[m['pre']]} {units}"
    amount, upper = re.sub(r",(\d\d)$", r".\1", m["a"]).replace(",", ""), m["b"]  # "5,50": a decimal comma
    scale = _SCALES.get(m["scale"] or m["abbr"] or "")
    whole, _, cents = amount.partition(".")
    if upper or scale or len(cents) > 2 or (cents and not subunit) or amount.count(".") > 1:
        spoken = _number(amount) + (f" to {_number(upper)}" if upper else "") + (f" {scale}" if scale else "")
        single = (not upper and not scale and amount in ("1", "1.0", "1.00")) or _attributive(m)
        return _minus(m) + f"{spoken} {unit if single else units}"
    main, sub = int(whole or 0), int(cents.ljust(2, "0")) if cents else 0
    parts = []
    if main or not sub:
        single = main == 1 or (_attributive(m) and not sub)
        parts.append(f"{_integer(whole or '0')} {unit if single else units}")
    if sub:
        parts.append(f"{_words(sub)} {subunit if sub == 1 or (_attributive(m) and not main) else subunits}")
    return _minus(m) + " and ".join(parts)


def _iso_date(m: re.Match) -> str:
    month = _MONTHS.split("|")[int(m["month"]) - 1]
    return f"{month} {_ordinal(int(m['day']))} {_year(int(m['year']))}"


def _month_name(written: str) -> str:
    return _MONTH_ABBR.get(written.rstrip("."), written)


def _month_day(m: re.Match) -> str:
    year = f"{m['sep']}{_year(int(m['year']))}" if m["year"] else ""
    return f"{_month_name(m['month'])} {_ordinal(int(m['day']))}{year}"


def _day_month(m: re.Match) -> str:
    """ "5 May" → the fifth of May (no second "the" after one written: "the 5th of May")."""
    the = "" if re.search(r"\bthe\s+$", m.string[:m.start()], re.IGNORECASE) else "the "
    return f"{the}{_ordinal(int(m['day']))} of "


def _slash_date(m: re.Match) -> str:
    """ "15/03/2024" and "03/15/2024" → March fifteenth twenty twenty-four: only when the day is over 12,
    so the order is certain ("05/03/2024" may be May or March: read number by number)."""
    first, second = int(m["a"]), int(m["b"])
    year = _year(int(m["y"])) if _is_year(m["y"]) else _integer(m["y"])
    day, month = (first, second) if first > 12 else (second, first)
    if (first > 12) == (second > 12) or not 1 <= month <= 12 or day > 31:
        return f"{_words(first)} {_words(second)} {year}"
    return f"{_MONTHS.split('|')[month - 1]} {_ordinal(day)} {year}"


def _years(m: re.Match) -> str:
    spoken = m["lead"] + _year(int(m["y1"]))
    if m["y2"]:
        dash = m["sep"].strip() in ("-", "–")  # "from 1990-2000": to; "between 1939-1945": and
        sep = (" and " if m["lead"].strip().lower() == "between" else " to ") if dash else m["sep"]
        spoken += sep + _year(int(m["y2"]))
    return spoken


def _year_span(m: re.Match) -> str:
    """ "2020-21" → twenty twenty to twenty-one (a season, a fiscal year)."""
    start, end = int(m["y"]), int(m["yy"])
    if end <= start % 100 and not (start % 100 == 99 and end == 0):
        return m.group(0)  # not a span ("2020-19"): the range rule reads it
    return f"{_year(start)} to {_year(start + 1) if end == 0 else _words(end)}"


def _fiscal_year(m: re.Match) -> str:
    return f"FY {_year(int(m['y']))}"


def _duration(m: re.Match) -> str:
    """ "1:30:05" → one hour thirty minutes and five seconds."""
    parts = [f"{_words(int(v))} {name if int(v) == 1 else name + 's'}"
             for v, name in ((m["h"], "hour"), (m["m"], "minute"), (m["s"], "second")) if int(v)]
    if not parts:
        return "zero seconds"
    return parts[0] if len(parts) == 1 else " ".join(parts[:-1]) + " and " + parts[-1]


def _ratio(m: re.Match) -> str:
    return f"{_words(int(m['a']))} to {_words(int(m['b']))}"


def _feet_and_inches(m: re.Match) -> str:
    feet, inches = int(m["ft"]), int(m["in"])
    return f"{_words(feet)} {'foot' if feet == 1 else 'feet'} {_words(inches)} {'inch' if inches == 1 else 'inches'}"


def _era(m: re.Match) -> str:
    return f"{_year(int(m['y']))} {m['era']}"


def _decade(m: re.Match) -> str:
    if m["y"]:
        return _plural(_year(int(m["y"])))
    return _plural(_words(int(m["d"])))


def _clock(hour: str, minute: str | None, meridiem: str | None) -> str:
    spoken = _words(int(hour))
    if minute and minute != "00":
        spoken += f" oh {_words(int(minute))}" if minute.startswith("0") else f" {_words(int(minute))}"
    elif minute and not meridiem:
        spoken += " o'clock"
    return spoken + (f" {meridiem.upper()}M" if meridiem else "")


def _kept_stop(m: re.Match) -> str:
    """A full stop the match took ("p.m.", "etc.") that also ended the sentence: the end of the text
    or a capital follows. Kept, so the splitter still finds the sentence end."""
    ended = m.group(0).endswith(".") and re.match(r"\s*$|\s+[A-Z\"'(]", m.string[m.end():])
    return "." if ended else ""


def _time(m: re.Match) -> str:
    spoken = _clock(m["h"], m["m"], m["ap"])
    if m["h2"]:
        spoken += " to " + _clock(m["h2"], m["m2"], m["ap2"])
    return spoken + _kept_stop(m)


def _ordinal_rule(m: re.Match) -> str:
    return _ordinal(int(m["n"].replace(",", "")))


def _percent(m: re.Match) -> str:
    upper = f" to {_number(m['b'])}" if m["b"] else ""
    return f"{_minus(m)}{_number(m['a'])}{upper} percent"


def _range(m: re.Match) -> str:
    a, b = m["a"], m["b"]
    if _is_year(a) and _is_year(b) and int(b) > int(a):
        return f"{_year(int(a))} to {_year(int(b))}"
    return f"{_number(a)} to {_number(b)}"


def _measure(m: re.Match) -> str:
    """ "5 kg" → five kilograms, "1 km" → one kilometer, "5-10 min" → five to ten minutes."""
    one, many = _UNITS[m["unit"]]
    spoken = _number(m["a"]) + (f" to {_number(m['b'])}" if m["b"] else "")
    single = (not m["b"] and m["a"] == "1") or _attributive(m)
    return f"{_minus(m)}{spoken} {one if single else many}"


def _fraction(m: re.Match) -> str:
    """ "1/2" → one half, "3/4" → three quarters, "2/3" → two thirds; others ("24/7", "50/50", a date
    "5/10/2024") number by number."""
    parts = m.group(0).split("/")
    if len(parts) == 2 and int(parts[0]) < int(parts[1]) and parts[1] in _FRACTIONS:
        count = int(parts[0])
        name = _FRACTIONS[parts[1]] or _ordinal(int(parts[1]))
        return f"{_words(count)} {name if count == 1 else _plural(name)}"
    *head, last = parts
    return " ".join([*(_integer(p) for p in head), _year(int(last)) if len(parts) == 3 and _is_year(last)
                     else _integer(last)])


def _phone(m: re.Match) -> str:
    """ "+1 (555) 123-4567" → plus one five five five one two three four five six seven."""
    number = m["num"]
    spoken = " ".join(_digits(group) for group in re.findall(r"\d+", number))
    return (m.groupdict().get("lead") or "") + ("plus " if number.startswith("+") else "") + spoken


def _out_of(m: re.Match) -> str:
    """ "4.5/5" → four point five out of five (a score; a fraction's numerator has no decimals)."""
    return f"{_number(m['a'])} out of {_number(m['b'])}"


def _cents(m: re.Match) -> str:
    return f"{_number(m['n'])} {'cent' if m['n'] == '1' else 'cents'}"


def _title(m: re.Match) -> str:
    return _TITLES[m["t"]]


def _street_or_saint(m: re.Match) -> str:
    """ "St. James St." → Saint James Street: after a name (a capitalised word) "St." is a street,
    unless that word only starts the sentence and a name follows ("Yesterday St. Paul's"); before a
    name it is a saint; else it stays as written."""
    words = m.string[:m.start()].split()
    name_before = bool(words) and words[-1][:1].isupper()
    name_after = re.match(r"\s+[A-Z]", m.string[m.end():]) is not None
    starts_sentence = len(words) < 2 or (words[-2].endswith((".", "!", "?"))
                                         and words[-2].rstrip(".") not in {*_TITLES, "St"})
    if name_before and not (name_after and starts_sentence):
        return "Street" + _kept_stop(m)
    return "Saint" if name_after else m.group(0)


def _roman(numeral: str) -> int:
    values = {"I": 1, "V": 5, "X": 10}
    total = sum(values[c] for c in numeral)
    return total - 2 * sum(values[a] for a, b in zip(numeral, numeral[1:]) if values[a] < values[b])


def _numbered_roman(m: re.Match) -> str:
    return f"{m['w']} {_words(_roman(m['r']))}"


def _regnal_roman(m: re.Match) -> str:
    return f"{m['king']} the {_ordinal(_roman(m['reign'])).capitalize()}"


def _suffix(m: re.Match) -> str:
    """ "King, Jr." → King, Junior."""
    return m["sep"] + {"Jr": "Junior", "Sr": "Senior"}[m["s"]] + _kept_stop(m)


def _abbreviation(m: re.Match) -> str:
    """ "e.g." → for example; "etc." keeps a full stop that ended the sentence."""
    key = m.group(0).rstrip(".").lower()
    return _LATIN[key] + (_kept_stop(m) if key == "etc" else "")


def _digit_chain(m: re.Match) -> str:
    """A phone number or code: "555-123-4567" digit by digit."""
    return " ".join(_digits(group) for group in re.split(r"[-–]", m.group(0)))


def _padded(word: str) -> Callable[[re.Match], str]:
    """`word` with a space on each side that has text (R&D → R and D)."""
    def replace(m: re.Match) -> str:
        before = " " if m.start() > 0 and not m.string[m.start() - 1].isspace() else ""
        after = " " if m.end() < len(m.string) and not m.string[m.end()].isspace() else ""
        return f"{before}{word}{after}"
    return replace


def _cardinal(m: re.Match) -> str:
    spoken = _minus(m) + _number(m["n"])
    # "MP3" → "MP three", "5G" → "five G": a word beside the number stays a word of its own.
    if m.start() > 0 and m.string[m.start() - 1].isalpha():
        spoken = " " + spoken
    if m.end() < len(m.string) and m.string[m.end()].isalpha():
        spoken += " "
    return spoken


def _hour_with_meridiem(m: re.Match) -> str:
    """ "7pm" → seven PM; "9-11am" → nine to eleven AM."""
    spoken = _words(int(m["h"])) + (f" to {_words(int(m['h2']))}" if m["h2"] else "")
    return spoken + f" {m['ap'].upper()}M" + _kept_stop(m)


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
_TITLE = r"(?<![\w.])(?P<t>Mr|Mrs|Ms|Dr|Prof|Mt)\.?(?=\s+[A-Z])"
_STREET = r"(?<![\w.])St\.(?=\s|$)"
_SUFFIX = r"(?<=\w)(?P<sep>,?\s)(?P<s>Jr|Sr)\."
_LATIN_ABBREVIATION = r"(?<![\w.])(?i:e\.g\.|i\.e\.|etc\.|vs\.?(?=\s)|approx\.)"

_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [(re.compile(p), f) for p, f in [
    (_TITLE, _title),
    (_STREET, _street_or_saint),
    (_SUFFIX, _suffix),
    (_LATIN_ABBREVIATION, _abbreviation),
    (_NUMBERED_ROMAN, _numbered_roman),
    (_REGNAL_ROMAN, _regnal_roman),
    (r"(?<![\w.])[Nn]o\.\s?(?=\d)", lambda m: "number "),
    # "$5.20", "US$5", "€5,50", "$3M"; then "12.50 EUR" (its empty groups give `_money` the same names)
    ((rf"{_MINUS}(?:(?<![\w])(?P<pre>{'|'.join(_DOLLAR_PREFIXES)})(?=\$))?(?P<sym>[$€£¥])\s?"
      rf"(?P<a>{_NUM}(?:,\d\d(?![\d,]))?)(?:{_TO}[$€£¥]?(?P<b>{_NUM}))?"
      rf"(?:\s(?P<scale>thousand|million|billion|trillion)\b|(?P<abbr>bn|mn|[kKmMB])\b)?(?P<code>)"), _money),
    ((rf"{_MINUS}(?<![\w.,])(?P<pre>)(?P<sym>)(?P<a>{_NUM})(?:{_TO}(?P<b>{_NUM}))?"
      rf"(?:\s(?P<scale>thousand|million|billion|trillion))?(?P<abbr>)\s?(?P<code>{'|'.join(_CURRENCY_CODES)})\b"),
     _money),
    (r"(?<![\w-])(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12]\d|3[01])(?![\w-])", _iso_date),
    (r"(?<![\w.,/])(?P<a>[0-3]?\d)/(?P<b>[0-3]?\d)/(?P<y>\d{4}|\d{2})(?![\w/]|[.,]\d)", _slash_date),
    (rf"(?<![\w.,:/–-])(?P<y>{_YEAR})[-–/](?P<yy>\d\d)(?![\w]|[-–/.,:]\d)", _year_span),
    (rf"\bFY\s?(?P<y>{_YEAR})(?!\d)", _fiscal_year),
    (r"(?<![\w.,])(?P<ft>\d)['’′]\s?(?P<in>1[01]|\d)(?:\"|”|″|'')", _feet_and_inches),
    (_PHONE, _phone),
    (_LOCAL_PHONE, _phone),
    (_RESOLUTION, lambda m: f"{_year(int(m['n']))} {m['scan']}"),
    ((rf"\b(?P<month>{_MONTH})\s+(?P<day>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?{_NOT_MORE}"
      rf"(?:(?P<sep>,?\s+)(?P<year>\d{{4}}){_NOT_MORE})?"), _month_day),
    (rf"(?<![\w.,])(?P<day>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\s+(?:of\s+)?(?=(?:{_MONTHS})\b)", _day_month),
    ((rf"(?P<lead>\b(?i:{_YEAR_WORDS})(?:\s+the\s+year)?(?:\s+|-))(?P<y1>{_YEAR})"
      rf"(?:(?P<sep>\s*[-–]\s*|\s+(?:to|and|or|through|until)\s+)(?P<y2>{_YEAR}))?{_NOT_MORE}"), _years),
    (r"(?<![\w.,])(?P<y>\d{1,4})\s?(?P<era>AD|BC|BCE|CE)\b", _era),
    (r"(?<![\w.,'’])(?:(?P<y>1[1-9]\d0|20\d0)|['’]?(?P<d>[1-9]0))['’]?s\b", _decade),
    (r"(?<![\w.,:])" + _HH_MM.format("h", "m") + "(?:" + _AMPM.format("ap") + ")?"
     r"(?:\s?[-–]\s?" + _HH_MM.format("h2", "m2") + "(?:" + _AMPM.format("ap2") + ")?)?", _time),
    (r"(?<![\w.,:])(?P<h>\d{1,2}):(?P<m>[0-5]\d):(?P<s>[0-5]\d)(?![\d:])", _duration),
    (r"(?<![\w.,:])" + _HOUR.format("h") + r"(?:\s?[-–]\s?" + _HOUR.format("h2") + ")?" + _AMPM.format("ap"),
     _hour_with_meridiem),
    (r"(?<![\w.,:])(?P<a>\d+):(?P<b>\d)(?![\d:])", _ratio),
    (rf"{_MINUS}(?<![\w.,:/])(?P<a>{_NUM})(?:{_TO}(?P<b>{_NUM}))?\s?(?P<unit>{_UNIT})(?!\w|/(?!{_PER}))", _measure),
    (r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th|ST|ND|RD|TH)\b", _ordinal_rule),
    (rf"{_MINUS}(?<![\w.,])(?P<a>{_NUM})(?:{_TO}(?P<b>{_NUM}))?\s?%", _percent),
    (rf"(?<![\w.,:/–-])(?P<a>{_NUM}){_TO}(?P<b>{_NUM})(?![\w]|[-–/]\d|[.,:]\d)", _range),
    (r"(?<![\w.,])\d+(?:[-–]\d+){2,}(?!\w)", _digit_chain),
    (rf"(?<![\w.,/])(?P<a>\d*\.\d+)/(?P<b>{_NUM})(?![\w/]|[.,]\d)", _out_of),
    (r"(?<![\w.,/])\d+(?:/\d+){1,2}(?![\w/]|[.,]\d)", _fraction),
    (r"\s*&\s*", _padded("and")),
    (r"(?<=\d)\s*\+\s*(?=[\d.])|(?<=\s)\+(?=\s)|(?<![\w+])\+(?=\d)|(?<=\d)\+(?![\w+])", _padded("plus")),
    (r"(?<=\d)\s*=\s*(?=\d)|(?<=\s)=(?=\s)", _padded("equals")),
    (r"(?<![\w&])#(?=\d)", lambda m: "number "),
    (rf"(?<![\w.,])(?P<n>{_NUM})\s?¢", _cents),
    (r"(?<=\d)\^(?=\d)", _padded("to the power of")),
    (r"(?<=\d)x(?=\d)", _padded("by")),  # dimensions: "1920x1080", "2x4"
    (r"(?<=\d)\s?×\s?(?=\d)", _padded("times")),
    (r"(?<=\d)\s?[x×](?=\s|$|[,;:!?]|\.(?!\d))", lambda m: " times"),  # "2x faster"
    (r"(?<![\w~])~(?=\d)", lambda m: "about "),
    (rf"(?<=[\w$€£¥])\s?/\s?(?={_PER})", _padded("per")),
    (r"(?<=\d)\s?°\s?C\b", lambda m: " degrees Celsius"),
    (r"(?<=\d)\s?°\s?F\b", lambda m: " degrees Fahrenheit"),
    (r"(?<=\d)\s?°", lambda m: " degrees"),
    (r"(?<=\s)@(?=\s)", lambda m: "at"),
    (rf"{_MINUS}(?P<n>{_NUM})", _cardinal),
]]
_SPOKEN = re.compile("|".join([r"[\d$€£¥¢&+=#~°@%×^]", _TITLE, _STREET, _SUFFIX, _LATIN_ABBREVIATION,
                                _NUMBERED_ROMAN, _REGNAL_ROMAN]))


def _latin_only(text: str) -> bool:
    return all(not c.isalpha() or c < "\u0250" or unicodedata.name(c, "").startswith("LATIN") for c in text)


def normalize_for_speech(text: str) -> str:
    """`text` with its numbers and spoken symbols as English words; unchanged if it has none, or if it
    holds letters of a script other than Latin."""
    if not _SPOKEN.search(text) or not _latin_only(text):
        return text
    for pattern, rule in _RULES:
        text = pattern.sub(rule, text)
    return text

"""The words of numbers for `text.spoken`: the patterns its rules share and the helpers that
say integers, decimals, ordinals and years (num2words, English)."""

from __future__ import annotations

import re

from num2words import num2words

MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December")
# A month's abbreviation, read as the month when a day follows ("Jan. 5", "Sept 3rd").
MONTH_ABBR = {"Jan": "January", "Feb": "February", "Mar": "March", "Apr": "April", "Jun": "June",
               "Jul": "July", "Aug": "August", "Sep": "September", "Sept": "September", "Oct": "October",
               "Nov": "November", "Dec": "December"}
MONTH = rf"(?:{MONTHS}|(?:{'|'.join(MONTH_ABBR)})\.?)"
YEAR = r"(?:1[1-9]\d\d|20\d\d)"
# A number: grouped thousands, or plain digits with decimals (several dots: a version, "1.5.3").
NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*|\.\d+)"
NOT_MORE = r"(?![\w%]|[.,:]\d)"  # the number ends here (no suffix, no more digits)
MINUS = r"(?:(?<![\w.,)\]])(?P<neg>[-−]))?"  # a sign, not a hyphen inside a word
TO = r"(?:-|\s?–\s?)"  # a range's dash: "5-10", "5 – 10" (not "5 - 10", which may be a subtraction)
SCALES = {"thousand": "thousand", "million": "million", "billion": "billion", "trillion": "trillion",
           "k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million",
           "B": "billion", "bn": "billion"}
# Denominators read as fractions ("3/4": three quarters); other slashes join numbers ("24/7").
FRACTIONS = {"2": "half", "3": None, "4": "quarter", "5": None, "8": None, "10": None, "16": None, "100": None}
# symbol: (unit, units, subunit, subunits); yen has no subunit in use.
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", None, None)}
# "US$5", "C$5": whose dollar.
DOLLAR_PREFIXES = {"US": "US", "CA": "Canadian", "C": "Canadian", "AU": "Australian", "A": "Australian",
                    "NZ": "New Zealand", "HK": "Hong Kong", "SG": "Singapore", "S": "Singapore"}
# "5 USD", "12.50 EUR": a currency's code after the amount.
CURRENCY_CODES = {"USD": ("US dollar", "US dollars", "cent", "cents"), "EUR": CURRENCIES["€"],
                   "GBP": CURRENCIES["£"], "JPY": CURRENCIES["¥"],
                   "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
                   "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"),
                   "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes"),
                   "CNY": ("yuan", "yuan", None, None), "INR": ("rupee", "rupees", "paisa", "paise")}
# Unit abbreviations after a number: (singular, plural). Only ones that are not also words or
# scales: not "m" (meters or million), "in", "s", "t".
UNITS = {
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
NUMBERED_ROMAN = (r"\b(?P<w>Chapter|Part|Volume|Book|Act|Scene|Section|Phase|Type|Class|Stage|Level|Round|"
                   rf"Season|Episode|War|Article|Title|Appendix|Psalm|Grade|Category|Tier)\s+(?P<r>{_ROMAN})\b(?![-'’]?\w)")
REGNAL_ROMAN = (r"\b(?P<king>Henry|Edward|George|William|Richard|Charles|James|Elizabeth|Louis|Mary|John|"
                 r"Philip|Frederick|Peter|Catherine|Alexander|Nicholas|Ivan|Napoleon|Benedict|Gregory|Pius|Leo|"
                 r"Innocent|Clement|Paul|Ramesses|Constantine|Ferdinand|Alfonso|Otto|Gustav|Christian|Olaf|"
                 rf"Harald|Robert|Malcolm|Stephen|Anne|Victor|Umberto|Felipe|Willem)\s+(?P<reign>{_ROMAN})\b"
                 r"(?:(?=['’]s\b)|(?<=\sI)(?=\s*(?:[,.;:!?)]|$))|(?<!\sI)(?![-'’]?\w))")  # a lone "I": not "I think"
# Titles before a name, read as words ("Dr. Smith" → Doctor Smith; "Dr." alone may be a drive).
TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor", "Mt": "Mount"}
# Latin abbreviations, read as what they stand for.
LATIN = {"e.g": "for example", "i.e": "that is", "etc": "et cetera", "vs": "versus", "approx": "approximately"}
# What "/" means "per" before: "$5/month", "10 km/day".
PER = (r"(?:hour|hr|day|week|month|mo|year|yr|night|person|head|user|seat|minute|min|second|sec|unit|item|"
        r"piece|page|word|kg|lb|km|mile|gallon|liter|litre)s?\b")
UNIT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))  # longest first: "km/h"
YEAR_WORDS = (rf"in|since|by|from|until|till|between|during|before|after|circa|year|early|late|mid|Q[1-4]|"
               rf"spring|summer|autumn|fall|winter|{MONTHS}")


# The longest run of digits read as one number; a longer one is an id or a code, read digit by digit.
# The one guard on every number a rule reads: num2words overflows near 10**306, Python's int()
# refuses over 4300 digits, and a quantity that long is no quantity a listener follows.
LONGEST_NUMBER = 15
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _english(digits: str, to: str) -> str:
    """num2words' English for the value of `digits` (any script's decimal digits), American style:
    no "and" inside a number, no commas (they would be clause breaks for the engine's splitter). The
    one call of num2words: a run too long to be a number is read digit by digit, an ordinal's last
    digit as an ordinal ("…six seventh")."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > LONGEST_NUMBER:
        return f"{say_digits(digits[:-1])} {_english(digits[-1], to)}" if to == "ordinal" else say_digits(digits)
    return num2words(int(significant), lang="en", to=to).replace(",", "").replace(" and ", " ")


def say_words(digits: str) -> str:
    """The value of `digits` as words: "03" → three."""
    return _english(digits, "cardinal")


def say_ordinal(digits: str) -> str:
    return _english(digits, "ordinal")


def say_year(digits: str) -> str:
    return _english(digits, "year")


def say_digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def say_integer(digits: str) -> str:
    """As written: "007" (a code) digit by digit, else its value (`say_words`)."""
    return say_digits(digits) if len(digits) > 1 and digits.startswith("0") else say_words(digits)


def say_number(text: str) -> str:
    """ "1,000" → one thousand, "3.14" → three point one four, "1.5.3" → one point five point three."""
    text = text.replace(",", "")
    parts = text.split(".")
    if len(parts) > 2:
        return " point ".join(say_integer(p) for p in parts if p)
    whole, fraction = parts[0], parts[1] if len(parts) == 2 else ""
    spoken = say_integer(whole) if whole else ""
    return f"{spoken} point {say_digits(fraction)}".strip() if fraction else spoken


def say_plural(words: str) -> str:
    """nineteen ninety → nineteen nineties, twenty → twenties, nineteen hundred → nineteen hundreds."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith(("x", "s")) else "s")


def is_year(digits: str) -> bool:
    return re.fullmatch(YEAR, digits) is not None


def is_attributive(m: re.Match) -> bool:
    """After "a"/"an" an amount describes a noun and its unit stays singular: "a 5 kg bag" → a five
    kilogram bag, "a $20 bill" → a twenty dollar bill."""
    return re.search(r"\b[Aa]n?\s+$", m.string[:m.start()]) is not None

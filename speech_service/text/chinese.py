"""Chinese text as a Chinese reader says it: digits, amounts, percentages, dates, times and phone
numbers written out in characters before F5 reads them (through pinyin, which has no digits).

Numbers are read by cn2an (`an2cn`); the rules around it say which reading a place asks for: a year
digit by digit (2024年: 二零二四年), a phone number digit by digit with 1 as 幺, a lone 2 before a
measure word as 两 (2个: 两个; but 第2, 2月, 2号: 二), a time as 点 and 分, a percentage as 百分之, a
fraction as 分之, a range as 到. Text with kana or hangul is Japanese or Korean, which these
readings would get wrong: it is left as it is. Like the English rules, each rule runs on what the
ones before left, and every replacement stands for the caller's characters it came from.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import cn2an

from speech_service.text.mapped import MappedText

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NOT_CHINESE = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uac00-\ud7af\u1100-\u11ff]")  # kana, hangul
_SPOKEN = re.compile(r"[\d%％℃°$¥￥€£]")
_DIGIT = dict(zip("0123456789", "零一二三四五六七八九"))
_PHONE_DIGIT = {**_DIGIT, "1": "幺"}
NUM = r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?"
# Measure words after which a lone 2 is 两 (两个, 两天, 两点); not 月 (二月), 号 or 楼 (二号, 二楼).
_MEASURES = "个只本张次位条件天岁年周台辆份种家名人头匹支把块间颗首双对元角毛分秒点小倍斤公米克升"
_UNITS = {"km/h": "公里每小时", "kg": "千克", "km": "公里", "cm": "厘米", "mm": "毫米", "mg": "毫克", "ml": "毫升",
          "m": "米", "g": "克", "L": "升", "GB": "GB", "MB": "MB", "TB": "TB"}
_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}


def is_chinese(text: str) -> bool:
    return bool(_HAN.search(text)) and not _NOT_CHINESE.search(text)


# The longest whole part read as a quantity; a longer one is a code, read digit by digit. The one
# guard on what reaches cn2an: it reads at most 16 digits and keeps 16 decimal places, dropping the
# rest (so the decimals are read here, digit by digit, as it would).
LONGEST_NUMBER = 12


def _ascii(written: str) -> str:
    """Any script's decimal digits as ASCII ones (full-width １２ is common in Chinese text; cn2an
    refuses other digits)."""
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in written)


def number(written: str) -> str:
    """A number as a quantity: 1,234.5 → 一千二百三十四点五; a leading zero or a long code digit by digit."""
    plain = _ascii(written.replace(",", ""))
    whole, _, decimals = plain.partition(".")
    if (len(whole) > 1 and whole.startswith("0")) or len(whole) > LONGEST_NUMBER:
        return digits(plain)
    return cn2an.an2cn(whole) + ("点" + digits(decimals) if decimals else "")


def digits(written: str, table: dict[str, str] = _DIGIT) -> str:
    return "".join(table.get(c, "点" if c == "." else "") for c in _ascii(written))


def count(written: str) -> str:
    """A month, day, hour or minute: 03 → 三."""
    return cn2an.an2cn(str(int(written)))


def amount(written: str) -> str:
    """Money: 3.50 → 三点五 (a trailing zero is not said)."""
    plain = written.replace(",", "")
    return number(plain.rstrip("0").rstrip(".") if "." in plain else plain)


def _date(m: re.Match) -> str:
    said = digits(m["y"]) + "年"
    if m["m"]:
        said += count(m["m"]) + "月"
    if m["d"]:
        said += count(m["d"]) + (m["day"] if m["day"] in ("日", "号") else "日")
    return said


def _time(m: re.Match) -> str:
    hour, minutes = int(m["h"]), int(m["min"])
    said = ("两" if hour == 2 else count(m["h"])) + "点"
    said += "整" if minutes == 0 and not m["s"] else ("零" if minutes < 10 else "") + count(m["min"]) + "分"
    if m["s"]:
        said += count(m["s"]) + "秒"
    return said


def _signed(m: re.Match) -> str:
    return "负" if m["neg"] else ""


def _below(m: re.Match) -> str:  # a temperature under zero
    return "零下" if m["neg"] else ""


_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [(re.compile(p), f) for p, f in [
    # 2024年3月15日, 2024年3月, 2024年; 2024-03-15, 2024/3/15, 2024.3.15
    (r"(?<![\d.])(?P<y>\d{4})年(?:(?P<m>1[0-2]|0?[1-9])月(?:(?P<d>3[01]|[12]\d|0?[1-9])(?P<day>[日号]))?)?", _date),
    (r"(?<![\d.])(?P<y>\d{4})(?P<sep>[-/.])(?P<m>1[0-2]|0?[1-9])(?P=sep)(?P<d>3[01]|[12]\d|0?[1-9])(?P<day>[日号]?)"
     r"(?![\d])", _date),
    (r"(?<![\d.])(?P<m>1[0-2]|0?[1-9])月(?P<d>3[01]|[12]\d|0?[1-9])(?P<day>[日号])",
     lambda m: count(m["m"]) + "月" + count(m["d"]) + m["day"]),
    # Phone numbers: mobiles (+86 138-1234-5678), landlines (010-12345678), 400/800 service numbers.
    (r"(?<![\d.])(?P<cc>\+86[- ]?)?(?P<n>1[3-9]\d(?:[- ]?\d{4}){2})(?![\d])",
     lambda m: ("加八六" if m["cc"] else "") + digits(m["n"], _PHONE_DIGIT)),
    (r"(?<![\d.])(?P<n>0\d{2,3}-\d{7,8}|[48]00-?\d{3}-?\d{4})(?![\d])", lambda m: digits(m["n"], _PHONE_DIGIT)),
    (r"(?<=拨打)(?P<n>1[12][09])(?!\d)|(?<=打)(?P<m>1[12][09])(?!\d)",
     lambda m: digits(m["n"] or m["m"], _PHONE_DIGIT)),
    (r"(?<![\d:])(?P<h>[01]?\d|2[0-3]):(?P<min>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])", _time),
    (rf"(?<![\d.])(?P<neg>-)?(?P<n>{NUM})\s?(?:℃|°C)", lambda m: _below(m) + number(m["n"]) + "摄氏度"),
    (rf"(?<![\d.])(?P<neg>-)?(?P<n>{NUM})\s?°F", lambda m: _below(m) + number(m["n"]) + "华氏度"),
    (rf"(?<![\d.])(?P<neg>-)?(?P<n>{NUM})\s?[%％]", lambda m: _signed(m) + "百分之" + number(m["n"])),
    (rf"(?P<neg>-)?(?P<sym>[¥￥$€£])\s?(?P<n>{NUM})", lambda m: _signed(m) + amount(m["n"]) + _CURRENCY[m["sym"]]),
    (rf"(?<![\d.])(?P<n>{NUM})(?=元|块)", lambda m: "两" if m["n"] == "2" else amount(m["n"])),
    (r"(?<![\d.])(?P<n>\d{3,})(?=室|房|路|次列车)", lambda m: digits(m["n"])),  # rooms, bus lines: 一二零三室
    (rf"(?<![\d.])(?P<n>{NUM})\s?(?P<unit>km/h|kg|km|cm|mm|mg|ml|GB|MB|TB|m|g|L)(?![A-Za-z/])",
     lambda m: ("两" if m["n"] == "2" else number(m["n"])) + _UNITS[m["unit"]]),
    (r"(?<![\d./])(?P<a>\d+)/(?P<b>\d+)(?![\d/])", lambda m: number(m["b"]) + "分之" + number(m["a"])),
    (rf"(?<![\d.])(?P<a>{NUM})\s?[-~～—–]\s?(?P<b>{NUM})(?![\d])", lambda m: number(m["a"]) + "到" + number(m["b"])),
    (rf"(?<![\d.第])2(?=[{_MEASURES}])", lambda m: "两"),
    # Every digit left: no lookbehind, so none reaches the model ("1.2.3": 一点二.三).
    (rf"(?:(?<![A-Za-z0-9.])(?P<neg>-))?(?P<n>{NUM})", lambda m: _signed(m) + number(m["n"])),
]]


def speak_chinese(text: MappedText) -> MappedText:
    """`text` with its numbers and symbols in Chinese characters; unchanged without any."""
    if not _SPOKEN.search(text.text):
        return text
    for pattern, rule in _RULES:
        text = text.sub(pattern, rule)
    return text


# A pinyin reading a lexicon or SSML <phoneme> puts in place of a character: the syllable's letters
# (ü as v) between private-use marks, its tone (1-5) as the closing mark, so no digit is left for the
# number rules to read; the engine makes it one model token, as f5-tts's own pinyin would be.
_READING_OPEN, _TONES = "\ue000", "\ue001\ue002\ue003\ue004\ue005"
READING = re.compile(f"{_READING_OPEN}([a-z]{{1,6}})([{_TONES}])")
PINYIN = re.compile(r"([a-zü]{1,6})([1-5])")  # one syllable with its tone number, as written by a caller


def reading(syllable: str) -> str:
    """The text that makes the model read `syllable` ("hang2"; `PINYIN`) for one character."""
    m = PINYIN.fullmatch(syllable.strip().lower())
    if m is None:
        raise ValueError(f"{syllable!r} is not one pinyin syllable with its tone number (1-5), e.g. hang2")
    return f"{_READING_OPEN}{m[1].replace('ü', 'v')}{_TONES[int(m[2]) - 1]}"


def shown_readings(text: str) -> str:
    """`text` with each reading written as {hang2}: what a dry run shows."""
    return READING.sub(lambda m: f"{{{m[1]}{_TONES.index(m[2]) + 1}}}", text)


def reading_tokens(text: str, convert: Callable[[list[str]], list[list[str]]]) -> list[str]:
    """f5-tts's text tokens of `text` (`convert`: its `convert_char_to_pinyin`), each reading one
    pinyin token in place of the character it replaced."""
    tokens: list[str] = []
    done = 0
    for m in READING.finditer(text):
        if m.start() > done:
            tokens.extend(convert([text[done:m.start()]])[0])
        if tokens and tokens[-1] != " ":
            tokens.append(" ")
        tokens.append(f"{m[1]}{_TONES.index(m[2]) + 1}")
        done = m.end()
    if done < len(text) or not tokens:
        tokens.extend(convert([text[done:]])[0])
    return tokens

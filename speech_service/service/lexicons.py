"""Pronunciation lexicons: checked, stored, read as PLS and loaded for speech (docs/ARCHITECTURE.md,
"Lexicons"). Every method blocks on the store: the routes call them in a thread."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence

from speech_service.config import LimitSettings
from speech_service.errors import BadRequest, PayloadTooLarge
from speech_service.storage.lexicons import LexiconStore, StoredLexicon, check_name
from speech_service.storage.objects import ObjectStore
from speech_service.text import pls
from speech_service.text.chinese import PINYIN
from speech_service.text.lexicon import Lexicon, Rule, is_han


def _invalid(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_lexicon", param=param)


def _clean(text: str, param: str) -> str:
    """`text` with its whitespace runs made one space and its ends trimmed; 400 for a character no
    document can carry (a control character, a lone surrogate, private use, a non-character)."""
    text = " ".join(text.split())
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cs", "Co") or c in "\ufffe\uffff":
            raise _invalid(f"{param} holds the character U+{ord(c):04X}, which a lexicon may not.", param)
    return unicodedata.normalize("NFC", text)


def check_rule(rule: Rule, at: int, limits: LimitSettings) -> Rule:
    """`rule` as stored (whitespace and Unicode normalized), or a 400 naming the field at fault."""
    where = f"rules[{at}]"
    grapheme = _clean(rule.grapheme, f"{where}.grapheme")
    if not grapheme or len(grapheme) > limits.max_grapheme_chars:
        raise _invalid(f"{where}.grapheme must be 1-{limits.max_grapheme_chars} characters "
                       f"(limits.max_grapheme_chars), not {len(grapheme)}.", f"{where}.grapheme")
    if (rule.alias is None) == (rule.pinyin is None):
        raise _invalid(f"{where} ({grapheme!r}) needs one of alias (a respelling) or pinyin.", where)
    if rule.alias is not None:
        alias = _clean(rule.alias, f"{where}.alias")
        if not alias or len(alias) > limits.max_alias_chars:
            raise _invalid(f"{where}.alias must be 1-{limits.max_alias_chars} characters (limits.max_alias_chars).",
                           f"{where}.alias")
        return Rule(grapheme, alias=alias, case_sensitive=rule.case_sensitive)
    syllables = rule.pinyin.lower().split()
    bad = next((s for s in syllables if not PINYIN.fullmatch(s)), None)
    if bad is not None:
        raise _invalid(f"{where}.pinyin: {bad!r} is not one pinyin syllable with its tone number (1-5), e.g. hang2.",
                       f"{where}.pinyin")
    characters = sum(map(is_han, grapheme))
    if characters == 0 or len(syllables) != characters:
        raise _invalid(f"{where}.pinyin has {len(syllables)} syllables for the {characters} Chinese characters of "
                       f"{grapheme!r}: write one syllable with its tone per character, e.g. 'chong2 qing4' for 重庆.",
                       f"{where}.pinyin")
    return Rule(grapheme, pinyin=" ".join(syllables), case_sensitive=rule.case_sensitive)


def check_lexicon(lexicon: Lexicon, limits: LimitSettings) -> Lexicon:
    check_name(lexicon.name)
    if len(lexicon.rules) > limits.max_lexicon_rules:
        raise PayloadTooLarge(f"The lexicon has {len(lexicon.rules)} rules, over the limit of "
                              f"{limits.max_lexicon_rules} (limits.max_lexicon_rules).", code="lexicon_too_large",
                              param="rules")
    language = (lexicon.language or "").strip() or None
    if language is not None and not _language_tag(language):
        raise _invalid(f"language must be a BCP 47 tag such as 'en' or 'zh-CN', not {language!r}.", "language")
    return Lexicon(lexicon.name, tuple(check_rule(rule, i, limits) for i, rule in enumerate(lexicon.rules)), language)


def _language_tag(tag: str) -> bool:
    first, *rest = tag.split("-")
    return (2 <= len(first) <= 8 and first.isascii() and first.isalpha() and len(tag) <= 35
            and all(1 <= len(part) <= 8 and part.isascii() and part.isalnum() for part in rest))


class LexiconService:
    def __init__(self, objects: ObjectStore, limits: LimitSettings):
        self.store = LexiconStore(objects)
        self.limits = limits

    def create(self, lexicon: Lexicon) -> StoredLexicon:
        return self.store.create(check_lexicon(lexicon, self.limits))

    def replace(self, lexicon: Lexicon, if_match: Collection[str] | None = None) -> StoredLexicon:
        return self.store.replace(check_lexicon(lexicon, self.limits), if_match=if_match)

    def get(self, name: str) -> StoredLexicon:
        return self.store.get(check_name(name))

    def list(self) -> list[StoredLexicon]:
        return self.store.list()

    def delete(self, name: str, if_match: Collection[str] | None = None) -> None:
        self.store.delete(check_name(name), if_match=if_match)

    def from_pls(self, data: bytes, name: str) -> Lexicon:
        """The lexicon a PLS document describes (not yet checked: `create` and `replace` check it)."""
        return pls.read(data, name, self.limits.max_lexicon_bytes)

    def pls(self, name: str) -> bytes:
        return pls.write(self.get(name).lexicon)

    def load(self, names: Sequence[str] | None) -> list[Lexicon]:
        """The lexicons `names` name, in that order, for a speech request; 400 naming every unknown one."""
        names = names or ()
        found = {name: self.store.find(check_name(name)) for name in dict.fromkeys(names)}
        missing = [name for name, stored in found.items() if stored is None]
        if missing:
            raise BadRequest(f"No lexicon named {', '.join(repr(n) for n in missing)}; GET /v1/lexicons lists them.",
                             code="lexicon_not_found", param="lexicons")
        return [found[name].lexicon for name in names]

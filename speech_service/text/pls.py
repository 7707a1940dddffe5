"""W3C Pronunciation Lexicon Specification (PLS) 1.0 documents, read and written
(docs/ARCHITECTURE.md, "Lexicons").

F5 reads letters, and for Chinese pinyin, so a lexeme's pronunciation is an `<alias>` (a respelling) or
a `<phoneme>` in pinyin with tone numbers (alphabet "x-pinyin", or "pinyin"), one syllable per Chinese
character of the grapheme. Each `<grapheme>` of a lexeme is a rule with the lexeme's pronunciation: its
`prefer="true"` one that F5 can read, else the first such. A rule is case-sensitive where its lexeme's
`role` says "case-sensitive" (PLS has no case rule; matching ignores case otherwise). A document is
parsed by defusedxml with no DTD, entity or external reference, within a bound on its bytes and depth.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe
from defusedxml import DefusedXmlException

from speech_service.errors import BadRequest, PayloadTooLarge
from speech_service.text.lexicon import Lexicon, Rule

NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
PINYIN_ALPHABETS = ("x-pinyin", "pinyin")
CASE_SENSITIVE_ROLE = "case-sensitive"
UNDETERMINED = "und"  # xml:lang of a lexicon of no stated language
MAX_DEPTH = 8  # lexicon > lexeme > grapheme is 3; PLS has no deeper structure


def invalid(message: str) -> BadRequest:
    return BadRequest(f"The PLS document is not a lexicon we can use: {message}", code="invalid_pls", param="file")


def _phonetic(alphabet: str, grapheme: str) -> BadRequest:
    return BadRequest(
        f"The lexeme for {grapheme!r} has only a <phoneme> in the '{alphabet}' alphabet. F5 reads letters (and "
        "Chinese through pinyin), not phonemes, so it cannot say a phonetic transcription. Write an <alias> with a "
        "respelling instead (<alias>toe-MAH-toe</alias>), or for Chinese characters a <phoneme alphabet=\"x-pinyin\"> "
        "with one syllable and its tone number per character (<phoneme alphabet=\"x-pinyin\">chong2 qing4</phoneme>).",
        code="unsupported_alphabet", param="file")


def _local(element: Element) -> str:
    """An element's name in the PLS namespace (or none, as hand-written files often have), else ''."""
    namespace, _, name = element.tag[1:].partition("}") if element.tag.startswith("{") else ("", "", element.tag)
    return name if namespace in ("", NAMESPACE) else ""


def parse(data: bytes, max_bytes: int) -> Element:
    """The document's root element; 400 for a DTD, an entity, an external reference, malformed XML or
    elements nested deeper than PLS has; 413 over `max_bytes`."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The PLS document is over the {max_bytes} byte limit (limits.max_lexicon_bytes).",
                              code="lexicon_too_large", param="file")
    root, depth = None, 0
    try:
        for event, element in safe.iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True,
                                             forbid_entities=True, forbid_external=True):
            depth += 1 if event == "start" else -1
            if depth > MAX_DEPTH:
                raise invalid(f"elements are nested deeper than {MAX_DEPTH} levels.")
            root = element if root is None else root
    except DefusedXmlException as exc:
        raise invalid(f"DTDs, entities and external references are not allowed ({type(exc).__name__}).") from None
    except ET.ParseError as exc:
        raise invalid(f"it is not well-formed XML ({exc}).") from None
    if root is None:
        raise invalid("it is empty.")
    return root


def read(data: bytes, name: str, max_bytes: int) -> Lexicon:
    """The lexicon a PLS document describes, named `name` (rules as written: the service checks them)."""
    root = parse(data, max_bytes)
    if _local(root) != "lexicon":
        raise invalid(f"its root element is <{root.tag}>, not <lexicon> (namespace {NAMESPACE}).")
    if root.get("version") != "1.0":
        raise invalid(f"<lexicon> has version {root.get('version')!r}; PLS 1.0 documents say version=\"1.0\".")
    alphabet = (root.get("alphabet") or "").strip().lower()
    rules: list[Rule] = []
    for child in root:
        kind = _local(child)
        if kind == "lexeme":
            rules.extend(_lexeme(child, alphabet))
        elif kind not in ("meta", "metadata"):
            raise invalid(f"<{child.tag}> is not an element of <lexicon>; it holds <lexeme>, <meta> and <metadata>.")
    language = (root.get(XML_LANG) or "").strip()
    return Lexicon(name, tuple(rules), None if language.lower() in ("", UNDETERMINED) else language)


def _text(element: Element) -> str:
    if len(element):
        raise invalid(f"<{_local(element)}> holds elements; it holds text only.")
    return element.text or ""


def _lexeme(lexeme: Element, alphabet: str) -> list[Rule]:
    graphemes, pronunciations = [], []
    for child in lexeme:
        kind = _local(child)
        if kind == "grapheme":
            graphemes.append(_text(child))
        elif kind in ("alias", "phoneme"):
            pronunciations.append(child)
        elif kind != "example":
            raise invalid(f"<{child.tag}> is not an element of <lexeme>; it holds <grapheme>, <alias>, <phoneme> "
                          "and <example>.")
    if not graphemes:
        raise invalid("a <lexeme> has no <grapheme>.")
    usable, phonetic = [], None
    for element in pronunciations:
        own = (element.get("alphabet") or alphabet).strip().lower()
        if _local(element) == "alias" or own in PINYIN_ALPHABETS:
            usable.append(element)
        else:
            phonetic = phonetic or own or "(none)"
    if not usable:
        if phonetic:
            raise _phonetic(phonetic, graphemes[0])
        raise invalid(f"the lexeme for {graphemes[0]!r} has no <alias> or <phoneme>.")
    chosen = next((e for e in usable if e.get("prefer") == "true"), usable[0])
    case_sensitive = CASE_SENSITIVE_ROLE in (lexeme.get("role") or "").split()
    said = _text(chosen)
    alias, pinyin = (said, None) if _local(chosen) == "alias" else (None, said)
    return [Rule(grapheme, alias=alias, pinyin=pinyin, case_sensitive=case_sensitive) for grapheme in graphemes]


def write(lexicon: Lexicon) -> bytes:
    """`lexicon` as a PLS 1.0 document (UTF-8): a lexeme per rule; `read` gives the same lexicon back."""
    root = ET.Element("lexicon", {"version": "1.0", "xmlns": NAMESPACE, "alphabet": PINYIN_ALPHABETS[0],
                                  "xml:lang": lexicon.language or UNDETERMINED})
    for rule in lexicon.rules:
        lexeme = ET.SubElement(root, "lexeme", {"role": CASE_SENSITIVE_ROLE} if rule.case_sensitive else {})
        ET.SubElement(lexeme, "grapheme").text = rule.grapheme
        if rule.alias is not None:
            ET.SubElement(lexeme, "alias").text = rule.alias
        else:
            ET.SubElement(lexeme, "phoneme").text = rule.pinyin
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"

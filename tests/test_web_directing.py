"""The web page directing speech: lexicons managed on the page and applied in a dry run, a voice's
styles and lexicons, and an SSML dialogue spoken with captions naming each speaker. Headless Chromium
against the real app served over HTTP with the in-process tiny F5 model (see tests/test_web.py)."""

from __future__ import annotations

import base64

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conftest import SHORT_TEXT
from served import served_app
from test_web import browser, click, fill, player_state, shown_error, text, until, visible  # noqa: F401

pytestmark = pytest.mark.browser

PLS = ('<?xml version="1.0" encoding="UTF-8"?>\n<lexicon version="1.0" '
       'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="x-pinyin" xml:lang="en">'
       "<lexeme><grapheme>W3C</grapheme><alias>World Wide Web Consortium</alias></lexeme></lexicon>")


def add_voice(url: str, name: str, wav, headers=None) -> None:
    with wav.open("rb") as f:
        assert httpx.post(f"{url}/v1/voices", data={"name": name, "ref_text": SHORT_TEXT}, headers=headers,
                          files={"file": (f"{name}.wav", f)}, timeout=60).status_code == 201


def lexicon_items(driver) -> list[str]:
    """The lexicons listed, read in one call (the list is rebuilt while a test polls it)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#lexicon-list > li')].map((li) => li.dataset.name)")


def dry_run_rows(driver) -> list[list[str]]:
    """The dry run's table: voice, style, speed, pause, text read per segment."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#dry-run-table tbody tr')]"
        ".map((tr) => [...tr.cells].slice(1).map((td) => td.textContent))")


def dry_run(driver, said: str) -> list[list[str]]:
    """The rows of a dry run of `said`, once the table shows one of it (the last word read changes)."""
    driver.execute_script("document.querySelector('#dry-run-table tbody').replaceChildren()")
    fill(driver, "text", said)
    click(driver, "dry-run")
    until(driver, lambda: dry_run_rows(driver) or visible(driver, "error"), 60)
    assert not visible(driver, "error"), text(driver, "error-message")
    return dry_run_rows(driver)


def style_options(driver) -> list[str]:
    return driver.execute_script("return [...document.getElementById('style').options].map((o) => o.value)")


def test_page_makes_imports_exports_and_applies_lexicons(browser, backends, short_wav, tmp_path):  # noqa: F811
    with served_app(tmp_path / "store", backends) as url:
        api = httpx.Client(base_url=url, timeout=60)
        add_voice(url, "alice", short_wav)
        browser.get(url)
        until(browser, lambda: text(browser, "detail-name") == "alice", 30)
        assert "No lexicons yet" in text(browser, "lexicons-state")

        # A rule makes a new lexicon; a second rule, in pinyin, is added to it.
        fill(browser, "rule-lexicon", "names")
        fill(browser, "rule-grapheme", "Nguyen")
        fill(browser, "rule-reading", "win")
        click(browser, "add-rule")
        until(browser, lambda: lexicon_items(browser) == ["names"], 30)
        fill(browser, "rule-lexicon", "names")
        fill(browser, "rule-grapheme", "银行")
        Select(browser.find_element(By.ID, "rule-kind")).select_by_value("pinyin")
        fill(browser, "rule-reading", "yin2 hang2")
        click(browser, "add-rule")
        until(browser, lambda: "2 rules" in text(browser, "lexicon-list"), 30)
        assert not visible(browser, "error")
        assert api.get("/v1/lexicons/names").json()["rules"] == [
            {"grapheme": "Nguyen", "alias": "win", "pinyin": None, "case_sensitive": False},
            {"grapheme": "银行", "alias": None, "pinyin": "yin2 hang2", "case_sensitive": False}]
        browser.find_element(By.CSS_SELECTOR, "#lexicon-list li[data-name=names] summary").click()
        until(browser, lambda: "Nguyen → win" in text(browser, "lexicon-list"), 30)

        # The dry run reads the name as written, then, with the lexicon chosen, its alias and pinyin.
        [[voice, style, _, _, read]] = dry_run(browser, "Mister Nguyen is here.")
        assert (voice, style) == ("alice", "default") and "Nguyen" in read
        click(browser, "speak-lexicon-names")
        [[*_, read]] = dry_run(browser, "Mister Nguyen went to the 银行.")
        assert "win" in read and "Nguyen" not in read and "hang2" in read

        # Named on the voice, the lexicon applies without the request naming it.
        click(browser, "speak-lexicon-names")
        click(browser, "voice-lexicon-names")
        click(browser, "save-lexicons")
        until(browser, lambda: "Lexicons saved." in text(browser, "detail-warnings"), 30)
        assert api.get("/v1/voices/alice").json()["lexicons"] == ["names"]
        [[*_, read]] = dry_run(browser, "Nguyen again.")
        assert "win" in read and "Nguyen" not in read

        # A PLS file imported under a name, exported again as the same rule.
        pls_file = tmp_path / "acronyms.pls"
        pls_file.write_text(PLS)
        fill(browser, "import-name", "acronyms")
        browser.find_element(By.ID, "import-file").send_keys(str(pls_file))
        click(browser, "import-lexicon")
        until(browser, lambda: lexicon_items(browser) == ["acronyms", "names"], 30)
        assert api.get("/v1/lexicons/acronyms").json()["rules"] == [
            {"grapheme": "W3C", "alias": "World Wide Web Consortium", "pinyin": None, "case_sensitive": False}]
        click(browser, "export-lexicon-acronyms")
        until(browser, lambda: visible(browser, "lexicon-download"), 30)
        exported = base64.b64decode(browser.execute_async_script(
            "const done = arguments[0];"
            "fetch(document.getElementById('lexicon-download').href).then(r => r.blob()).then(b => {"
            "  const reader = new FileReader(); reader.onload = () => done(reader.result.split(',')[1]);"
            "  reader.readAsDataURL(b); });"))
        assert exported == api.get("/v1/lexicons/acronyms", params={"format": "pls"}).content
        assert b"<grapheme>W3C</grapheme>" in exported and b"World Wide Web Consortium" in exported
        assert browser.find_element(By.ID, "lexicon-download").get_attribute("download") == "acronyms.pls"

        # Deleted on the page, it is gone from the service and from the Speak form's choices.
        click(browser, "delete-lexicon-acronyms")
        browser.switch_to.alert.accept()
        until(browser, lambda: lexicon_items(browser) == ["names"], 30)
        assert api.get("/v1/lexicons/acronyms").status_code == 404
        assert not browser.find_elements(By.ID, "speak-lexicon-acronyms") and not visible(browser, "lexicon-download")

        # The API's own words for a bad rule.
        fill(browser, "rule-lexicon", "not a name!")
        fill(browser, "rule-grapheme", "x")
        Select(browser.find_element(By.ID, "rule-kind")).select_by_value("alias")
        fill(browser, "rule-reading", "y")
        click(browser, "add-rule")
        assert shown_error(browser)[0] == "invalid_lexicon_name"
        browser.save_screenshot(str(tmp_path / "web-lexicons.png"))


def test_page_adds_a_style_and_speaks_an_ssml_dialogue_with_speakers(browser, backends, short_wav,  # noqa: F811
                                                                     tmp_path):
    with served_app(tmp_path / "store", backends) as url:
        api = httpx.Client(base_url=url, timeout=60)
        add_voice(url, "alice", short_wav)
        add_voice(url, "bob", short_wav)
        browser.get(url)
        until(browser, lambda: text(browser, "detail-name") == "alice", 30)
        assert style_options(browser) == [""]  # the voice's own clip only

        # A take added from a file is a style of the voice and a choice in the Speak form.
        fill(browser, "style-name", "excited")
        browser.find_element(By.ID, "style-file").send_keys(str(short_wav))
        fill(browser, "style-ref-text", SHORT_TEXT)
        click(browser, "add-style")
        until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#detail-styles tr[data-style=excited]"), 60)
        assert not visible(browser, "error")
        assert "excited" in api.get("/v1/voices/alice").json()["styles"]
        assert style_options(browser) == ["", "excited"]
        click(browser, "play-style-excited")
        until(browser, lambda: browser.execute_script(
            "const a = document.getElementById('style-audio'); return isFinite(a.duration) && a.duration > 1"), 30)
        Select(browser.find_element(By.ID, "style")).select_by_value("excited")
        [[voice, style, *_]] = dry_run(browser, "Good morning.")
        assert (voice, style) == ("alice", "excited")
        Select(browser.find_element(By.ID, "style")).select_by_value("")

        # An SSML dialogue: the dry run shows each speaker's turn, the pause between them, and no markup.
        dialogue = '<voice name="alice">Hello Bob.</voice> <voice name="bob">Hi Alice.</voice>'
        click(browser, "ssml-on")
        assert visible(browser, "ssml-hint")
        rows = dry_run(browser, dialogue)
        assert [row[0] for row in rows] == ["alice", "bob"] and rows[0][3] != "cross-fade"
        assert [row[4] for row in rows] == ["Hello Bob.", "Hi Alice."]

        # Spoken with captions: one audio, each turn's words under its speaker's name.
        fill(browser, "seed", "3")
        click(browser, "captions-on")
        click(browser, "speak")
        until(browser, lambda: text(browser, "speak-state").startswith("Done") or visible(browser, "error"))
        assert not visible(browser, "error"), text(browser, "error-message")
        until(browser, lambda: player_state(browser)["duration"] > 0.5, 30)
        assert player_state(browser)["error"] is None
        speakers = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#captions .speaker")]
        words = [w.text for w in browser.find_elements(By.CSS_SELECTOR, "#captions .word")]
        assert speakers == ["alice", "bob"] and words == ["Hello", "Bob", "Hi", "Alice"]
        assert "<" not in text(browser, "captions")
        browser.save_screenshot(str(tmp_path / "web-dialogue.png"))

        # The take deleted on the page leaves the voice and the Speak form's choices.
        click(browser, "delete-style-excited")
        browser.switch_to.alert.accept()
        until(browser, lambda: style_options(browser) == [""], 30)
        assert api.get("/v1/voices/alice").json()["styles"] == {}


def test_a_speak_key_uses_lexicons_and_styles_but_cannot_change_them(browser, backends, short_wav,  # noqa: F811
                                                                      tmp_path):
    keys = [{"name": "ops", "key": "sk-web-admin"}, {"name": "app", "key": "sk-web-speak", "scopes": ["speak"]}]
    admin = {"Authorization": "Bearer sk-web-admin"}
    with served_app(tmp_path / "store", backends, api_keys=keys) as url:
        add_voice(url, "erin", short_wav, admin)
        with short_wav.open("rb") as f:
            assert httpx.post(f"{url}/v1/voices/erin/styles", data={"style": "calm", "ref_text": SHORT_TEXT},
                              files={"file": ("calm.wav", f)}, headers=admin, timeout=60).status_code == 201
        assert httpx.post(f"{url}/v1/lexicons", json={"name": "names", "rules": [{"grapheme": "a", "alias": "b"}]},
                          headers=admin).status_code == 201
        browser.get(url)
        until(browser, lambda: visible(browser, "key-form"), 30)
        fill(browser, "api-key", "sk-web-speak")
        browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        until(browser, lambda: text(browser, "detail-name") == "erin", 30)
        assert style_options(browser) == ["", "calm"] and visible(browser, "speak-lexicon-names")
        assert visible(browser, "export-lexicon-names")
        for control in ("rule-form", "lexicon-import-form", "style-form", "save-lexicons", "delete-lexicon-names"):
            assert not visible(browser, control), control
        assert not browser.find_element(By.ID, "voice-lexicon-names").is_enabled()
        assert not browser.find_elements(By.ID, "play-style-calm")
        assert not visible(browser, "error")

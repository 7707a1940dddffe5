"""The web page, driven in Debian's headless Chromium against the real app served over HTTP with the
in-process tiny F5 model and the real Whisper."""

from __future__ import annotations

import base64
import re
import shutil
import time

import httpx
import pytest
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import SHORT_TEXT, convert
from served import served_app, without_request_id

pytestmark = pytest.mark.browser

SLOW = 180  # seconds: two shared cores run Whisper and the model for the page


@pytest.fixture
def browser(short_wav):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "needs Debian's chromium and chromium-driver (`make setup` installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--autoplay-policy=no-user-gesture-required",
                # The microphone is a file of espeak-ng speech, granted without a prompt.
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={short_wav}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def until(driver, condition, timeout=SLOW):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition())


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def visible(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def fill(driver, element_id: str, value: str) -> None:
    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(value)


def click(driver, element_id: str) -> None:
    driver.find_element(By.ID, element_id).click()


def shown_error(driver) -> tuple[str, str]:
    until(driver, lambda: visible(driver, "error"))
    return text(driver, "error-code"), text(driver, "error-message")


def player_state(driver) -> dict:
    return driver.execute_script(
        "const a = document.getElementById('player');"
        "return {duration: isFinite(a.duration) ? a.duration : -1, readyState: a.readyState,"
        "        error: a.error && a.error.message, src: a.currentSrc};")


def downloaded_audio(driver) -> bytes:
    """The bytes behind the page's download link, read inside the page."""
    encoded = driver.execute_async_script(
        "const done = arguments[0];"
        "fetch(document.getElementById('download').href).then(r => r.blob()).then(b => {"
        "  const reader = new FileReader(); reader.onload = () => done(reader.result.split(',')[1]);"
        "  reader.readAsDataURL(b); });")
    return base64.b64decode(encoded)


def test_page_creates_a_voice_speaks_and_shows_api_errors(browser, backends, short_wav, tmp_path):
    with served_app(tmp_path / "store", backends) as url:
        api = httpx.Client(base_url=url, timeout=120)
        browser.get(url)
        until(browser, lambda: "No voices yet" in text(browser, "service-state"), 30)
        assert not visible(browser, "key-form")  # no keys configured: no key field

        # Create a voice from a file; no transcript given, so the service transcribes it.
        fill(browser, "new-name", "alice")
        browser.find_element(By.ID, "new-file").send_keys(str(short_wav))
        click(browser, "create")
        until(browser, lambda: visible(browser, "voice-detail") and text(browser, "detail-name") == "alice")
        assert not visible(browser, "error")
        assert "asr" in text(browser, "detail-source") and text(browser, "detail-clipped") == "no"
        transcript = browser.find_element(By.ID, "detail-ref-text").get_attribute("value")
        assert transcript == api.get("/v1/voices/alice").json()["ref_text"] and "fox" in transcript.lower()

        # A fix made on the page after the voice changed behind its back is refused (the page sends
        # the ETag it showed), and the page then shows the voice as it is now.
        replaced = "The quick brown fox jumps over a lazy dog."
        assert api.post("/v1/voices", data={"name": "alice", "ref_text": replaced, "overwrite": "true"},
                        files={"file": ("a.wav", short_wav.read_bytes())}).status_code == 201
        fill(browser, "detail-ref-text", SHORT_TEXT)
        click(browser, "save-text")
        assert shown_error(browser)[0] == "precondition_failed"
        until(browser, lambda: browser.find_element(By.ID, "detail-ref-text").get_attribute("value") == replaced)
        assert api.get("/v1/voices/alice").json()["ref_text"] == replaced

        # Correct the transcript by hand.
        fill(browser, "detail-ref-text", SHORT_TEXT)
        click(browser, "save-text")
        until(browser, lambda: "Transcript saved." in text(browser, "detail-warnings"))
        voice = api.get("/v1/voices/alice").json()
        assert voice["ref_text"] == SHORT_TEXT and voice["ref_text_source"] == "user"

        # Record the speaker's consent (attested): the voice shows it, and the API has its record.
        assert text(browser, "detail-consent") == "none recorded"
        fill(browser, "consent-given-by", "Alice Example")
        click(browser, "attest-consent")
        until(browser, lambda: text(browser, "detail-consent").startswith("attested (cns_"))
        [consent] = api.get("/v1/voices/alice/consent").json()["records"]
        assert consent["given_by"] == "Alice Example" and consent["id"] in text(browser, "detail-consent")

        # Speak: mp3 streams into the audio element; the download is the same audio, and it decodes.
        fill(browser, "text", "Hello from the web page. It streams while it speaks.")
        fill(browser, "seed", "7")
        click(browser, "speak")
        until(browser, lambda: text(browser, "speak-state").startswith("Done"))
        until(browser, lambda: player_state(browser)["duration"] > 0, 30)
        state = player_state(browser)
        assert state["readyState"] >= 1 and state["error"] is None, state
        mp3 = tmp_path / "download.mp3"
        mp3.write_bytes(downloaded_audio(browser))
        seconds = len(sf.read(convert(mp3, tmp_path / "download.wav"))[0]) / 24000
        assert seconds == pytest.approx(state["duration"], abs=0.15) and seconds > 0.5
        # Its badge: the stream's sidecar verified against the bytes the page received. The test
        # service signs with a throwaway development certificate: intact, not trusted.
        until(browser, lambda: visible(browser, "provenance"))
        assert text(browser, "provenance").startswith("Content Credentials: Valid (sidecar), AI-generated speech "
                                                      "in the voice alice")
        browser.save_screenshot(str(tmp_path / "web-page.png"))

        # The API's own words for an error: the voice was deleted behind the page's back.
        expected = api.post("/v1/audio/speech", json={"voice": "ghost", "input": "x"}).json()["error"]
        assert api.delete("/v1/voices/alice").status_code == 204
        click(browser, "speak")
        code, message = shown_error(browser)
        assert code == expected["code"] == "voice_not_found"
        assert without_request_id(message) == without_request_id(expected["message"]).replace("ghost", "alice")
        until(browser, lambda: "No voices yet" in text(browser, "service-state"), 30)  # the list is refreshed
        assert text(browser, "error-code") == "voice_not_found"  # and the error stays
        browser.save_screenshot(str(tmp_path / "web-page-error.png"))

        # An invalid name is refused with the API's message.
        fill(browser, "new-name", "not a name!")
        browser.find_element(By.ID, "new-file").send_keys(str(short_wav))
        click(browser, "create")
        until(browser, lambda: text(browser, "error-code") == "invalid_voice_name")
        refused = api.post("/v1/voices", data={"name": "not a name!"},
                           files={"file": ("a.wav", short_wav.read_bytes())}).json()["error"]
        assert without_request_id(text(browser, "error-message")) == without_request_id(refused["message"])
    assert (tmp_path / "web-page.png").stat().st_size > 10_000


def test_page_records_from_the_microphone_and_deletes_a_voice(browser, backends, tmp_path):
    with served_app(tmp_path / "store", backends) as url:
        browser.get(url)
        until(browser, lambda: "No voices yet" in text(browser, "service-state"), 30)
        click(browser, "record")
        until(browser, lambda: text(browser, "record-state") == "Recording…", 30)
        time.sleep(3.5)
        click(browser, "record")
        until(browser, lambda: text(browser, "record-state").startswith("Recorded"), 30)
        fill(browser, "new-name", "mic")
        click(browser, "create")
        until(browser, lambda: visible(browser, "voice-detail") and text(browser, "detail-name") == "mic")
        voice = httpx.get(f"{url}/v1/voices/mic").json()
        assert voice["duration_s"] > 2 and voice["ref_text_source"] == "asr" and voice["ref_text"]

        click(browser, "delete-voice")
        browser.switch_to.alert.accept()
        until(browser, lambda: "No voices yet" in text(browser, "service-state"))
        assert httpx.get(f"{url}/v1/voices/mic").status_code == 404


def test_page_asks_for_the_api_key_when_keys_are_configured(browser, backends, tmp_path):
    with served_app(tmp_path / "store", backends, api_keys=["sk-web-test"]) as url:
        assert httpx.get(url).status_code == 200  # the page itself is public
        browser.get(url)
        code, _ = shown_error(browser)
        assert code == "invalid_api_key" and visible(browser, "key-form")
        fill(browser, "api-key", "sk-web-test")
        browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        until(browser, lambda: "No voices yet" in text(browser, "service-state"), 30)
        assert not visible(browser, "error")
        assert browser.execute_script("return localStorage.getItem('f5voice.apiKey')") == "sk-web-test"


def test_page_runs_a_long_text_as_a_job_with_a_progress_bar(browser, backends, short_wav, tmp_path):
    with served_app(tmp_path / "store", backends) as url:
        with short_wav.open("rb") as f:
            assert httpx.post(f"{url}/v1/voices", data={"name": "dora", "ref_text": SHORT_TEXT},
                              files={"file": ("dora.wav", f)}, timeout=60).status_code == 201
        browser.get(url)
        until(browser, lambda: visible(browser, "submit-job") and text(browser, "detail-name") == "dora", 30)
        fill(browser, "text", "A job for the page. It has four sentences. Each is a segment. The bar fills up.")
        browser.find_element(By.CSS_SELECTOR, "#format option[value=wav]").click()
        click(browser, "submit-job")
        until(browser, lambda: "succeeded" in text(browser, "job-state"))
        done, total = re.search(r"(\d+)/(\d+) segments", text(browser, "job-state")).groups()
        assert done == total != "0"
        bar = browser.find_element(By.ID, "job-progress")
        assert bar.is_displayed() and bar.size["width"] > 300 and bar.get_attribute("value") == "1"
        until(browser, lambda: player_state(browser)["duration"] > 2, 30)
        assert player_state(browser)["error"] is None and not visible(browser, "error")
        browser.save_screenshot(str(tmp_path / "web-page-job.png"))


def test_a_speak_key_sees_no_controls_it_cannot_use(browser, backends, short_wav, tmp_path):
    keys = [{"name": "ops", "key": "sk-web-admin"}, {"name": "app", "key": "sk-web-speak", "scopes": ["speak"]}]
    with served_app(tmp_path / "store", backends, api_keys=keys) as url:
        with short_wav.open("rb") as f:
            assert httpx.post(f"{url}/v1/voices", data={"name": "erin", "ref_text": SHORT_TEXT},
                              files={"file": ("erin.wav", f)}, headers={"Authorization": "Bearer sk-web-admin"},
                              timeout=60).status_code == 201
        browser.get(url)
        until(browser, lambda: visible(browser, "key-form"), 30)
        fill(browser, "api-key", "sk-web-speak")
        browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        until(browser, lambda: text(browser, "detail-name") == "erin", 30)
        assert visible(browser, "scope-note") and visible(browser, "speak")
        for control in ("create-form", "delete-voice", "save-text", "reference-audio", "consent-form"):
            assert not visible(browser, control), control
        assert not visible(browser, "error")
        fill(browser, "text", "Hello there.")
        click(browser, "speak")  # speaking is what this key is for
        until(browser, lambda: player_state(browser)["duration"] > 0.5, 60)
        assert not visible(browser, "error")


def test_page_shows_captions_under_the_player_and_the_quality_check(browser, backends, short_wav, tmp_path):
    said = "Dr. Smith paid $5.20 in the 1990s."
    with served_app(tmp_path / "store", backends) as url:
        with short_wav.open("rb") as f:
            assert httpx.post(f"{url}/v1/voices", data={"name": "alice", "ref_text": SHORT_TEXT},
                              files={"file": ("alice.wav", f)}, timeout=60).status_code == 201
        browser.get(url)
        until(browser, lambda: text(browser, "detail-name") == "alice", 30)
        fill(browser, "text", said)
        fill(browser, "seed", "5")
        click(browser, "captions-on")
        click(browser, "quality-on")
        click(browser, "speak")
        until(browser, lambda: text(browser, "speak-state").startswith("Done"))
        assert not visible(browser, "error")
        words = [w.text for w in browser.find_elements(By.CSS_SELECTOR, "#captions .word")]
        assert words == ["Dr. Smith", "paid", "$5.20", "in", "the", "1990s"]
        assert text(browser, "captions") == said  # the caller's own text, punctuation and all
        # The tiny model's noise never passes: the page says so, with the service's warning.
        assert "Quality check failed" in text(browser, "quality") and "Segment 0" in text(browser, "quality")
        # A whole mp3 (the default format) carries its credentials inside.
        until(browser, lambda: visible(browser, "provenance"))
        assert text(browser, "provenance").startswith("Content Credentials: Valid (in the file)")
        # While the audio plays, the word being spoken is highlighted.
        until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#captions .word.current"), 30)
        assert player_state(browser)["error"] is None

"""The page and `f5voice` against config/serve.yaml deployed on a local Ray cluster (the ingress
serves the page's files from the installed package), with the tiny offline models."""

from __future__ import annotations

import httpx
import pytest
import soundfile as sf

from conftest import SHORT_TEXT, convert, serve_config, start_serve, stop_serve, use_tiny_models
from test_cli import f5voice
from test_web import browser, click, fill, player_state, text, until  # noqa: F401 (browser is a fixture)

pytestmark = [pytest.mark.ray, pytest.mark.browser]


@pytest.fixture(scope="module")
def url(offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("serve-store"))
    use_tiny_models(config, offline_models, cpu_threads=2)
    yield start_serve(config)
    stop_serve()


def test_the_ray_ingress_serves_the_page_and_the_cli_and_page_use_it(url, browser, short_wav, tmp_path):  # noqa: F811
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>F5 voice</title>" in page.text
    script = httpx.get(f"{url}/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    missing = httpx.get(f"{url}/web/missing.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    added = f5voice("voices", "add", "erin", str(short_wav), "--ref-text", SHORT_TEXT, url=url)
    assert added.returncode == 0, added.stderr
    out = tmp_path / "erin.mp3"
    said = f5voice("say", "Spoken through Ray Serve.", "-v", "erin", "-o", str(out), url=url)
    assert said.returncode == 0, said.stderr
    assert len(sf.read(convert(out, tmp_path / "erin.wav"))[0]) > 0.5 * 24000

    browser.get(url)
    until(browser, lambda: text(browser, "detail-name") == "erin", 60)
    fill(browser, "text", "And through the page.")
    click(browser, "speak")
    until(browser, lambda: text(browser, "speak-state").startswith("Done"), 300)
    until(browser, lambda: player_state(browser)["duration"] > 0, 30)
    browser.save_screenshot(str(tmp_path / "web-page-ray.png"))
    assert f5voice("voices", "rm", "erin", url=url).returncode == 0

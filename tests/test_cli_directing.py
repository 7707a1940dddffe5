"""`f5voice say` directing speech: SSML (its root element added when left out), styles, lexicons, and
the dry run that prints what the model would read. Run as its own process, as users run it."""

from __future__ import annotations

import pytest
import soundfile as sf

from conftest import SHORT_TEXT
from served import served_app
from test_cli import f5voice

pytestmark = pytest.mark.slow  # the client runs as its own process


@pytest.fixture(scope="module")
def url(backends, tmp_path_factory, short_wav):
    with served_app(tmp_path_factory.mktemp("cli-directing"), backends) as base_url:
        added = f5voice("voices", "add", "ann", str(short_wav), "--ref-text", SHORT_TEXT, url=base_url)
        assert added.returncode == 0, added.stderr
        yield base_url


def test_say_ssml_without_its_root_element_pauses_where_the_break_is(url, tmp_path):
    common = ("--voice", "ann", "--seed", "3", "--nfe-step", "2")
    plain = f5voice("say", "Hello there. Goodbye now.", *common, "-o", str(tmp_path / "plain.wav"), url=url)
    paused = f5voice("say", '--ssml', 'Hello there. <break time="1s"/> Goodbye now.', *common,
                     "-o", str(tmp_path / "paused.wav"), url=url)
    assert plain.returncode == 0 and paused.returncode == 0, paused.stderr
    assert sf.info(tmp_path / "paused.wav").duration > sf.info(tmp_path / "plain.wav").duration + 0.8


def test_say_dry_run_prints_each_segments_speaker_pause_and_text_without_speaking(url, tmp_path):
    shown = f5voice("say", "--ssml", "--dry-run", '<s>Dr. Smith paid $5.</s><break time="700ms"/>Bye.',
                    "--voice", "ann", url=url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.decode().splitlines()
    assert lines[0].startswith("[0] ann at 1x, then 0.7 s of silence: ") and "five dollars" in lines[0]
    assert lines[1] == "[1] ann at 1x: Bye."
    refused = f5voice("say", "--ssml", "--dry-run", "<audio src='x'/>", "--voice", "ann", url=url)
    assert refused.returncode == 3 and "audio" in refused.stderr.decode()
    missing = f5voice("say", "Hi.", "--voice", "ann", url=url)
    assert missing.returncode == 2 and "--output" in missing.stderr.decode()

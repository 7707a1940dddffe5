"""The `f5voice` command line, run as a separate process against the real app served over HTTP with
the in-process tiny F5 model and the real Whisper."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from f5voice.client import Api, CliError
from f5voice.commands import voices_rm, voices_set_text

from conftest import REPO, SHORT_TEXT, convert, espeak, free_port
from served import served_app, without_request_id

pytestmark = pytest.mark.slow  # the client runs as its own process, as users run it


@pytest.fixture(scope="module")
def url(backends, tmp_path_factory):
    # `say --check` without retries: a segment is heard once (the retries are test_captions' concern).
    with served_app(tmp_path_factory.mktemp("cli-store"), backends, quality={"retries": 0}) as base_url:
        yield base_url


def f5voice(*args: str, url: str | None = None, stdin: bytes | None = None, env: dict | None = None):
    """Run the command line in its own process; the URL comes from the environment, as users set it."""
    environment = {"PATH": "/usr/bin:/bin", **({"F5VOICE_URL": url} if url else {}), **(env or {})}
    return subprocess.run([sys.executable, "-m", "f5voice", *args], check=False, input=stdin,
                          capture_output=True, env=environment, cwd=REPO, timeout=300)


def test_the_console_script_is_declared_and_runs_where_installed():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\nf5voice = "f5voice\.cli:main"$', pyproject, re.MULTILINE)
    script = Path(sys.executable).parent / "f5voice"
    if script.exists():  # after `make setup`; a checkout run with an older install has none yet
        shown = subprocess.run([str(script), "--help"], capture_output=True, check=False)
        assert shown.returncode == 0 and b"voices" in shown.stdout


def test_add_list_show_say_and_remove(url, short_wav, tmp_path):
    added = f5voice("voices", "add", "bob", str(short_wav), "--language", "en", url=url)
    assert added.returncode == 0, added.stderr
    assert "from:        asr" in added.stdout.decode() and "fox" in added.stdout.decode().lower()

    listed = f5voice("voices", "list", url=url)
    assert listed.returncode == 0 and listed.stdout.decode().splitlines()[1].split()[0] == "bob"
    shown = json.loads(f5voice("voices", "show", "bob", "--json", url=url).stdout)
    assert shown["name"] == "bob" and shown["ref_text_source"] == "asr" and shown["clipped"] is False

    fixed = f5voice("voices", "set-text", "bob", SHORT_TEXT, url=url)
    assert fixed.returncode == 0, fixed.stderr
    assert httpx.get(f"{url}/v1/voices/bob").json()["ref_text"] == SHORT_TEXT

    # Streamed to a file whose format follows its suffix; the file decodes to the spoken length.
    out = tmp_path / "hello.flac"
    said = f5voice("say", "Hello from the command line.", "--voice", "bob", "-o", str(out), "--seed", "5", url=url)
    assert said.returncode == 0, said.stderr
    assert f"wrote {out}" in said.stderr.decode() and "flac" in said.stderr.decode()
    # Timed from the request (the service answers with its first audio), not from the answer: raw pcm's
    # first bytes come with the answer's headers.
    raw = f5voice("say", "Hello from the command line.", "-v", "bob", "-o", str(tmp_path / "hello.pcm"), url=url)
    timing = re.search(r"first audio after ([\d.]+) s, done in ([\d.]+) s", raw.stderr.decode())
    first, done = map(float, timing.groups())
    assert 0.01 <= first <= done
    audio, rate = sf.read(convert(out, tmp_path / "hello.wav"))  # a streamed flac has no length in its header
    assert rate == 24000 and 0.5 < len(audio) / rate < 5

    # To stdout, text from stdin, mp3 by default; the same seed gives the same audio as the API.
    piped = f5voice("say", "-", "-v", "bob", "-o", "-", "--seed", "5", url=url, stdin=b"Hello from the command line.")
    assert piped.returncode == 0, piped.stderr
    direct = httpx.post(f"{url}/v1/audio/speech", timeout=120, json={
        "voice": "bob", "input": "Hello from the command line.", "seed": 5, "response_format": "mp3",
        "stream": True})  # as the CLI asks: a whole mp3 may also carry its length in a header
    mp3 = tmp_path / "piped.mp3"
    mp3.write_bytes(piped.stdout)
    assert len(sf.read(convert(mp3, tmp_path / "piped.wav"))[0]) > 0.5 * 24000
    assert piped.stdout == direct.content

    removed = f5voice("voices", "rm", "bob", url=url)
    assert removed.returncode == 0 and "deleted bob" in removed.stderr.decode()
    assert "no voices" in f5voice("voices", "list", url=url).stderr.decode()


def test_api_errors_are_shown_in_the_apis_words_with_exit_code_3(url, short_wav, tmp_path):
    expected = httpx.get(f"{url}/v1/voices/ghost").json()["error"]
    shown = f5voice("voices", "show", "ghost", url=url)
    assert shown.returncode == 3
    printed = re.fullmatch(r"f5voice: error: (.*) \[voice_not_found, HTTP 404(, request \S+)?\]",
                           shown.stderr.decode().strip())
    assert printed and without_request_id(printed[1]) == without_request_id(expected["message"])

    out = tmp_path / "never.mp3"
    said = f5voice("say", "Hello.", "--voice", "ghost", "-o", str(out), url=url)
    assert said.returncode == 3 and "voice_not_found" in said.stderr.decode() and not out.exists()

    bad_name = f5voice("voices", "add", "no spaces allowed", str(short_wav), url=url)
    assert bad_name.returncode == 3 and "invalid_voice_name" in bad_name.stderr.decode()
    assert f5voice("say", "", "--voice", "ghost", "-o", str(out), url=url).returncode == 3


def test_set_text_and_rm_refuse_when_the_voice_changes_after_they_read_it(url, short_wav, tmp_path):
    """Both send the ETag they read; a clip replaced between that read and their write is a 412
    (exit 3, in the API's words), and the voice stays as the replacement left it. In process: the
    replacement is made between the command's two requests."""
    slower = espeak(SHORT_TEXT, tmp_path / "slower.wav", "-s", "130")  # the same words, another clip
    replacements = [short_wav, slower, short_wav]  # the first creates the voice

    def put_voice(response=None):
        if response is None or response.request.method == "GET":
            replaced = httpx.post(f"{url}/v1/voices", data={"name": "eve", "ref_text": SHORT_TEXT, "overwrite": "true"},
                                  files={"file": replacements.pop(0).read_bytes()}, timeout=60)
            assert replaced.status_code == 201

    put_voice()
    for command, args in ((voices_set_text, {"name": "eve", "text": "A fix for the first clip only."}),
                          (voices_rm, {"names": ["eve"]})):
        api = Api(url, None, 60)
        api.http.event_hooks["response"] = [put_voice]
        with pytest.raises(CliError) as refused:
            command(api, argparse.Namespace(json=False, **args))
        assert refused.value.exit_code == 3 and "[precondition_failed, HTTP 412" in str(refused.value)
        assert "Voice 'eve' changed since it was read" in str(refused.value)
        assert httpx.get(f"{url}/v1/voices/eve").json()["ref_text"] == SHORT_TEXT
    assert f5voice("voices", "rm", "eve", url=url).returncode == 0  # nothing changed in between


def test_usage_and_connection_failures_have_their_own_exit_codes(url, short_wav, tmp_path):
    assert f5voice("voices", url=url).returncode == 2  # no action
    unknown_suffix = f5voice("say", "Hi.", "--voice", "x", "-o", str(tmp_path / "out.xyz"), url=url)
    assert unknown_suffix.returncode == 2 and "--format" in unknown_suffix.stderr.decode()
    missing = f5voice("voices", "add", "x", str(tmp_path / "missing.wav"), url=url)
    assert missing.returncode == 2 and "no such file" in missing.stderr.decode()

    malformed = f5voice("--url", "localhost:8000", "voices", "list")
    assert malformed.returncode == 2 and "--url must be" in malformed.stderr.decode()
    nobody_there = f5voice("voices", "list", url=f"http://127.0.0.1:{free_port()}")
    assert nobody_there.returncode == 4 and "cannot reach" in nobody_there.stderr.decode()


def test_a_stream_broken_off_by_the_service_leaves_no_file_and_exits_4(url, short_wav, tmp_path,
                                                                       dies_after_first_piece):
    assert f5voice("voices", "add", "cut", str(short_wav), "--ref-text", SHORT_TEXT, url=url).returncode == 0
    out = tmp_path / "cut.wav"
    said = f5voice("say", "First sentence here. A second one follows.", "-v", "cut", "-o", str(out), url=url)
    assert said.returncode == 4 and "broke off" in said.stderr.decode() and not out.exists()


def test_the_api_key_comes_from_the_option_or_the_environment(backends, short_wav, tmp_path):
    with served_app(tmp_path / "store", backends, api_keys=["sk-cli-test"]) as keyed:
        refused = f5voice("voices", "list", url=keyed)
        assert refused.returncode == 3 and "invalid_api_key" in refused.stderr.decode()
        assert f5voice("voices", "list", "--api-key", "sk-cli-test", url=keyed).returncode == 0
        assert f5voice("voices", "list", url=keyed, env={"F5VOICE_API_KEY": "sk-cli-test"}).returncode == 0


def test_jobs_submit_status_and_fetch(url, short_wav, tmp_path):
    assert f5voice("voices", "add", "carol", str(short_wav), "--ref-text", SHORT_TEXT, url=url).returncode == 0
    text = "A longer text for a job. It has several sentences. Each one is a segment. The job reports them."

    # Submit and wait: the id on stdout, a progress bar on stderr ending at 100 %, the audio in the file.
    out = tmp_path / "job.wav"
    submitted = f5voice("jobs", "submit", text, "--voice", "carol", "-o", str(out), "--seed", "2", url=url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.decode().strip()
    progress = submitted.stderr.decode().splitlines()
    assert progress[-2].startswith("[####") and "100%" in progress[-2] and "succeeded" in progress[-2]
    audio, rate = sf.read(out)
    assert rate == 24000 and len(audio) / rate > 2

    status = f5voice("jobs", "status", job_id, "--json", url=url)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "succeeded"
    fetched = f5voice("jobs", "fetch", job_id, "-o", "-", url=url)
    assert fetched.returncode == 0 and fetched.stdout == out.read_bytes()

    # Submit without waiting, then wait through `status --wait` and fetch.
    queued = f5voice("jobs", "submit", text, "-v", "carol", "--format", "mp3", url=url)
    second = queued.stdout.decode().strip()
    assert queued.returncode == 0 and second.startswith("job_") and second != job_id
    waited = f5voice("jobs", "status", second, "--wait", url=url)
    assert waited.returncode == 0 and "succeeded" in waited.stdout.decode()
    assert f5voice("jobs", "fetch", second, "-o", str(tmp_path / "second.mp3"), url=url).returncode == 0
    assert len(sf.read(convert(tmp_path / "second.mp3", tmp_path / "second.wav"))[0]) > 2 * 24000
    assert job_id in f5voice("jobs", "list", url=url).stdout.decode()

    unknown = f5voice("jobs", "status", "job_00000000000000000000", url=url)
    assert unknown.returncode == 3 and "HTTP 404" in unknown.stderr.decode()
    # A job that ends cancelled: waiting on it exits 5 and says so.
    long_text = " ".join(f"Sentence number {i} of a long text for a job." for i in range(60))
    job = httpx.post(f"{url}/v1/jobs", json={"voice": "carol", "input": long_text}, timeout=60).json()
    cancelled = httpx.delete(f"{url}/v1/jobs/{job['id']}", timeout=60)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    waited = f5voice("jobs", "status", job["id"], "--wait", url=url)
    assert waited.returncode == 5 and f"job {job['id']} cancelled" in waited.stderr.decode()

    # A job for a voice that is gone is refused at submission, in the API's words.
    assert f5voice("voices", "rm", "carol", url=url).returncode == 0
    refused = f5voice("jobs", "submit", text, "-v", "carol", "--wait", url=url)
    assert refused.returncode == 3 and "[voice_not_found, HTTP 404" in refused.stderr.decode()


def test_say_writes_captions_beside_the_audio_and_says_the_checks_warnings(url, short_wav, tmp_path):
    import srt
    import webvtt

    with short_wav.open("rb") as f:
        assert httpx.post(f"{url}/v1/voices", data={"name": "cap", "ref_text": SHORT_TEXT},
                          files={"file": ("cap.wav", f)}, timeout=60).status_code == 201
    text = "It costs $5.20. Dr. Smith paid."
    out, vtt, subs = tmp_path / "said.wav", tmp_path / "said.vtt", tmp_path / "said.srt"
    said = f5voice("say", text, "-v", "cap", "-o", str(out), "--seed", "3", "--captions", str(vtt), "--check", url=url)
    assert said.returncode == 0, said.stderr
    assert f"wrote {vtt} (5 words)" in said.stderr.decode()
    assert "warning: Segment 0 did not pass the quality check" in said.stderr.decode()  # the tiny model's noise
    cues = [c.text for c in webvtt.read(str(vtt))]
    assert cues == ["It", "costs", "$5.20", "Dr. Smith", "paid"]
    whole = httpx.post(f"{url}/v1/audio/speech", timeout=120, json={
        "voice": "cap", "input": text, "seed": 3, "response_format": "wav", "timestamps": "word"}).json()
    assert cues == [w["text"] for w in whole["words"]]  # the stream's words are the whole response's
    assert len(sf.read(out)[0]) > 0.5 * 24000

    plain = f5voice("say", text, "-v", "cap", "-o", str(tmp_path / "again.wav"), "--seed", "3",
                    "--captions", str(subs), url=url)
    assert plain.returncode == 0 and "warning" not in plain.stderr.decode()
    assert [s.content for s in srt.parse(subs.read_text())] == cues
    wrong = f5voice("say", text, "-v", "cap", "-o", str(tmp_path / "x.wav"), "--captions", str(tmp_path / "x.txt"),
                    url=url)
    assert wrong.returncode == 2 and ".vtt, .srt or .json" in wrong.stderr.decode()


def test_verify_reads_the_credentials_inside_a_file_or_beside_it(url, short_wav, tmp_path):
    with short_wav.open("rb") as f:
        assert httpx.post(f"{url}/v1/voices", data={"name": "signed", "ref_text": SHORT_TEXT},
                          files={"file": ("signed.wav", f)}, timeout=60).status_code == 201
    whole = tmp_path / "whole.flac"
    whole.write_bytes(httpx.post(f"{url}/v1/audio/speech", timeout=120, json={
        "voice": "signed", "input": "Signed and sealed.", "nfe_step": 2, "response_format": "flac"}).content)
    # The served app signs with a throwaway development certificate: intact, but nobody's trust anchor.
    untrusted = f5voice("verify", str(whole), url=url)
    assert untrusted.returncode == 6 and "Valid (embedded)" in untrusted.stdout.decode()
    assert "signed" in untrusted.stdout.decode() and "Content Credentials Valid" in untrusted.stderr.decode()
    assert f5voice("verify", str(whole), "--allow-untrusted", url=url).returncode == 0

    streamed = tmp_path / "streamed.opus"  # a stream: `say` keeps its sidecar as streamed.opus.c2pa
    said = f5voice("say", "Signed and sealed.", "-v", "signed", "-o", str(streamed), "--nfe-step", "2", url=url)
    assert said.returncode == 0, said.stderr
    assert Path(f"{streamed}.c2pa").is_file()
    report = json.loads(f5voice("verify", str(streamed), "--json", "--allow-untrusted", url=url).stdout)
    assert report["validation_state"] == "Valid" and report["embedded"] is False

    data = bytearray(streamed.read_bytes())
    data[len(data) // 2] ^= 1
    streamed.write_bytes(bytes(data))
    broken = f5voice("verify", str(streamed), "--allow-untrusted", url=url)
    assert broken.returncode == 6 and "assertion.dataHash.mismatch" in broken.stdout.decode()
    plain = f5voice("verify", str(short_wav), url=url)
    assert plain.returncode == 6 and "no Content Credentials" in plain.stdout.decode()


def test_consent_attested_or_spoken_and_the_audit(url, short_wav, tmp_path):
    with short_wav.open("rb") as f:
        assert httpx.post(f"{url}/v1/voices", data={"name": "ada", "ref_text": SHORT_TEXT},
                          files={"file": ("ada.wav", f)}, timeout=60).status_code == 201
    attested = f5voice("voices", "consent", "ada", "--given-by", "Ada Lovelace", url=url)
    assert attested.returncode == 0 and "attested consent" in attested.stderr.decode(), attested.stderr

    challenge = f5voice("voices", "challenge", "ada", url=url)
    assert challenge.returncode == 0, challenge.stderr
    phrase = challenge.stdout.decode().strip()
    challenge_id = re.search(r"challenge (chl_\w+)", challenge.stderr.decode()).group(1)
    recording = espeak(phrase, tmp_path / "consent.wav")
    spoken = f5voice("voices", "consent", "ada", "--given-by", "Ada Lovelace", "--challenge-id", challenge_id,
                     "--recording", str(recording), "--json", url=url)
    assert spoken.returncode == 0, spoken.stderr
    assert json.loads(spoken.stdout)["method"] == "spoken"
    assert "consent:     spoken (cns_" in f5voice("voices", "show", "ada", url=url).stdout.decode()
    listed = [line.split() for line in f5voice("voices", "list", url=url).stdout.decode().splitlines()]
    [ada] = [row for row in listed if row[0] == "ada"]
    assert listed[0][4] == "CONSENT" and ada[4] == "spoken"
    half = f5voice("voices", "consent", "ada", "--given-by", "Ada", "--recording", str(recording), url=url)
    assert half.returncode == 2 and "--challenge-id" in half.stderr.decode()

    said = f5voice("say", "Audited words.", "-v", "ada", "-o", str(tmp_path / "a.wav"), "--nfe-step", "2", url=url)
    assert said.returncode == 0, said.stderr
    audit = f5voice("audit", "--voice", "ada", url=url)
    assert audit.returncode == 0 and len(audit.stdout.decode().splitlines()) == 1, audit.stdout
    assert " stream " in audit.stdout.decode() and " ada " in audit.stdout.decode()


def test_styles_added_shown_and_removed(url, short_wav, tmp_path):
    assert f5voice("voices", "add", "sam", str(short_wav), "--ref-text", SHORT_TEXT, url=url).returncode == 0
    softer = espeak("Please keep your voice down.", tmp_path / "soft.wav", "-v", "en+whisper")
    added = f5voice("voices", "style", "add", "sam", "soft", str(softer), "--ref-text", "Please keep your voice down.",
                    url=url)
    assert added.returncode == 0, added.stderr
    assert "  soft: " in added.stdout.decode() and "user: Please keep your voice down." in added.stdout.decode()
    taken = f5voice("voices", "style", "add", "sam", "soft", str(softer), url=url)
    assert taken.returncode == 3 and "style_exists" in taken.stderr.decode()
    assert httpx.patch(f"{url}/v1/voices/sam", json={"lexicons": ["names"]}).status_code == 200
    shown = f5voice("voices", "show", "sam", url=url).stdout.decode()
    assert "lexicons:    names" in shown and "styles:      default (" in shown and "  soft: " in shown
    assert set(json.loads(f5voice("voices", "show", "sam", "--json", url=url).stdout)["styles"]) == {"soft"}

    removed = f5voice("voices", "style", "rm", "sam", "soft", url=url)
    assert removed.returncode == 0 and "deleted style soft of sam" in removed.stderr.decode()
    assert httpx.get(f"{url}/v1/voices/sam").json()["styles"] == {}
    gone = f5voice("voices", "style", "rm", "sam", "soft", url=url)
    assert gone.returncode == 3 and "style_not_found" in gone.stderr.decode()
    assert f5voice("voices", "rm", "sam", url=url).returncode == 0

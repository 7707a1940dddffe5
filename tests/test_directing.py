"""Directed speech end to end, in process on the tiny model: pauses, pace, several speakers in one
request, styles, lexicons, and the dry run that shows what the model reads."""

import base64
import io
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from speech_service import audio
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app

from conftest import SHORT_TEXT, add_voice, espeak

SEED = {"nfe_step": 2, "seed": 7, "response_format": "wav"}


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """Three speakers (espeak-ng voices of their own) and a whispered take of the first."""
    where = tmp_path_factory.mktemp("speakers")
    return {name: espeak(SHORT_TEXT, where / f"{name}.wav", "-v", variant) for name, variant in
            [("alice", "en+f3"), ("bob", "en+m3"), ("carol", "en-us"), ("alice-whisper", "en+whisper")]}


@pytest.fixture
def client(tmp_path, backends, voices):
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}})
    with TestClient(create_app(settings, backends)) as client:  # `with`: the lifespan runs the jobs
        for name in ("alice", "bob", "carol"):
            add_voice(client, name, voices[name], SHORT_TEXT)
        yield client


def wave_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return sf.read(io.BytesIO(response.content), dtype="float32")[0]


def say(client, text: str, **body) -> np.ndarray:
    return wave_of(client.post("/v1/audio/speech", json={"voice": "alice", "input": text, **SEED, **body}))


def dry_run(client, text: str, **body) -> dict:
    r = client.post("/v1/audio/speech/dry-run", json={"voice": "alice", "input": text, **SEED, **body})
    assert r.status_code == 200, r.text
    return r.json()


def silent_runs(wave: np.ndarray, window: int = 240) -> list[tuple[float, float]]:
    """(start, length) in seconds of each run of 10 ms windows with an RMS under 1e-3."""
    quiet = [float(np.sqrt(np.mean(np.square(wave[i:i + window])))) < 1e-3 for i in range(0, len(wave), window)]
    runs, start = [], None
    for k, q in enumerate([*quiet, False]):
        if q and start is None:
            start = k
        elif not q and start is not None:
            runs.append((start * window / audio.SAMPLE_RATE, (k - start) * window / audio.SAMPLE_RATE))
            start = None
    return runs


def test_a_break_is_that_much_silence_at_that_point_of_the_audio(client):
    before = say(client, "Hello there.")
    wave = say(client, '<speak>Hello there.<break time="700ms"/>Goodbye for now.</speak>')
    at = len(before) / audio.SAMPLE_RATE
    long_quiet = [(start, length) for start, length in silent_runs(wave) if length >= 0.65]
    assert long_quiet, silent_runs(wave)
    assert any(abs(start - at) < 0.05 for start, _ in long_quiet), (at, long_quiet)
    np.testing.assert_allclose(wave[:len(before) - 1200], before[:len(before) - 1200], atol=1e-4)


def test_a_slower_rate_makes_its_words_take_about_twice_as_long(client):
    text = "The quick brown fox jumps over the lazy dog."
    plain = say(client, text)
    slow = say(client, f'<speak><prosody rate="50%">{text}</prosody></speak>')
    assert 1.8 < len(slow) / len(plain) < 2.2, (len(slow), len(plain))


def test_plain_text_that_looks_like_markup_is_still_plain_text(client):
    plan = dry_run(client, "Use <b> for bold & x < y.")
    assert "<b>" in plan["segments"][0]["text"]


DIALOGUE = ('<speak><voice name="alice">Good morning, Bob.</voice> <voice name="bob">Morning, Alice! Is Carol '
            'here?</voice> <voice name="carol">I am right here.</voice></speak>')


def test_a_dialogue_plans_each_turn_in_its_own_voice_on_the_callers_characters(client):
    plan = dry_run(client, DIALOGUE)
    assert [s["voice"] for s in plan["segments"]] == ["alice", "bob", "carol"]
    assert [s["pause_after_s"] > 0 for s in plan["segments"]] == [True, True, False]  # turns: no cross-fade
    for segment in plan["segments"]:
        for word in segment["words"]:
            assert DIALOGUE[word["text_start"]:word["text_end"]] == word["text"]
            assert "<" not in word["text"] and ">" not in word["text"]


@pytest.mark.slow  # Whisper hears each segment
def test_a_three_speaker_dialogue_is_one_file_whose_words_carry_their_speakers(client, backends):
    r = client.post("/v1/audio/speech", json={"voice": "alice", "input": DIALOGUE, "timestamps": "word", **SEED})
    assert r.status_code == 200, r.text
    body = r.json()
    wave = sf.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="float32")[0]
    assert abs(len(wave) / audio.SAMPLE_RATE - body["duration"]) < 0.01
    words = body["words"]
    said_by = {w["text"].strip(",.!?"): w["speaker"] for w in words}
    assert said_by["Bob"] == "alice" and said_by["Alice"] == "bob" and said_by["right"] == "carol"
    for w in words:
        assert DIALOGUE[w["text_start"]:w["text_end"]] == w["text"]
        assert 0 <= w["start"] <= w["end"] <= body["duration"] + 0.01
    assert [w["speaker"] for w in words] == sorted([w["speaker"] for w in words], key=["alice", "bob", "carol"].index)

    job = client.post("/v1/jobs", json={"voice": "alice", "input": DIALOGUE, **SEED}).json()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job['id']}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    from_job = wave_of(client.get(f"/v1/jobs/{job['id']}/audio"))
    calls = backends.engine.batch_sizes.copy()
    whole = say(client, DIALOGUE)  # its segments sampled in one call, the job's one at a time
    assert backends.engine.batch_sizes - calls == {3: 1}  # three voices, one model call
    assert len(from_job) == len(whole)
    np.testing.assert_allclose(from_job, whole, atol=2 / 32768)  # a batched item is its solo result, to a bit


def test_an_unknown_speaker_is_a_404_naming_it(client):
    r = client.post("/v1/audio/speech", json={"voice": "alice", **SEED,
                                              "input": '<speak><voice name="dave">Hi.</voice></speak>'})
    assert r.status_code == 404 and "dave" in r.json()["error"]["message"]


def test_a_style_is_chosen_by_name_or_by_instructions_and_an_unknown_one_names_the_styles(client, voices):
    with open(voices["alice-whisper"], "rb") as f:
        r = client.post("/v1/voices/alice/styles", data={"style": "whisper", "ref_text": SHORT_TEXT},
                        files={"file": ("w.wav", f, "audio/wav")})
    assert r.status_code == 201, r.text
    take = r.json()["styles"]["whisper"]
    assert dry_run(client, "Hello.")["segments"][0]["style"] is None
    assert dry_run(client, "Hello.", style="whisper")["segments"][0]["style"] == "whisper"
    assert dry_run(client, "Hello.", instructions="Speak in a soft whisper.")["segments"][0]["style"] == "whisper"
    assert dry_run(client, "Hello.", instructions="Speak cheerfully.")["segments"][0]["style"] is None
    whispered, plain = say(client, "Hello there.", style="whisper"), say(client, "Hello there.")
    assert not np.array_equal(whispered, plain)  # another clip conditions the model
    r = client.post("/v1/audio/speech", json={"voice": "alice", "input": "Hi.", "style": "angry", **SEED})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_style"
    assert "default" in r.json()["error"]["message"] and "whisper" in r.json()["error"]["message"]
    assert take["sha256"] != client.get("/v1/voices/alice").json()["sha256"]
    deadline = time.monotonic() + 10  # the audit trail says which take spoke (written by a thread)
    while not any(e["speakers"] == ["alice:whisper"] for e in client.get("/v1/audit").json()["entries"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def add_lexicon(client, name: str, *rules: dict) -> None:
    r = client.post("/v1/lexicons", json={"name": name, "rules": list(rules)})
    assert r.status_code == 201, r.text


def test_a_lexicon_changes_what_the_model_reads_in_plain_text_ssml_streams_and_jobs(client, backends):
    add_lexicon(client, "brands", {"grapheme": "Nginx", "alias": "engine x"})
    said = "We run Nginx at home."
    for plan in (dry_run(client, said, lexicons=["brands"]),
                 dry_run(client, f"<speak><s>{said}</s></speak>", lexicons=["brands"]),
                 dry_run(client, said, lexicons=["brands"], stream=True)):
        words = [w for s in plan["segments"] for w in s["words"]]
        assert "engine x" in plan["segments"][0]["text"], plan
        assert {w["text"] for w in words if w["read"] in ("engine", "x")} == {"Nginx"}  # one caption on it
    assert "engine x" not in dry_run(client, said)["segments"][0]["text"]

    before = len(backends.synthesizer.plans)
    job = client.post("/v1/jobs", json={"voice": "alice", "input": said, "lexicons": ["brands"], **SEED}).json()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job['id']}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert any("engine x" in s.text for plan in backends.synthesizer.plans[before:] for s in plan.segments)


def test_a_voices_lexicon_applies_unasked_until_it_is_deleted(client):
    add_lexicon(client, "names", {"grapheme": "Siobhan", "alias": "shi vawn"})
    etag = client.get("/v1/voices/alice").headers["etag"]
    r = client.patch("/v1/voices/alice", json={"lexicons": ["names"]}, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    assert "shi vawn" in dry_run(client, "Siobhan is here.")["segments"][0]["text"]
    assert "shi vawn" not in dry_run(client, "Siobhan is here.", voice="bob")["segments"][0]["text"]
    assert client.delete("/v1/lexicons/names").status_code == 204
    assert "Siobhan" in dry_run(client, "Siobhan is here.")["segments"][0]["text"]
    r = client.post("/v1/audio/speech/dry-run", json={"voice": "alice", "input": "Hi.", "lexicons": ["names"]})
    assert r.status_code == 400 and "names" in r.json()["error"]["message"]


def test_a_pinyin_rule_changes_one_character_of_a_polyphone(client):
    add_lexicon(client, "zh", {"grapheme": "银行", "pinyin": "yin2 hang2"})
    plain = dry_run(client, "我去银行。")["segments"][0]["text"]
    read = dry_run(client, "我去银行。", lexicons=["zh"])["segments"][0]["text"]
    assert "银行" in plain and "{yin2}{hang2}" in read
    ssml = dry_run(client, '<speak>我去<phoneme alphabet="x-pinyin" ph="hang2">行</phoneme>。</speak>')
    assert "{hang2}" in ssml["segments"][0]["text"]


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
          '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
          '<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>'
          '<speak>&h;</speak>')


@pytest.mark.parametrize("document, code, named", [
    (LAUGHS, "invalid_ssml", "DOCTYPE"),
    ('<!DOCTYPE speak [<!ENTITY x SYSTEM "file:///etc/passwd">]><speak>&x;</speak>', "invalid_ssml", "DOCTYPE"),
    ("<speak>Hello <s>there</speak>", "invalid_ssml", "line 1"),
    ('<speak>Hello <audio src="http://example.com/a.mp3"/></speak>', "unsupported_ssml", "audio"),
    ('<speak><prosody pitch="+2st">Hi</prosody></speak>', "unsupported_ssml", "pitch"),
])
def test_hostile_or_unsupported_markup_is_a_400_before_any_model_call(client, backends, document, code, named):
    before = backends.syntheses
    for path in ("/v1/audio/speech", "/v1/audio/speech/dry-run", "/v1/jobs"):
        r = client.post(path, json={"voice": "alice", "input": document, **SEED})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == code and error["param"] == "input" and named.lower() in error["message"].lower()
    assert backends.syntheses == before


def test_a_streamed_dialogue_has_its_turns_pause_and_both_voices(client):
    r = client.post("/v1/audio/speech", json={"voice": "alice", "input": DIALOGUE, "stream": True, **SEED})
    wave = wave_of(r)
    turns = [length for _, length in silent_runs(wave) if length >= 0.25]
    assert len(turns) >= 2, silent_runs(wave)  # a pause between each two speakers, no cross-fade

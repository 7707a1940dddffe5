"""Consent on voices: attested or spoken (espeak-ng reads the challenge phrase, the real Whisper
hears it), required at the operator's level before any synthesis, carried into the Content
Credentials, and reduced to hashes when the voice is deleted, which leaves no audio or transcript."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from test_provenance import assertions, read

from speech_service.audio.uploads import sniff_container
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app
from speech_service.service.consent import new_phrase
from speech_service.storage.consent import ConsentStore
from speech_service.storage.objects import LocalObjectStore, open_object_store

from conftest import SHORT_TEXT, espeak
from test_api import assert_error, upload

SPEAKER = "Ada Lovelace"
ANOTHER_PHRASE = "Please call Stella and ask her to bring these things with her from the store."


def make_client(tmp_path, backends, **settings):
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, **settings})
    client = TestClient(create_app(settings, backends))
    client.objects = open_object_store(settings.store)
    return client


@pytest.fixture
def client(tmp_path, backends, short_wav):
    with make_client(tmp_path, backends) as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        yield client


def attest(client, voice="alice", **fields):
    return client.post(f"/v1/voices/{voice}/consent", data={"method": "attested", "given_by": SPEAKER, **fields})


def speak_consent(client, tmp_path, voice="alice", read_aloud=None):
    """A challenge for `voice`, read by espeak-ng (its phrase, or `read_aloud` instead), answered."""
    challenge = client.post(f"/v1/voices/{voice}/consent/challenge")
    assert challenge.status_code == 201, challenge.text
    challenge = challenge.json()
    wav = espeak(read_aloud or challenge["phrase"], tmp_path / f"consent-{challenge['id']}.wav")
    with open(wav, "rb") as f:
        answer = client.post(f"/v1/voices/{voice}/consent", files={"file": ("consent.wav", f)},
                             data={"method": "spoken", "given_by": SPEAKER, "challenge_id": challenge["id"]})
    return challenge, answer


def say(client, voice="alice", **body):
    return client.post("/v1/audio/speech", json={"voice": voice, "input": "Hello there.", "nfe_step": 2, **body})


@pytest.mark.slow  # seconds of model calls: make test, not the minute loop
def test_a_spoken_consent_passes_when_the_phrase_is_read_and_fails_for_another(client, tmp_path):
    challenge, wrong = speak_consent(client, tmp_path, read_aloud=ANOTHER_PHRASE)
    assert_error(wrong, 422, "consent_not_spoken")
    assert challenge["phrase"] in wrong.json()["error"]["message"]
    assert client.get("/v1/voices/alice").json()["consent"] is None

    challenge, answer = speak_consent(client, tmp_path)
    assert answer.status_code == 201, answer.text
    record = answer.json()
    assert record["method"] == "spoken" and record["given_by"] == SPEAKER and record["challenge"] == challenge["phrase"]
    assert record["wer"] <= 0.4 and record["heard"]
    assert record["identity_checked"] is False and "not compared" in record["note"]
    assert record["voice_sha256"] == client.get("/v1/voices/alice").json()["sha256"]
    assert client.get("/v1/voices/alice").json()["consent"]["id"] == record["id"]
    # A phrase answers once (tests/test_consent_once.py: three at once).
    with open(tmp_path / f"consent-{challenge['id']}.wav", "rb") as f:
        again = client.post("/v1/voices/alice/consent", files={"file": ("c.wav", f)},
                            data={"method": "spoken", "given_by": SPEAKER, "challenge_id": challenge["id"]})
    assert_error(again, 404, "challenge_not_found")


@pytest.mark.slow  # many syntheses and Whisper passes: in `make test`, not the minute loop
def test_each_consent_level_is_enforced_on_every_way_to_speak(tmp_path, backends, short_wav):
    levels = {"none": {"plain", "stated", "read"}, "attested": {"stated", "read"}, "spoken": {"read"}}
    with make_client(tmp_path, backends) as client:
        for voice in ("plain", "stated", "read"):
            assert upload(client, voice, short_wav, ref_text=SHORT_TEXT).status_code == 201
        assert attest(client, "stated").status_code == 201
        assert speak_consent(client, tmp_path, "read")[1].status_code == 201
        settings = client.app.state.services.settings
        for required, allowed in levels.items():
            settings.require_consent = required  # as a redeploy with this `require_consent` would have it
            for voice in ("plain", "stated", "read"):
                whole, stream = say(client, voice), say(client, voice, stream=True)
                job = client.post("/v1/jobs", json={"voice": voice, "input": "Hello there.", "nfe_step": 2})
                if voice in allowed:
                    assert (whole.status_code, stream.status_code, job.status_code) == (200, 200, 202), required
                    continue
                for refused in (whole, stream, job):
                    assert_error(refused, 403, "consent_required")
                message = whole.json()["error"]["message"]
                assert f"'{voice}'" in message and f"{required} consent" in message
                assert ("no consent record" if voice == "plain" else "only attested consent") in message


@pytest.mark.slow  # many syntheses and Whisper passes: in `make test`, not the minute loop
def test_a_replaced_clip_needs_consent_again_and_a_corrected_transcript_keeps_it(tmp_path, backends, short_wav,
                                                                                  long_wav):
    with make_client(tmp_path, backends, require_consent="attested") as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        assert attest(client).status_code == 201
        assert client.patch("/v1/voices/alice", json={"ref_text": SHORT_TEXT.upper()}).status_code == 200
        assert say(client).status_code == 200
        assert upload(client, "alice", long_wav, overwrite="true").status_code == 201
        assert_error(say(client), 403, "consent_required")
        history = client.get("/v1/voices/alice/consent").json()
        assert history["current"] is None and len(history["records"]) == 1


def test_consent_is_named_in_the_credentials_of_the_speech(tmp_path, backends, short_wav, signer, trusted):
    provenance = {"certificate_chain": str(signer / "chain.pem"), "private_key": str(signer / "key.pem")}
    with make_client(tmp_path, backends, provenance=provenance) as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        consent = attest(client, statement="Ada agrees to audiobook narration.").json()
        assert consent["statement"] == "Ada agrees to audiobook narration."
        speech = say(client, response_format="wav")
        state, manifest, _ = read(speech.content, trusted, "audio/wav")
        assert state == "Trusted" and assertions(manifest)["org.f5voice.speech"]["consent_id"] == consent["id"]


def test_bad_consent_requests_are_4xx_naming_the_problem(client, tmp_path):
    assert_error(attest(client, "nobody"), 404, "voice_not_found")
    assert_error(attest(client, given_by="  "), 400, "invalid_given_by")
    assert_error(client.post("/v1/voices/alice/consent", data={"method": "spoken", "given_by": SPEAKER}), 400,
                 "recording_required")
    assert_error(client.post("/v1/voices/alice/consent", data={"method": "sworn", "given_by": SPEAKER}), 422,
                 "invalid_request")
    other = client.post("/v1/voices/alice/consent/challenge").json()
    with open(espeak(other["phrase"], tmp_path / "c.wav"), "rb") as f:
        wrong_voice = client.post("/v1/voices/nobody/consent", files={"file": ("c.wav", f)},
                                  data={"method": "spoken", "given_by": SPEAKER, "challenge_id": other["id"]})
    assert_error(wrong_voice, 404, "voice_not_found")
    not_audio = client.post("/v1/voices/alice/consent", files={"file": ("c.txt", b"I agree")},
                            data={"method": "spoken", "given_by": SPEAKER, "challenge_id": other["id"]})
    assert_error(not_audio, 400, "unsupported_audio")
    assert_error(client.post("/v1/voices/nobody/consent/challenge"), 404, "voice_not_found")


def test_a_challenge_expires_and_belongs_to_its_voice(tmp_path):
    now = [1_000_000.0]
    store = ConsentStore(LocalObjectStore(tmp_path), clock=lambda: now[0])
    challenge = store.issue("alice", new_phrase(), ttl_s=600)
    with pytest.raises(Exception, match="No live consent challenge"):
        store.challenge(challenge.id, "bob")
    assert store.challenge(challenge.id, "alice").phrase == challenge.phrase
    unanswered = store.issue("bob", new_phrase(), ttl_s=600)
    now[0] += 601
    with pytest.raises(Exception, match="No live consent challenge"):
        store.challenge(challenge.id, "alice")  # an expired one read is removed
    assert [k.rsplit("/", 1)[-1] for k in LocalObjectStore(tmp_path).list("consent/challenges/")] == [
        f"{unanswered.id}.json"]
    assert store.sweep() == 1 and not LocalObjectStore(tmp_path).list("consent/challenges/")
    store.issue("carol", new_phrase(), ttl_s=1)
    now[0] += 2
    assert store.sweep() == 0  # not again within the hour


def test_phrases_are_sentences_that_differ_every_time():
    phrases = {new_phrase() for _ in range(200)}
    assert len(phrases) == 200
    assert all(p[0].isupper() and p.endswith(".") and ", and the " in p and len(p.split()) == 15 for p in phrases)


@pytest.mark.slow  # many syntheses and Whisper passes: in `make test`, not the minute loop
def test_deleting_a_voice_leaves_no_audio_or_transcript_and_consent_only_as_hashes(client, tmp_path):
    challenge, answer = speak_consent(client, tmp_path)
    consent = answer.json()
    assert say(client).status_code == 200
    job = client.post("/v1/jobs", json={"voice": "alice", "input": "A job in her voice.", "nfe_step": 2}).json()
    for _ in range(400):
        if client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded":
            break
    assert client.delete("/v1/voices/alice").status_code == 204

    personal = [SHORT_TEXT, SPEAKER, challenge["phrase"], consent["heard"], consent["statement"]]
    for key in client.objects.list(""):
        data = client.objects.get(key).data
        assert sniff_container(data) is None, f"{key} is audio"
        text = data.decode("utf-8", "replace").casefold()
        for words in personal:
            assert words.casefold() not in text, f"{key} still holds {words!r}"
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    history = client.get("/v1/voices/alice/consent").json()
    assert history["current"] is None
    [kept] = history["records"]
    assert kept["id"] == consent["id"] and kept["redacted_at"] and kept["voice_sha256"] == consent["voice_sha256"]
    assert kept["given_by"].startswith("sha256:") and kept["heard"].startswith("sha256:")
    assert kept["wer"] == consent["wer"] and kept["method"] == "spoken"
    entries = client.get("/v1/audit", params={"voice": "alice"}).json()["entries"]
    assert [e["kind"] for e in entries] == ["speech", "job"] and all(e["consent_id"] == consent["id"] for e in entries)
    assert_error(client.get("/v1/voices/alice"), 404, "voice_not_found")
    assert "alice" in json.dumps(history)
    assert datetime.fromisoformat(kept["redacted_at"]) > datetime.now(timezone.utc) - timedelta(minutes=5)


def test_only_admins_give_or_read_consent(tmp_path, backends, short_wav):
    keys = [{"name": "ops", "key": "sk-ops", "scopes": ["admin"]},
            {"name": "app", "key": "sk-app", "scopes": ["speak"]}]
    with make_client(tmp_path, backends, api_keys=keys) as client:
        client.headers["Authorization"] = "Bearer sk-ops"
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        app = {"Authorization": "Bearer sk-app"}
        for refused in (client.post("/v1/voices/alice/consent", headers=app, data={"method": "attested",
                                                                                   "given_by": SPEAKER}),
                        client.post("/v1/voices/alice/consent/challenge", headers=app),
                        client.get("/v1/voices/alice/consent", headers=app)):
            assert_error(refused, 403, "insufficient_scope")
        assert client.get("/v1/voices/alice").json()["consent"] is None
        given = attest(client).json()
        assert given["recorded_by"] == "ops"
        assert client.get("/v1/voices/alice", headers=app).json()["consent"]["id"] == given["id"]  # seen, not read

"""Content Credentials: every whole file and every stream the service returns is signed (C2PA),
read back here with the C2PA library itself and the test CA as the trust anchor; one changed byte
of audio reads as tampered; sidecars bind the exact bytes a client received."""

import base64
import io
import json
import logging
import socket
import threading
import time

import c2pa
import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from speech_service.audio import encoding
from speech_service.config import ServiceSettings
from speech_service.errors import NotFound
from speech_service.http.app import create_app
from speech_service.http.routes import provenance as route
from speech_service.provenance.credentials import OPAQUE, TRAINED_ALGORITHMIC_MEDIA, SpeechFacts
from speech_service.storage.objects import LocalObjectStore
from speech_service.storage.provenance import ProvenanceStore
from speech_service.storage.voices import sha256

from conftest import SHORT_TEXT, tiered
from served import served_app
from test_api import assert_error, upload

TEXT = "Signed speech. Two sentences of it."
KEY = {"name": "dubbing-team", "key": "sk-dub", "scopes": ["speak", "admin"]}
AUTH = {"Authorization": "Bearer sk-dub"}
MEDIA = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac"}


@pytest.fixture
def client(tmp_path, backends, short_wav, signer):
    settings = ServiceSettings.model_validate({
        "store": {"path": str(tmp_path / "store")}, "api_keys": [KEY],
        "provenance": {"certificate_chain": str(signer / "chain.pem"), "private_key": str(signer / "key.pem"),
                       "trust_anchors": str(signer / "ca.pem")}})
    with TestClient(create_app(settings, backends), headers=AUTH) as client:
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        yield client


def say(client, headers=None, **body):
    r = client.post("/v1/audio/speech", headers=headers,
                    json={"voice": "alice", "input": TEXT, "nfe_step": 2, "seed": 5, **body})
    assert r.status_code == 200, r.text
    return r


def read(data: bytes, context, media_type: str = OPAQUE, sidecar: bytes | None = None):
    with c2pa.Reader(media_type, io.BytesIO(data), sidecar, context=context) as reader:
        return reader.get_validation_state(), reader.get_active_manifest(), reader.get_validation_results()


def assertions(manifest) -> dict:
    return {a["label"]: a["data"] for a in manifest["assertions"]}


def audio_offset(data: bytes, fmt: str) -> int:
    """A byte inside the audio itself, not the manifest (wav: in its data chunk)."""
    return data.index(b"data") + 200 if fmt == "wav" else len(data) * 3 // 4


def flipped(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac"])
def test_a_whole_file_carries_trusted_credentials_that_break_when_its_audio_changes(client, trusted, fmt):
    pcm = np.frombuffer(say(client, response_format="pcm").content, "<i2")
    r = say(client, response_format=fmt, headers={"X-Request-ID": f"req-{fmt}"})
    data = r.content
    assert "X-Content-Credentials" not in r.headers  # inside the file
    plain = encoding.encode(pcm.astype(np.float32) / 32767, fmt)  # the same audio, unsigned
    assert sf.info(io.BytesIO(data)).frames == sf.info(io.BytesIO(plain)).frames
    assert np.array_equal(sf.read(io.BytesIO(data), dtype="int16")[0], sf.read(io.BytesIO(plain), dtype="int16")[0])

    state, manifest, _ = read(data, trusted, MEDIA[fmt])
    assert state == "Trusted"
    found = assertions(manifest)
    created = found["c2pa.actions.v2"]["actions"][0]
    assert created["action"] == "c2pa.created" and created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"]["name"] == "F5-TTS"
    assert manifest["claim_generator_info"][0]["name"] == "f5-voice-service"
    assert found["org.f5voice.speech"] == {"voice": "alice", "text_sha256": sha256(TEXT.encode()),
                                           "request_id": f"req-{fmt}", "key": "dubbing-team", "model": "f5-tts",
                                           "consent_id": None}

    state, _, results = read(flipped(data, audio_offset(data, fmt)), trusted, MEDIA[fmt])
    assert state == "Invalid"
    assert "assertion.dataHash.mismatch" in json.dumps(results)


def test_without_the_ca_the_same_file_is_valid_but_not_trusted(client):
    state, _, _ = read(say(client, response_format="wav").content, None, "audio/wav")
    assert state == "Valid"


def sidecar_of(client, response) -> bytes:
    url = response.headers["X-Content-Credentials"]
    assert response.headers["Link"] == f'<{url}>; rel="c2pa-manifest"'
    got = client.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "application/c2pa"
    return got.content


@pytest.mark.parametrize("fmt", tiered(["wav", "mp3", "flac", "opus", "aac", "pcm"], fast={"wav", "pcm"}))
def test_a_stream_gets_a_sidecar_bound_to_the_bytes_received(client, trusted, fmt):
    r = say(client, response_format=fmt, stream=True)
    received = r.content
    sidecar = sidecar_of(client, r)
    state, manifest, _ = read(received, trusted, sidecar=sidecar)
    assert state == "Trusted"
    assert assertions(manifest)["org.f5voice.speech"]["text_sha256"] == sha256(TEXT.encode())
    assert read(flipped(received, len(received) // 2), trusted, sidecar=sidecar)[0] == "Invalid"
    assert read(received[:-1], trusted, sidecar=sidecar)[0] == "Invalid"  # a stream cut short


def test_an_event_streams_sidecar_binds_the_audio_its_deltas_carry(client, trusted):
    r = say(client, response_format="mp3", stream=True, stream_format="sse")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    received = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert read(received, trusted, sidecar=sidecar_of(client, r))[0] == "Trusted"


@pytest.mark.parametrize("fmt", tiered(["opus", "aac", "pcm"], fast={"aac"}))
def test_whole_files_that_cannot_embed_get_a_sidecar(client, trusted, fmt):
    r = say(client, response_format=fmt)
    assert read(r.content, trusted, sidecar=sidecar_of(client, r))[0] == "Trusted"


def verify(client, data: bytes, sidecar: bytes | None = None):
    files = {"file": ("speech", data)}
    if sidecar is not None:
        files["manifest"] = ("speech.c2pa", sidecar)
    return client.post("/v1/provenance/verify", files=files)


def test_verify_reports_trusted_tampered_and_absent_credentials(client, short_wav):
    data = say(client, response_format="flac").content
    report = verify(client, data).json()
    assert report["found"] and report["validation_state"] == "Trusted" and report["embedded"]
    assert report["speech"]["voice"] == "alice" and report["speech"]["key"] == "dubbing-team"
    assert report["manifest"]["signature_info"]["issuer"].endswith("(UNTRUSTED development)")

    tampered = verify(client, flipped(data, audio_offset(data, "flac"))).json()
    assert tampered["validation_state"] == "Invalid" and "assertion.dataHash.mismatch" in tampered["failures"]

    r = say(client, response_format="opus", stream=True)
    report = verify(client, r.content, sidecar_of(client, r)).json()
    assert report["validation_state"] == "Trusted" and not report["embedded"]

    plain = verify(client, short_wav.read_bytes()).json()
    assert {k: v for k, v in plain.items() if k != "message"} == {
        "object": "provenance.verification", "found": False, "validation_state": None, "embedded": None,
        "failures": [], "speech": None, "manifest": None}
    assert "carries none inside" in plain["message"]
    unsigned_opus = verify(client, r.content).json()  # its sidecar left behind
    assert not unsigned_opus["found"] and "send it as `manifest`" in unsigned_opus["message"]
    assert_error(verify(client, r.content, b"not a manifest"), 400, "unreadable_manifest")


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1, in a thread: its port, and the connections it has accepted (each
    closed at once)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            accepted.append(connection.getpeername())
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.shutdown(socket.SHUT_RDWR)
    server.close()


def naming_a_remote_manifest(signer, fmt: str, url: str) -> bytes:
    """A `fmt` file with no manifest inside, whose XMP names `url` as its remote manifest
    (`dcterms:provenance`), as the C2PA library writes one whose manifest is kept elsewhere."""
    plain = encoding.encode(np.zeros(24000, np.float32), fmt)
    signing = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        c2pa.C2paSigningAlg.ES256, (signer / "chain.pem").read_bytes(), (signer / "key.pem").read_bytes(), None))
    builder = c2pa.Builder({"claim_generator_info": [{"name": "elsewhere", "version": "1"}]},
                           c2pa.Context.from_dict({"verify": {"verify_after_sign": False}}))
    builder.set_no_embed()
    builder.set_remote_url(url)
    named = io.BytesIO()
    builder.sign(signing, MEDIA[fmt], io.BytesIO(plain), named)
    assert b"dcterms:provenance" in named.getvalue() and url.encode() in named.getvalue()
    return named.getvalue()


@pytest.mark.parametrize("anchors", [True, False], ids=["trust-anchors", "development-signer"])
@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_verification_connects_nowhere_a_file_names(tmp_path, backends, signer, listener, fmt, anchors):
    port, accepted = listener
    url = f"http://127.0.0.1:{port}/manifest.c2pa"
    provenance = {"certificate_chain": str(signer / "chain.pem"), "private_key": str(signer / "key.pem"),
                  "trust_anchors": str(signer / "ca.pem")} if anchors else {}
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, "provenance": provenance})
    with TestClient(create_app(settings, backends)) as client:
        r = verify(client, naming_a_remote_manifest(signer, fmt, url))
    assert accepted == []
    assert_error(r, 400, "unreadable_manifest")  # answered, in the service's words: the manifest is not here
    message = r.json()["error"]["message"]
    assert "remote manifest, which this service does not fetch" in message and str(port) not in message


def test_a_verification_reads_the_file_off_the_event_loop(tmp_path, backends, short_wav, monkeypatch):
    """Every parse of the uploaded bytes runs in the verification's worker thread: while one is held
    up, `/healthz` of the same replica answers at once."""
    parsing, release, sniff = threading.Event(), threading.Event(), route.sniff_container

    def held_up(data: bytes):
        parsing.set()
        release.wait(3)
        return sniff(data)

    monkeypatch.setattr(route, "sniff_container", held_up)
    answers = []
    with served_app(tmp_path / "store", backends) as url:
        posting = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/provenance/verify", files={"file": ("a.wav", short_wav.read_bytes())}, timeout=30)))
        posting.start()
        try:
            assert parsing.wait(10)
            started = time.monotonic()
            assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            assert time.monotonic() - started < 0.5
        finally:
            release.set()
            posting.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["found"] is False


def test_unreadable_credentials_are_told_in_the_services_words(client, caplog):
    credentials = client.app.state.services.speech.marker.credentials
    signed = credentials.embed(encoding.encode(np.zeros(24000, np.float32), "wav"), "wav",
                               SpeechFacts("alice", "", "req-1", None, "f5-tts"))
    damaged = bytearray(signed)
    header = signed.index(b"C2PA") + 12  # the manifest store's JUMBF box header
    damaged[header:header + 4] = bytes(b ^ 0xFF for b in damaged[header:header + 4])
    with caplog.at_level(logging.INFO, "speech_service.provenance.credentials"):
        inside = verify(client, bytes(damaged))
        sidecar = verify(client, b"any bytes", b"\0garbage, not a manifest store")
    assert_error(inside, 400, "unreadable_manifest")
    assert inside.json()["error"]["param"] == "file"
    assert inside.json()["error"]["message"].startswith("The file's Content Credentials could not be read: they "
                                                        "are damaged, or kept elsewhere")
    assert_error(sidecar, 400, "unreadable_manifest")
    assert sidecar.json()["error"]["param"] == "manifest"
    assert sidecar.json()["error"]["message"].startswith("The manifest could not be read: it is not a C2PA "
                                                         "manifest store, or it is damaged.")
    for answer in (inside, sidecar):  # the library's own words stay in the log
        assert "JUMBF" not in answer.text and "Verify:" not in answer.text
    assert "JUMBF" in caplog.text


@pytest.mark.slow  # waits out landing waits
def test_a_sidecar_that_was_never_made_or_has_expired_is_404(client, tmp_path):
    assert_error(client.get("/v1/provenance/nothing-here"), 404, "provenance_not_found")
    assert client.get("/v1/provenance/..%2F..%2Fvoices").status_code == 404
    now = [1000.0]
    store = ProvenanceStore(LocalObjectStore(tmp_path / "p"), ttl_s=60, clock=lambda: now[0])
    store.put("r1", b"manifest")
    assert store.get("r1") == b"manifest"
    now[0] += 61
    with pytest.raises(Exception, match="No Content Credentials"):
        store.get("r1")
    store.put("r2", b"manifest")
    now[0] += 61
    assert store.sweep() == 1 and store.objects.list("provenance/") == []
    store.put("r3", b"manifest")
    now[0] += 61
    assert store.sweep() == 0  # it lists every sidecar: at most once an hour
    now[0] += 3600
    assert store.sweep() == 1


@pytest.mark.slow  # waits out landing waits
def test_a_sidecar_is_read_by_the_key_that_made_it_and_admins_and_is_unknown_to_another_key(
        tmp_path, backends, short_wav):
    keys = [{"name": "team-a", "key": "sk-a", "scopes": ["speak"]},
            {"name": "team-b", "key": "sk-b", "scopes": ["speak"]},
            {"name": "ops", "key": "sk-ops", "scopes": ["admin"]}]
    a, b, admin = ({"Authorization": f"Bearer {k['key']}"} for k in keys)
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, "api_keys": keys,
                                               "provenance": {"landing_wait_s": 0.5}})
    with TestClient(create_app(settings, backends)) as client:
        assert upload(client, "alice", short_wav, headers=admin, ref_text=SHORT_TEXT).status_code == 201
        streamed = say(client, headers=a, response_format="pcm", stream=True)
        job = client.post("/v1/jobs", headers=a, json={"voice": "alice", "input": TEXT, "nfe_step": 2,
                                                       "response_format": "aac"}).json()
        assert finished(client, job["id"], a)["status"] == "succeeded"
        for sidecar_id in (streamed.headers["X-Content-Credentials"].rsplit("/", 1)[1], job["id"]):
            assert client.get(f"/v1/provenance/{sidecar_id}", headers=a).status_code == 200
            assert client.get(f"/v1/provenance/{sidecar_id}", headers=admin).status_code == 200
            # To another key, the answer a sidecar never made gets, its id aside: nothing to probe.
            other, missing = client.get(f"/v1/provenance/{sidecar_id}", headers=b), client.get(
                "/v1/provenance/never-made", headers=b)
            assert_error(other, 404, "provenance_not_found")
            assert_error(missing, 404, "provenance_not_found")
            assert told(other, sidecar_id) == told(missing, "never-made")


def told(response, sidecar_id: str) -> dict:
    """An error's body without what names its request: its sidecar id and its request id."""
    error = response.json()["error"]
    return {**error, "message": error["message"].replace(sidecar_id, "{id}").split(" (request id")[0]}


def test_a_sidecars_owner_is_in_its_key_and_read_without_the_manifest(tmp_path):
    now = [1000.0]
    store = ProvenanceStore(LocalObjectStore(tmp_path / "p"), ttl_s=60, clock=lambda: now[0])
    store.put("mine", b"manifest", owner="team-a.c2pa")  # a key's name may hold dots and dashes
    store.put("open", b"manifest")  # made by a service without keys: no owner
    assert store.objects.list("provenance/") == ["provenance/mine/1060-team-a.c2pa.c2pa", "provenance/open/1060.c2pa"]
    assert store.get("mine") == store.get("mine", "team-a.c2pa") == store.get("open") == b"manifest"
    for sidecar_id, reader in (("mine", "team-a"), ("mine", "team-b"), ("open", "team-a")):
        with pytest.raises(NotFound):
            store.get(sidecar_id, reader)
    now[0] += 61
    assert store.sweep() == 2  # the owner does not hide the expiry


def test_a_claim_goes_with_its_sidecar_or_when_its_request_never_stored_one(tmp_path):
    now = [1000.0]
    store = ProvenanceStore(LocalObjectStore(tmp_path / "p"), ttl_s=60, clock=lambda: now[0])
    assert [store.claim(i) for i in ("kept", "failed")] == ["kept", "failed"]
    assert store.claim("kept").startswith("prov_")  # taken: another request gets one of its own
    store.put("kept", b"manifest")
    assert store.get("kept") == b"manifest"  # the claim is no manifest
    now[0] += 30
    assert store.claim("late") == "late"
    now[0] += 31
    assert store.sweep() == 3  # kept's sidecar and claim, failed's claim; late's has 29 s left
    assert store.objects.list("provenance/") == ["provenance/late/claim"]
    store.unclaim("late")
    assert store.claim("late") == "late"  # free again
    # The service's own ids are never taken from a request: a client could send one it saw.
    assert store.claim("prov_0123456789abcdef01234567") != "prov_0123456789abcdef01234567"
    assert store.claim("job_01a23f232e0810f4377d").startswith("prov_")


def test_a_reused_request_id_never_replaces_anothers_sidecar(client, trusted):
    first = say(client, response_format="pcm", headers={"X-Request-ID": "same-id"})
    second = say(client, response_format="pcm", input="Another text entirely.", headers={"X-Request-ID": "same-id"})
    assert first.headers["X-Content-Credentials"] == "/v1/provenance/same-id"
    assert second.headers["X-Content-Credentials"] != first.headers["X-Content-Credentials"]
    assert read(first.content, trusted, sidecar=sidecar_of(client, first))[0] == "Trusted"
    assert read(second.content, trusted, sidecar=sidecar_of(client, second))[0] == "Trusted"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_that_fails_after_its_sidecar_id_was_reserved_gives_it_back(client, backends, monkeypatch,
                                                                              stream):
    from speech_service.errors import SynthesizerUnavailable

    async def fails(*args):
        raise SynthesizerUnavailable("the replica went away")

    def fails_streaming(*args):
        async def pieces():
            raise SynthesizerUnavailable("the replica went away")
            yield
        return pieces()

    with monkeypatch.context() as broken:
        broken.setattr(backends.backends, "stream" if stream else "synthesize", fails_streaming if stream else fails)
        r = client.post("/v1/audio/speech", headers={"X-Request-ID": "try-again"},
                        json={"voice": "alice", "input": TEXT, "response_format": "pcm", "stream": stream})
        assert r.status_code == 503 and r.json()["error"]["code"] == "synthesizer_unavailable"
    assert not client.app.state.services.speech.marker._landing  # nothing held for it
    retried = say(client, response_format="pcm", stream=stream, headers={"X-Request-ID": "try-again"})
    assert retried.headers["X-Content-Credentials"] == "/v1/provenance/try-again"


def finished(client, job_id, headers=None):
    for _ in range(600):
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


@pytest.mark.parametrize("fmt", tiered(["mp3", "aac"], fast={"mp3"}))
def test_a_jobs_audio_is_signed_with_the_job_and_its_owner(client, trusted, fmt):
    r = client.post("/v1/jobs", json={"voice": "alice", "input": TEXT, "nfe_step": 2, "seed": 5,
                                      "response_format": fmt})
    job = finished(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    audio = client.get(f"/v1/jobs/{job['id']}/audio")
    if fmt == "mp3":
        state, manifest, _ = read(audio.content, trusted, "audio/mpeg")
    else:
        assert audio.headers["X-Content-Credentials"] == f"/v1/provenance/{job['id']}"
        state, manifest, _ = read(audio.content, trusted, sidecar=sidecar_of(client, audio))
    assert state == "Trusted"
    speech = assertions(manifest)["org.f5voice.speech"]
    assert speech["request_id"] == job["id"] and speech["key"] == "dubbing-team"


def test_a_signer_that_cannot_sign_is_refused_at_start_with_its_reason(signer, tmp_path):
    from speech_service.config import ProvenanceSettings
    from speech_service.provenance.credentials import ContentCredentials

    with pytest.raises(ValueError, match="cannot read .*missing.pem"):
        ContentCredentials(ProvenanceSettings(certificate_chain=str(tmp_path / "missing.pem"),
                                              private_key=str(signer / "key.pem")))
    with pytest.raises(ValueError, match="do not make an ES256 signer"):  # the CA's certificate, the signer's key
        ContentCredentials(ProvenanceSettings(certificate_chain=str(signer / "ca.pem"),
                                              private_key=str(signer / "key.pem")))
    with pytest.raises(ValueError, match="go together"):
        ProvenanceSettings(certificate_chain=str(signer / "chain.pem"))


def slow_puts(sidecars, monkeypatch, delay_s: float, held: threading.Event | None = None) -> list[str]:
    """`sidecars.put` waits until `held` is set (when given), then takes `delay_s` longer; returns the
    ids stored so far."""
    stored, put = [], sidecars.put

    def slow(sidecar_id, manifest, owner=None):
        if held is not None:
            assert held.wait(60), "the test never let the sidecar be stored"
        time.sleep(delay_s)
        put(sidecar_id, manifest, owner)
        stored.append(sidecar_id)

    monkeypatch.setattr(sidecars, "put", slow)
    return stored


@pytest.mark.parametrize("stream", tiered([False, True], fast={True}))
def test_a_response_does_not_wait_for_its_sidecar_and_a_get_waits_for_it(client, trusted, monkeypatch, stream):
    held = threading.Event()
    stored = slow_puts(client.app.state.services.speech.marker.sidecars, monkeypatch, 0.5, held)
    r = say(client, response_format="pcm", stream=stream)
    assert stored == []  # the audio came while its sidecar could not be kept
    held.set()  # the GET below arrives while the sidecar is still being stored
    assert read(r.content, trusted, sidecar=sidecar_of(client, r))[0] == "Trusted"
    assert stored == [r.headers["X-Content-Credentials"].rsplit("/", 1)[1]]


@pytest.mark.slow  # a replica stopping mid-speech
def test_a_replica_going_away_stores_the_sidecars_of_the_responses_it_sent(tmp_path, backends, short_wav,
                                                                           monkeypatch):
    app = create_app(ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}}), backends)
    services, held = app.state.services, threading.Event()
    stored = slow_puts(services.speech.marker.sidecars, monkeypatch, 0.5, held)
    # What was stored when the shutdown reached its last step, closing the audit log. (Threads still
    # storing would finish in a test's event loop anyway; a replica's process ends.)
    close, at_close = services.audit.close, []
    monkeypatch.setattr(services.audit, "close", lambda: (at_close.extend(stored), close()))
    with TestClient(app) as client:
        upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
        ids = [say(client, response_format="aac", stream=stream).headers["X-Content-Credentials"].rsplit("/", 1)[1]
               for stream in (False, True)]
        assert stored == []
        held.set()  # each put still takes half a second: the shutdown below has to wait for them
    assert sorted(at_close) == sorted(ids)  # the shutdown waited for both


def replicas_over(objects, *landing_waits_s: float):
    """The signer, the audit log and one `SpeechMarker` per landing wait, as Ingress replicas
    sharing `objects` have them."""
    from speech_service.config import AuditSettings, ProvenanceSettings
    from speech_service.provenance.credentials import ContentCredentials
    from speech_service.service.audit import AuditLog
    from speech_service.service.marking import SpeechMarker
    from speech_service.storage.audit import AuditStore

    credentials, audit = ContentCredentials(ProvenanceSettings()), AuditLog(AuditStore(objects), AuditSettings())
    return credentials, audit, [SpeechMarker(credentials, ProvenanceStore(objects, ttl_s=60), audit, landing_wait_s=w)
                                for w in landing_waits_s]


@pytest.mark.slow  # waits out landing waits
def test_a_sidecar_another_replica_is_storing_is_waited_for_and_an_unknown_one_is_not_for_ever(tmp_path):
    import asyncio
    from datetime import datetime, timedelta, timezone

    from speech_service.storage.audit import AuditStore

    objects = LocalObjectStore(tmp_path / "shared")
    credentials, audit, (storing, asking) = replicas_over(objects, 2.0, 2.0)
    slow_puts(storing.sidecars, pytest.MonkeyPatch(), 0.4)

    async def scene():
        facts = SpeechFacts("alice", "", "req-1", None, "f5-tiny")
        marked = await storing.response(b"speech bytes", "pcm", facts)
        manifest = await asking.sidecar(marked.sidecar_id)  # a GET reaching the other Ingress replica
        began = time.monotonic()
        with pytest.raises(NotFound):
            await asking.sidecar("never-made")
        return marked, manifest, time.monotonic() - began

    marked, manifest, waited = asyncio.run(scene())
    assert marked.sidecar_id == "req-1"
    assert credentials.verify(b"speech bytes", manifest).speech["request_id"] == "req-1"
    assert 1.0 < waited < 2.5
    audit.close()  # the response's entry was queued with it
    now = datetime.now(timezone.utc)
    [entry], _ = AuditStore(objects).read(now - timedelta(hours=1), now + timedelta(hours=1))
    assert (entry.request_id, entry.output_sha256) == ("req-1", sha256(b"speech bytes"))


def test_two_replicas_given_one_request_id_at_once_keep_both_sidecars(object_store, monkeypatch):
    """A client's retry with the same X-Request-ID reaching another Ingress replica while the first
    attempt's sidecar is still being stored: one replica takes the id, the other a random one, on
    both stores (S3's conditional write decides it)."""
    import asyncio

    credentials, audit, replicas = replicas_over(object_store, 2.0, 2.0)
    held = threading.Event()
    for replica in replicas:
        slow_puts(replica.sidecars, monkeypatch, 0, held)  # neither sidecar is stored before both are named

    async def scene():
        facts = SpeechFacts("alice", "", "retried-id", None, "f5-tiny")
        marked = await asyncio.gather(*(replica.response(f"speech {n}".encode(), "pcm", facts)
                                        for n, replica in enumerate(replicas)))
        held.set()
        await asyncio.gather(*(r.drain() for r in replicas))
        return marked

    marked = asyncio.run(scene())
    assert sorted(m.sidecar_id == "retried-id" for m in marked) == [False, True]
    for n, m in enumerate(marked):
        assert credentials.verify(f"speech {n}".encode(), replicas[n].sidecars.get(m.sidecar_id)).state == "Valid"
    audit.close()

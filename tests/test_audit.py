"""The audit trail: exactly one entry per speech delivered (whole, streamed or as a job), each
naming the key, the voice, the consent and the hashes of what went in and out; written off the
request's path and retried until the store takes it; read only by admins."""

import base64
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from fastapi.testclient import TestClient

from speech_service.config import ServiceSettings
from speech_service.http.app import create_app
from speech_service.storage.audit import AuditEntry, AuditStore
from speech_service.storage.objects import LocalObjectStore

from conftest import SHORT_TEXT, SeaweedFS
from test_api import assert_error, upload

KEYS = [{"name": "ops", "key": "sk-ops", "scopes": ["admin"]},
        {"name": "app", "key": "sk-app", "scopes": ["speak"]}]
OPS, APP = {"Authorization": "Bearer sk-ops"}, {"Authorization": "Bearer sk-app"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def service(tmp_path, backends, short_wav, store=None, **settings):
    settings = ServiceSettings.model_validate({"store": store or {"path": str(tmp_path / "store")},
                                              "api_keys": KEYS, **settings})
    client = TestClient(create_app(settings, backends), headers=OPS)
    client.__enter__()
    assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
    assert client.post("/v1/voices/alice/consent", data={"method": "attested", "given_by": "Alice"}).status_code == 201
    return client


def say(client, text, headers=APP, **body):
    return client.post("/v1/audio/speech", headers=headers, json={"voice": "alice", "input": text, "nfe_step": 2,
                                                                  **body})


def audit(client, **params):
    r = client.get("/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


@pytest.mark.slow  # concurrent requests
def test_one_entry_per_speech_delivered_under_concurrent_requests(tmp_path, backends, short_wav):
    client = service(tmp_path, backends, short_wav)
    try:
        consent = client.get("/v1/voices/alice").json()["consent"]["id"]
        wanted = {f"Sentence number {i} of the test.": fmt for i, fmt in
                  enumerate(["wav", "mp3", "flac", "opus", "aac", "pcm", "wav", "mp3"])}
        with ThreadPoolExecutor(8) as pool:
            whole = list(pool.map(lambda item: say(client, item[0], response_format=item[1]), wanted.items()))
            streamed = list(pool.map(lambda i: say(client, f"Streamed {i}.", stream=True), range(3)))
            events = say(client, "Events, one piece.", stream_format="sse")
            failed = [say(client, "No such voice.", voice="nobody"), say(client, "")]
        assert [r.status_code for r in whole + streamed + [events]] == [200] * 12
        assert [r.status_code for r in failed] == [404, 400]
        audio = b"".join(base64.b64decode(json.loads(line[6:])["audio"]) for line in events.text.split("\n\n")
                         if line.startswith("data: ") and '"speech.audio.delta"' in line)

        entries = audit(client)
        by_request = {e["request_id"]: e for e in entries}
        assert len(entries) == len(by_request) == 12  # nothing twice, nothing for the failed ones
        for response, (text, fmt) in zip(whole, wanted.items()):
            entry = by_request[response.headers["x-request-id"]]
            assert (entry["kind"], entry["format"], entry["key"], entry["voice"]) == ("speech", fmt, "app", "alice")
            assert entry["text_sha256"] == digest(text.encode()) and entry["output_sha256"] == digest(response.content)
            assert entry["consent_id"] == consent and entry["complete"] is True
        for response in streamed:
            entry = by_request[response.headers["x-request-id"]]
            assert entry["kind"] == "stream" and entry["output_sha256"] == digest(response.content)
        assert by_request[events.headers["x-request-id"]]["output_sha256"] == digest(audio)
        times = [datetime.fromisoformat(e["time"]) for e in entries]
        assert times == sorted(times)
    finally:
        client.__exit__(None, None, None)


def test_a_job_is_audited_once_under_its_owner_and_id(tmp_path, backends, short_wav):
    client = service(tmp_path, backends, short_wav)
    try:
        job = client.post("/v1/jobs", headers=APP, json={"voice": "alice", "input": "A job.", "nfe_step": 2}).json()
        for _ in range(600):
            if client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded":
                break
            time.sleep(0.05)
        result = client.get(f"/v1/jobs/{job['id']}/audio").content
        for _ in range(100):  # written just after the record says succeeded
            if entries := audit(client):
                break
            time.sleep(0.05)
        [entry] = entries
        assert (entry["kind"], entry["request_id"], entry["key"]) == ("job", job["id"], "app")
        assert entry["output_sha256"] == digest(result)
    finally:
        client.__exit__(None, None, None)


def test_only_admins_read_the_audit_by_voice_and_time(tmp_path, backends, short_wav):
    client = service(tmp_path, backends, short_wav)
    try:
        assert upload(client, "bob", short_wav, ref_text=SHORT_TEXT).status_code == 201
        first = say(client, "For alice.")
        assert say(client, "For bob.", voice="bob").status_code == 200
        assert_error(client.get("/v1/audit", headers=APP), 403, "insufficient_scope")
        assert_error(client.get("/v1/audit", headers={"Authorization": "Bearer guess"}), 401, "invalid_api_key")
        assert [e["voice"] for e in audit(client)] == ["alice", "bob"]
        [alice] = audit(client, voice="alice")
        assert alice["request_id"] == first.headers["x-request-id"]
        at = datetime.fromisoformat(alice["time"])
        assert audit(client, until=at.isoformat()) == []
        assert [e["voice"] for e in audit(client, since=at.isoformat(), until=(at + timedelta(microseconds=1))
                                          .isoformat())] == ["alice"]
        assert audit(client, since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00Z") == []
        backwards = client.get("/v1/audit", params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
        assert backwards.json()["entries"] == []
        wide = client.get("/v1/audit", params={"since": "2020-01-01T00:00:00Z"}).json()  # read as the last 366 days
        assert len(wide["entries"]) == 2
        assert datetime.fromisoformat(wide["until"]) - datetime.fromisoformat(wide["since"]) == timedelta(days=366)
        assert client.get("/v1/audit", params={"voice": "../x"}).status_code == 400
        # Days that do not exist, and other scripts' digits, are refused as the schema says; the
        # earliest and latest times there are, in any zone, are a range like any other.
        for no_time in ["2027-02-29", "9873-02-31", "2026-04-31", "1900-02-29", "0000-01-01", "\u0662026-01-01"]:
            refused = client.get("/v1/audit", params={"since": no_time})
            assert refused.status_code == 422 and refused.json()["error"]["param"] == "since", no_time
        assert audit(client, since="2028-02-29", until="2000-02-29T12:00") == []
        assert audit(client, since="0001-01-01T00:00+23:59", until="9999-12-31T23:59-23:59") == audit(client)
        first = client.get("/v1/audit", params={"limit": 1}).json()
        assert first["entries"] == audit(client)[:1] and first["truncated"] is True
    finally:
        client.__exit__(None, None, None)


@pytest.mark.s3
def test_entries_wait_out_a_store_outage_after_the_audio_was_sent(tmp_path, backends, short_wav, monkeypatch):
    """The store goes away after the responses were sent and before their entries were written (the
    writer's interval is an hour here); they are retried until it is back, and land once."""
    server = SeaweedFS(tmp_path / "weed")  # its own server: this test stops it
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    bucket = server.create_bucket()
    store = {"kind": "s3", "bucket": bucket, "endpoint_url": server.endpoint}
    hourly = {"flush_interval_s": 3600, "max_retry_delay_s": 1}
    client = service(tmp_path, backends, short_wav, store=store, audit=hourly)
    try:
        sent = [say(client, f"Before the outage, {i}.") for i in range(3)]
        assert [r.status_code for r in sent] == [200] * 3
        server.stop()
        assert_error(client.get("/v1/audit"), 503, "store_unavailable")  # it tried, and keeps them
        server.start()
        s3 = boto3.client("s3", **server.client_kwargs())
        deadline = time.monotonic() + 60
        while not s3.list_objects_v2(Bucket=bucket, Prefix="audit/").get("KeyCount"):  # the writer's own retry
            assert time.monotonic() < deadline, "the audit entries were never written"
            time.sleep(0.2)
        entries = audit(client)
        assert sorted(e["request_id"] for e in entries) == sorted(r.headers["x-request-id"] for r in sent)
    finally:
        client.__exit__(None, None, None)
        server.stop()


def entry(at: datetime, voice="alice", request_id="r1") -> AuditEntry:
    return AuditEntry(time=at, kind="speech", key=None, voice=voice, consent_id=None, model="f5-tts", format="wav",
                      text_sha256="0" * 64, output_sha256="1" * 64, request_id=request_id)


def test_a_batch_written_again_lands_once_and_days_are_read_across_midnight(tmp_path):
    store = AuditStore(LocalObjectStore(tmp_path))
    midnight = datetime(2026, 12, 2, tzinfo=timezone.utc)
    batch = [entry(midnight - timedelta(seconds=1), request_id="late"), entry(midnight, request_id="early")]
    store.append("writer-00000001", batch)
    store.append("writer-00000001", batch)  # its first answer was lost: tried again
    assert len(LocalObjectStore(tmp_path).list("audit/")) == 2  # one object per day
    found, more = store.read(midnight - timedelta(hours=1), midnight + timedelta(hours=1))
    assert [e.request_id for e in found] == ["late", "early"] and not more
    assert [e.request_id for e in store.read(midnight, midnight + timedelta(hours=1))[0]] == ["early"]


def test_an_audit_object_is_never_rewritten(tmp_path):
    objects = LocalObjectStore(tmp_path)
    store = AuditStore(objects)
    at = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)
    store.append("w-1", [entry(at, request_id="first")])
    [key] = objects.list("audit/")
    store.append("w-1", [entry(at, request_id="forged")])  # same key: refused by the store, kept as it was
    assert b"first" in objects.get(key).data and b"forged" not in objects.get(key).data


def test_a_stream_that_broke_off_is_audited_as_incomplete(tmp_path, backends, short_wav, dies_after_first_piece):
    client = service(tmp_path, backends, short_wav)
    try:
        body = {"voice": "alice", "input": "First sentence here. A second one follows.", "nfe_step": 2,
                "response_format": "pcm", "stream_format": "sse"}
        with client.stream("POST", "/v1/audio/speech", json=body, headers={**APP, "X-Request-ID": "cut-2"}) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1]["type"] == "error"
        audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
        [entry] = audit(client)
        assert entry["request_id"] == "cut-2" and entry["complete"] is False
        assert entry["output_sha256"] == digest(audio)  # what reached the client, no more
    finally:
        client.__exit__(None, None, None)

"""API keys with names, scopes and limits, in process over the real tiny models."""

import hashlib
import threading
import time

import pytest

from conftest import SHORT_TEXT
from test_api import assert_error, make_client, upload

ADMIN, SPEAKER, OTHER, LIMITED = "sk-admin-1", "sk-speak-1", "sk-speak-2", "sk-limited-1"
KEYS = [
    {"name": "ops", "key": ADMIN, "scopes": ["admin"]},
    {"name": "app", "key": "sha256:" + hashlib.sha256(SPEAKER.encode()).hexdigest(), "scopes": ["speak"]},
    {"name": "other-app", "key": OTHER, "scopes": ["speak"]},
    {"name": "slow", "key": LIMITED, "scopes": ["speak"], "requests_per_minute": 3},
]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(tmp_path, backends, short_wav):
    with make_client(tmp_path, backends, api_keys=KEYS) as client:  # `with`: the app's lifespan runs jobs
        client.headers.update(bearer(ADMIN))
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        yield client


def speak(client, key, **body):
    return client.post("/v1/audio/speech", headers=bearer(key),
                       json={"voice": "alice", "input": "Hello there.", "nfe_step": 2, **body})


def test_a_speak_key_speaks_and_lists_but_cannot_change_voices(client, short_wav):
    assert speak(client, SPEAKER).status_code == 200
    assert client.get("/v1/voices", headers=bearer(SPEAKER)).json()["voices"][0]["name"] == "alice"
    with open(short_wav, "rb") as f:
        created = client.post("/v1/voices", headers=bearer(SPEAKER), data={"name": "bob", "ref_text": SHORT_TEXT},
                              files={"file": ("b.wav", f)})
    assert_error(created, 403, "insufficient_scope")
    assert "admin" in created.json()["error"]["message"] and "app" in created.json()["error"]["message"]
    assert_error(client.delete("/v1/voices/alice", headers=bearer(SPEAKER)), 403, "insufficient_scope")
    assert_error(client.patch("/v1/voices/alice", headers=bearer(SPEAKER), json={"ref_text": "No."}), 403,
                 "insufficient_scope")
    assert_error(client.get("/v1/voices/alice/audio", headers=bearer(SPEAKER)), 403, "insufficient_scope")
    assert_error(client.get("/v1/status", headers=bearer(SPEAKER)), 403, "insufficient_scope")
    assert client.get("/v1/voices/alice").json()["ref_text"] == SHORT_TEXT  # untouched
    assert client.get("/v1/voices", headers=bearer(ADMIN)).json()["voices"][0]["name"] == "alice"


def test_an_admin_key_may_do_everything(client, short_wav):
    assert client.get("/v1/status").status_code == 200
    assert client.get("/v1/voices/alice/audio").status_code == 200
    assert client.delete("/v1/voices/alice").status_code == 204


def test_the_sha256_form_authenticates_and_wrong_keys_do_not(client):
    assert client.get("/v1/me", headers=bearer(SPEAKER)).json() == {"name": "app", "scopes": ["speak"]}
    assert client.get("/v1/me").json() == {"name": "ops", "scopes": ["admin"]}
    digest = "sha256:" + hashlib.sha256(SPEAKER.encode()).hexdigest()
    assert_error(client.get("/v1/me", headers=bearer(digest)), 401, "invalid_api_key")  # the hash is no key
    assert_error(client.get("/v1/voices", headers=bearer("sk-nobody")), 401, "invalid_api_key")
    assert_error(client.get("/v1/voices", headers={"Authorization": ""}), 401, "invalid_api_key")


def test_a_job_belongs_to_the_key_that_made_it(client):
    body = {"voice": "alice", "input": "Hello there.", "nfe_step": 2, "response_format": "wav"}
    job = client.post("/v1/jobs", headers=bearer(SPEAKER), json=body).json()
    theirs = client.post("/v1/jobs", headers=bearer(OTHER), json=body).json()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job['id']}", headers=bearer(SPEAKER)).json()["status"] not in ("succeeded",
                                                                                               "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/audio"):
        assert client.get(path, headers=bearer(SPEAKER)).status_code == 200
        assert_error(client.get(path, headers=bearer(OTHER)), 404, "job_not_found")  # as if it did not exist
        assert client.get(path).status_code == 200  # admin sees everyone's jobs
    assert_error(client.delete(f"/v1/jobs/{job['id']}", headers=bearer(OTHER)), 404, "job_not_found")
    mine = [j["id"] for j in client.get("/v1/jobs", headers=bearer(SPEAKER)).json()["data"]]
    everyone = [j["id"] for j in client.get("/v1/jobs").json()["data"]]
    assert mine == [job["id"]] and set(everyone) == {job["id"], theirs["id"]}
    assert client.get(f"/v1/jobs/{job['id']}", headers=bearer(SPEAKER)).json()["status"] == "succeeded"


def test_the_rate_limit_answers_429_with_retry_after_and_spares_other_keys(client):
    answers = [client.get("/v1/voices", headers=bearer(LIMITED)) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["Retry-After"]) >= 1 and "3 requests per minute" in refused.json()["error"]["message"]
    assert all(client.get("/v1/voices", headers=bearer(SPEAKER)).status_code == 200 for _ in range(6))
    assert_error(client.get("/v1/voices", headers=bearer(LIMITED)), 429, "rate_limit_exceeded")


@pytest.mark.slow
def test_the_concurrency_limit_counts_a_request_until_its_last_byte(tmp_path, backends, short_wav):
    keys = [{"name": "ops", "key": ADMIN}, {"name": "one-at-a-time", "key": SPEAKER, "scopes": ["speak"],
                                            "max_concurrent": 1}]
    client = make_client(tmp_path, backends, api_keys=keys)
    client.__enter__()  # one event loop for the stream and the request beside it
    client.headers.update(bearer(ADMIN))
    assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
    body = {"voice": "alice", "input": "Hello there. " * 30, "nfe_step": 16, "stream": True, "response_format": "pcm"}
    statuses = []

    def long_stream():
        with client.stream("POST", "/v1/audio/speech", headers=bearer(SPEAKER), json=body) as r:
            statuses.append(r.status_code)
            for _ in r.iter_bytes():
                pass

    thread = threading.Thread(target=long_stream)
    thread.start()
    while not statuses:
        time.sleep(0.01)
    refused = client.get("/v1/voices", headers=bearer(SPEAKER))
    thread.join(120)
    assert_error(refused, 429, "concurrency_limit_exceeded")
    assert client.get("/v1/voices", headers=bearer(SPEAKER)).status_code == 200  # the stream ended: free again


def test_plain_string_keys_stay_admin_keys(tmp_path, backends):
    """Configs of before scopes: a list of keys, each of which may do everything."""
    client = make_client(tmp_path, backends, api_keys=["sk-old-style"])
    assert client.get("/v1/me", headers=bearer("sk-old-style")).json() == {"name": "key-1", "scopes": ["admin"]}
    assert client.get("/v1/status", headers=bearer("sk-old-style")).status_code == 200


def test_no_keys_is_the_open_local_default(tmp_path, backends):
    client = make_client(tmp_path, backends)
    assert client.get("/v1/me").json() == {"name": None, "scopes": ["admin"]}
    assert client.get("/v1/status").status_code == 200


@pytest.mark.parametrize("keys, error", [
    ([{"name": "a", "key": "sk-1"}, {"name": "a", "key": "sk-2"}], "names must be unique"),
    ([{"name": "a", "key": "sha256:abc"}], "64 hex digits"),
    ([{"name": "a", "key": "sk-1", "scopes": ["root"]}], "scopes"),
])
def test_bad_key_configs_are_refused(keys, error):
    from pydantic import ValidationError

    from speech_service.config import ServiceSettings

    with pytest.raises(ValidationError) as err:
        ServiceSettings.model_validate({"api_keys": keys})
    assert error in str(err.value)

"""The voice store under concurrent writers and through an S3 outage, seen through the HTTP API.

Real threads against the FastAPI app on both stores (a directory, and SeaweedFS over boto3). The
models are a stub here: no test in this file transcribes (ref_text is always given) and synthesis
only needs to run after the voice was read from the store."""

import hashlib
import json
import threading
import time
from collections import Counter

import numpy as np
import pytest
from fastapi.testclient import TestClient

from speech_service import audio
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app
from speech_service.storage.objects import open_object_store

from conftest import SeaweedFS, espeak

CLIP_TEXTS = ["Hello there, this is the first voice.", "Good morning, a second speaker talks now."]


class StubBackends:
    async def synthesize(self, reference, text, options):
        return audio.Speech(np.zeros(12000, np.float32), 0.01)

    async def stream(self, reference, text, options):
        yield np.zeros(12000, np.float32)

    async def transcribe(self, audio, language):
        raise AssertionError("these tests always send ref_text")

    async def status(self):
        return {"deployments": {}}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clips")
    return [espeak(text, directory / f"clip{i}.wav").read_bytes() for i, text in enumerate(CLIP_TEXTS)]


def make_client(store: dict) -> TestClient:
    settings = ServiceSettings.model_validate({"store": store})
    client = TestClient(create_app(settings, StubBackends()))
    client.objects = open_object_store(settings.store)
    return client


@pytest.fixture
def client(store_config):
    with make_client(store_config) as client:
        yield client


def upload(client, name, clips, i, **fields):
    return client.post("/v1/voices", data={"name": name, "ref_text": CLIP_TEXTS[i], **fields},
                       files={"file": (f"clip{i}.wav", clips[i])})


def error_code(response) -> str | None:
    return response.json()["error"]["code"] if response.status_code >= 400 else None


def read_voice(client, name):
    """GET the record and the clip served beside it."""
    record, audio = client.get(f"/v1/voices/{name}"), client.get(f"/v1/voices/{name}/audio")
    return record, audio


def assert_record_matches_its_clip(client, name, uploaded: dict[str, str]):
    """`uploaded` maps each uploaded clip's sha256 (as the 201 answered) to the transcript sent with it."""
    record, clip = read_voice(client, name)
    assert record.status_code == 200 and clip.status_code == 200, (record.text, clip.text)
    voice = record.json()
    assert hashlib.sha256(clip.content).hexdigest() == voice["sha256"]
    assert uploaded[voice["sha256"]] == voice["ref_text"]  # the transcript uploaded with this clip


def assert_only_the_named_clip_is_left(client, name):
    keys = client.objects.list(f"voices/{name}/")
    clip = json.loads(client.objects.get(f"voices/{name}/voice.json").data)["clip"]
    assert keys == sorted([clip, f"voices/{name}/voice.json"]), keys


@pytest.mark.slow  # 50 rounds of racing writers
def test_two_writers_replacing_one_voice_never_tear_it(client, clips):
    first = upload(client, "alice", clips, 0)
    assert first.status_code == 201, first.text
    uploaded = {first.json()["sha256"]: CLIP_TEXTS[0]}
    statuses, read_problems = Counter(), Counter()
    writing = threading.Event()
    done = threading.Event()

    def reader():  # reads while the writers write
        while not done.is_set():
            if not writing.wait(0.05):
                continue
            for response in read_voice(client, "alice"):
                if response.status_code >= 500 or response.status_code == 409:
                    read_problems[f"{response.status_code} {error_code(response)}"] += 1

    watcher = threading.Thread(target=reader)
    watcher.start()
    started = time.monotonic()
    try:
        for _ in range(50):
            barrier = threading.Barrier(2)
            answers = [None, None]

            def write(i, barrier=barrier, answers=answers):
                barrier.wait()
                answers[i] = upload(client, "alice", clips, i, overwrite="true")

            writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
            writing.set()
            for t in writers:
                t.start()
            for t in writers:
                t.join()
            writing.clear()
            for i, answer in enumerate(answers):
                statuses[answer.status_code] += 1
                assert answer.status_code == 201, answer.text
                uploaded[answer.json()["sha256"]] = CLIP_TEXTS[i]
            assert_record_matches_its_clip(client, "alice", uploaded)  # writers stopped: must agree
    finally:
        done.set()
        watcher.join()
    elapsed = time.monotonic() - started
    assert statuses == {201: 100}
    assert len(uploaded) == 2
    assert_only_the_named_clip_is_left(client, "alice")
    # Readers beside the writers: never a 5xx; a clip replaced between the reads is re-read, so
    # no voice_changing either.
    assert read_problems == Counter(), read_problems
    print(f"100 concurrent replacing uploads in {elapsed:.1f} s")


@pytest.mark.slow
def test_three_simultaneous_creates_one_wins(client, clips):
    for round_ in range(5):
        name = f"new-{round_}"
        barrier, answers = threading.Barrier(3), []

        def create(i, name=name, barrier=barrier, answers=answers):
            barrier.wait()
            answers.append(upload(client, name, clips, i % 2))

        threads = [threading.Thread(target=create, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]
        assert [error_code(a) for a in answers if a.status_code == 409] == ["voice_exists"] * 2
        won = next(a for a in answers if a.status_code == 201).json()
        assert_record_matches_its_clip(client, name, {won["sha256"]: won["ref_text"]})
        assert_only_the_named_clip_is_left(client, name)


@pytest.mark.s3  # a SeaweedFS of its own, stopped under the service
def test_s3_outage_answers_503_and_tears_nothing(tmp_path, clips, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = SeaweedFS(tmp_path / "seaweedfs")  # its own server: this test stops it
    server.start()
    try:
        store = {"kind": "s3", "bucket": server.create_bucket(), "endpoint_url": server.endpoint}
        with make_client(store) as client:
            _outage(client, server, clips)
    finally:
        server.stop()


def _outage(client, server, clips):
    assert upload(client, "alice", clips, 0).status_code == 201
    before = client.get("/v1/voices/alice").json()
    speak = {"voice": "alice", "input": "Hello.", "response_format": "wav"}

    # Writers keep replacing the voice while S3 goes away under them.
    answers, stop_writing = Counter(), threading.Event()

    def writer(i):
        while not stop_writing.is_set():
            answers[upload(client, "alice", clips, i, overwrite="true").status_code] += 1

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in writers:
        t.start()
    time.sleep(1.0)
    server.stop(grace_s=1)
    time.sleep(1.0)
    stop_writing.set()
    for t in writers:
        t.join()
    assert set(answers) <= {201, 503} and answers[503] >= 2, answers

    calls = {
        "replace": lambda: upload(client, "alice", clips, 1, overwrite="true"),
        "create": lambda: upload(client, "bob", clips, 1),
        "get": lambda: client.get("/v1/voices/alice"),
        "audio": lambda: client.get("/v1/voices/alice/audio"),
        "list": lambda: client.get("/v1/voices"),
        "patch": lambda: client.patch("/v1/voices/alice", json={"ref_text": "Hello there."}),
        "delete": lambda: client.delete("/v1/voices/alice"),
        "speech": lambda: client.post("/v1/audio/speech", json=speak),
        "stream": lambda: client.post("/v1/audio/speech", json={**speak, "stream": True}),
    }
    for what, call in calls.items():
        started = time.monotonic()
        response = call()
        elapsed = time.monotonic() - started
        assert response.status_code == 503, (what, response.text)
        error = response.json()["error"]
        assert error["code"] == "store_unavailable" and "127.0.0.1" not in error["message"], (what, error)
        assert elapsed < 5, (what, elapsed)

    server.start()
    # Once up, SeaweedFS answers 500 for a few seconds while its volumes load (503 for us meanwhile).
    deadline = time.monotonic() + 60
    while client.get("/v1/voices/alice").status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    # Nothing half-written: every record names a clip that is there and matches it, the voice is
    # one of the uploads whole, and the voice that could not be created is not there.
    keys = client.objects.list("voices/")
    for key in keys:
        if key.endswith("/voice.json"):
            assert json.loads(client.objects.get(key).data)["clip"] in keys
    uploaded = {before["sha256"]: CLIP_TEXTS[0]}
    record = client.get("/v1/voices/alice").json()
    if record["sha256"] != before["sha256"]:
        uploaded[record["sha256"]] = CLIP_TEXTS[1] if record["ref_text"] == CLIP_TEXTS[1] else CLIP_TEXTS[0]
    assert record["ref_text"] in CLIP_TEXTS
    assert_record_matches_its_clip(client, "alice", uploaded)
    assert client.get("/v1/voices/bob").status_code == 404

    # And it all works again.
    assert client.post("/v1/audio/speech", json=speak).status_code == 200
    replaced = upload(client, "alice", clips, 1, overwrite="true")
    assert replaced.status_code == 201, replaced.text
    assert_record_matches_its_clip(client, "alice", {replaced.json()["sha256"]: CLIP_TEXTS[1]})
    assert upload(client, "bob", clips, 0).status_code == 201
    assert client.patch("/v1/voices/bob", json={"ref_text": "Hello there."}).status_code == 200

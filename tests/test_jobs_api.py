"""`/v1/jobs` over HTTP, in-process, on the real tiny engine (the backends of test_api.py)."""

import asyncio
import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from speech_service import audio
from speech_service.audio import uploads
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app

from conftest import LONG_TEXT, SHORT_TEXT, tiered
from test_api import assert_error, upload


@pytest.fixture
def client(store_config, backends, short_wav):
    settings = ServiceSettings.model_validate({"store": store_config})
    with TestClient(create_app(settings, backends)) as client:  # `with`: the app's lifespan runs the jobs
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        yield client


def wait_finished(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still {job['status']}: {job}")


@pytest.mark.parametrize("fmt, media_type", tiered([("wav", "audio/wav"), ("mp3", "audio/mpeg")], fast={"wav"}))
def test_a_job_runs_to_succeeded_and_its_audio_decodes(client, fmt, media_type):
    r = client.post("/v1/jobs", json={"voice": "alice", "input": LONG_TEXT, "response_format": fmt,
                                      "nfe_step": 2, "seed": 3})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded") and r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["voice"] == "alice" and job["response_format"] == fmt and job["input_chars"] == len(LONG_TEXT)

    job = wait_finished(client, job["id"])
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1 and job["error"] is None and job["audio_url"] == f"/v1/jobs/{job['id']}/audio"
    progress = job["progress"]
    assert progress["segments_total"] == progress["segments_done"] >= 2 and progress["audio_seconds"] > 5
    r = client.get(job["audio_url"])
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    wave = uploads.decode(r.content, max_seconds=600)  # ffmpeg reads it back at 24 kHz
    assert abs(len(wave) / audio.SAMPLE_RATE - progress["audio_seconds"]) < 1.5

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_error(client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert_error(client.get(job["audio_url"]), 404, "job_not_found")


@pytest.mark.slow  # holds a job mid-run
def test_audio_is_409_until_the_job_succeeds_and_cancel(client):
    body = {"voice": "alice", "input": LONG_TEXT * 2, "response_format": "wav", "nfe_step": 12}
    job = client.post("/v1/jobs", json=body).json()
    assert_error(client.get(f"/v1/jobs/{job['id']}/audio"), 409, "job_not_finished")
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    job = wait_finished(client, job["id"])
    progress = job["progress"]  # cancelled while queued (0 of 0) or between segments: never all done
    assert job["status"] == "cancelled" and progress["segments_done"] < max(progress["segments_total"], 1)
    assert_error(client.get(f"/v1/jobs/{job['id']}/audio"), 409, "job_not_finished")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_listing_pages_newest_first(client):
    ids = [client.post("/v1/jobs", json={"voice": "alice", "input": "Hi.", "nfe_step": 1,
                                         "response_format": "pcm"}).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[:0:-1] and page["has_more"] and page["last_id"] == ids[1]
    page = client.get("/v1/jobs", params={"limit": 2, "after": page["last_id"]}).json()
    assert [j["id"] for j in page["data"]] == ids[:1] and not page["has_more"]
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")


def test_bad_bodies_are_answered_at_submit(client):
    assert_error(client.post("/v1/jobs", json={"voice": "nobody", "input": "Hi."}), 404, "voice_not_found")
    assert_error(client.post("/v1/jobs", json={"voice": "alice", "input": " "}), 400, "empty_input")
    assert_error(client.post("/v1/jobs", json={"voice": "alice", "input": "x" * 5000}), 413, "input_too_long")
    assert_error(client.post("/v1/jobs", json={"voice": "alice", "input": "Hi.", "speed": 9}), 422,
                 "invalid_request")
    assert client.get("/v1/jobs").json()["data"] == []


def test_unknown_job_is_404(client):
    for path in ("/v1/jobs/job_0123456789abcdef0123", "/v1/jobs/whatever/audio"):
        assert_error(client.get(path), 404, "job_not_found")
    assert_error(client.delete("/v1/jobs/job_0123456789abcdef0123"), 404, "job_not_found")


def test_jobs_outlive_the_app_that_ran_them(store_config, backends, short_wav):
    settings = ServiceSettings.model_validate({"store": store_config})
    with TestClient(create_app(settings, backends)) as first:
        upload(first, "alice", short_wav, ref_text=SHORT_TEXT)
        job = first.post("/v1/jobs", json={"voice": "alice", "input": "Hello.", "response_format": "flac"}).json()
        job = wait_finished(first, job["id"])
    with TestClient(create_app(settings, backends)) as second:  # a restarted ingress, same store
        assert second.get(f"/v1/jobs/{job['id']}").json() == job
        r = second.get(f"/v1/jobs/{job['id']}/audio")
        assert r.headers["content-type"] == "audio/flac"
        assert len(uploads.decode(r.content, max_seconds=600)) > 0.3 * audio.SAMPLE_RATE


@pytest.mark.slow  # a long job and its whole response
def test_a_jobs_audio_is_the_speech_response_made_durable(client, backends):
    """Same body, same seed: the job speaks the whole response's plan, segment by segment, and
    joins it as the whole response does."""
    body = {"voice": "alice", "input": LONG_TEXT, "response_format": "wav", "nfe_step": 2, "seed": 11}
    whole = client.post("/v1/audio/speech", json=body)
    assert whole.status_code == 200, whole.text
    job = wait_finished(client, client.post("/v1/jobs", json=body).json()["id"])
    plan = backends.synthesizer.plans[-1]
    assert job["status"] == "succeeded" and job["progress"]["segments_total"] == len(plan.segments) >= 2
    # The samples, not the bytes: each file carries its own Content Credentials (a C2PA chunk).
    spoken = sf.read(io.BytesIO(client.get(job["audio_url"]).content), dtype="int16")[0].astype(int)
    expected = sf.read(io.BytesIO(whole.content), dtype="int16")[0].astype(int)
    assert len(spoken) == len(expected) and np.abs(spoken - expected).max() <= 1


@pytest.mark.slow  # a long job
def test_a_job_never_splits_a_title_from_its_name(client, backends):
    text = " ".join(["We met Dr. Smith at the station and talked about the long journey home.",
                     "Bring something small, e.g. this apple, and a book to read on the way."] * 4)
    job = wait_finished(client, client.post("/v1/jobs", json={
        "voice": "alice", "input": text, "response_format": "wav", "nfe_step": 2}).json()["id"])
    segments = [segment.text for segment in backends.synthesizer.plans[-1].segments]
    assert job["status"] == "succeeded" and len(segments) >= 2
    # Spoken as words ("Doctor Smith", "for example this"), each whole inside one segment.
    assert sum(s.count("Doctor Smith") for s in segments) == 4
    assert sum(s.count("for example this") for s in segments) == 4


@pytest.mark.slow  # holds jobs mid-run
def test_a_keys_queued_and_running_jobs_count_against_its_max_concurrent(tmp_path, backends, short_wav, monkeypatch):
    keys = [{"name": "ops", "key": "sk-ops", "scopes": ["admin"]},
            {"name": "app", "key": "sk-app", "scopes": ["speak"], "max_concurrent": 2}]
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, "api_keys": keys})
    opened, segment = threading.Event(), backends.synthesize_segment

    async def held_segment(*args):  # the Synthesizer is slow: the jobs stay running meanwhile
        while not opened.is_set():
            await asyncio.sleep(0.01)
        return await segment(*args)

    monkeypatch.setattr(backends, "synthesize_segment", held_segment)
    body = {"voice": "alice", "input": "Hello there.", "response_format": "pcm", "nfe_step": 1}
    with TestClient(create_app(settings, backends), headers={"Authorization": "Bearer sk-app"}) as client:
        client.headers["Authorization"] = "Bearer sk-ops"  # an admin makes the voice
        assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
        client.headers["Authorization"] = "Bearer sk-app"
        accepted = [client.post("/v1/jobs", json=body) for _ in range(2)]
        assert [r.status_code for r in accepted] == [202, 202]
        refused = client.post("/v1/jobs", json=body)
        assert_error(refused, 429, "concurrency_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
        assert "has 2 jobs queued or running" in refused.json()["error"]["message"]
        assert "max_concurrent: 2" in refused.json()["error"]["message"]
        assert len(client.get("/v1/jobs").json()["data"]) == 2  # the refused job was never made
        opened.set()
        assert [wait_finished(client, r.json()["id"])["status"] for r in accepted] == ["succeeded"] * 2
        assert client.post("/v1/jobs", json=body).status_code == 202

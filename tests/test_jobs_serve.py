"""Jobs end to end on Ray Serve (config/serve.yaml, tiny offline models, a logical GPU): a job runs
to the end; a Synthesizer replica killed under a job and an Ingress replica killed under a job do
not leave it stuck; records and audio outlive the ingress."""

import logging
import os
import signal
import time

import httpx
import pytest
from ray import serve

from conftest import (
    LONG_TEXT,
    SHORT_TEXT,
    add_voice,
    serve_config,
    start_serve,
    stop_serve,
    use_tiny_models,
)

pytestmark = pytest.mark.ray

logger = logging.getLogger(__name__)
APP = "tts"
LEASE_S = 4.0


@pytest.fixture(scope="module")
def base_url(offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("jobs-store"))
    config["applications"][0]["args"]["jobs"] = {
        "lease_s": LEASE_S, "sweep_interval_s": 1, "retry_delay_s": 1, "max_attempts": 3, "segment_chars": 120}
    d = use_tiny_models(config, offline_models)
    d["Synthesizer"]["autoscaling_config"].update(downscale_delay_s=600, downscale_to_zero_delay_s=600)
    yield start_serve(config)
    stop_serve()


@pytest.fixture(scope="module")
def http(base_url, short_wav):
    with httpx.Client(base_url=base_url, timeout=120) as client:
        add_voice(client, "alice", short_wav, SHORT_TEXT)
        yield client


def job(http, job_id) -> dict:
    r = http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(http, job_id, until, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = job(http, job_id)
        if until(current):
            return current
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {current}")


def finished(j: dict) -> bool:
    return j["status"] not in ("queued", "running")


def mid_job(j: dict) -> bool:
    assert j["status"] in ("queued", "running"), j  # it must still be working when we strike
    return j["status"] == "running" and j["progress"]["segments_done"] >= 1


def long_job(http) -> str:
    # Many segments at twice the profile's steps: seconds of work, so the kill lands mid-job.
    r = http.post("/v1/jobs", json={"voice": "alice", "input": LONG_TEXT * 2, "response_format": "wav",
                                    "nfe_step": 8, "seed": 1})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_a_job_succeeds_and_its_audio_decodes(http):
    r = http.post("/v1/jobs", json={"voice": "alice", "input": LONG_TEXT, "response_format": "mp3"})
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    done = wait_job(http, r.json()["id"], finished, 180, "the job to finish")
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    audio = http.get(done["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
    from speech_service.audio import SAMPLE_RATE
    from speech_service.audio.uploads import decode

    assert abs(len(decode(audio.content, max_seconds=600)) / SAMPLE_RATE - done["progress"]["audio_seconds"]) < 1.5


def test_unknown_job_is_404(http):
    r = http.get("/v1/jobs/job_0123456789abcdef0123")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert http.get("/v1/jobs/nope/audio").status_code == 404


def test_a_job_survives_its_synthesizer_replica_being_killed(http):
    synthesizer = serve.get_deployment_handle("Synthesizer", APP)
    before = synthesizer.info.remote().result(timeout_s=120)
    job_id = long_job(http)
    wait_job(http, job_id, mid_job, 120, "the job to be mid-way")
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()

    done = wait_job(http, job_id, finished, 300, "the job to end after the kill")
    logger.info("Synthesizer killed: job %s %.1f s later; previous attempt: %s", done["status"],
                time.monotonic() - killed_at, done["last_error"])
    assert done["status"] == "succeeded", done
    # The call that died is sent again: by the ingress's handle wrapper (one retry, within the
    # attempt), or, should the new replica die too, by the job as a second attempt.
    assert done["attempts"] == 1 or done["last_error"]["code"] in ("synthesis_failed", "synthesizer_unavailable"), done
    assert synthesizer.info.remote().result(timeout_s=60)["pid"] != before["pid"]  # Serve replaced it
    r = http.get(done["audio_url"])
    assert r.status_code == 200 and len(r.content) > 44


def test_jobs_survive_an_ingress_restart(http):
    ingress = serve.get_deployment_handle("Ingress", APP)
    done_before = [j for j in http.get("/v1/jobs").json()["data"] if j["status"] == "succeeded"]
    assert done_before
    job_id = long_job(http)
    wait_job(http, job_id, mid_job, 120, "the job to be mid-way")
    pid = ingress.info.remote().result(timeout_s=30)["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    deadline = time.monotonic() + 120  # until Serve has a new ingress replica answering
    while True:
        try:
            if http.get("/healthz", timeout=5).status_code == 200 and \
                    ingress.info.remote().result(timeout_s=10)["pid"] != pid:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "the ingress did not come back"
        time.sleep(1)

    for old in done_before:  # finished jobs and their audio are still served
        assert job(http, old["id"])["status"] == "succeeded"
        assert http.get(old["audio_url"]).status_code == 200
    # The running job lost its runner: the new ingress's sweep takes it over once the lease lapses.
    logger.info("Ingress killed: serving again %.1f s later", time.monotonic() - killed_at)
    done = wait_job(http, job_id, finished, 300, "the orphaned job to end")
    logger.info("Ingress killed: job %s %.1f s later", done["status"], time.monotonic() - killed_at)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert http.get(done["audio_url"]).status_code == 200

"""Crashes, overload, timeouts, unplaceable replicas and live reconfiguration, over real HTTP against
config/serve.yaml on a local Ray cluster (two logical GPUs, the tiny offline models).

One cluster holds four copies of the application that differ only in the settings under test:
`tts` as shipped, `tight` with a queue of one, `nocap` and `slow` whose Synthesizer asks for a
resource no node has (the first gives up on capacity quickly, the second runs into its timeout)."""

import copy
import io
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import soundfile as sf
from ray import serve

from deployments import local_cluster
from deployments.serve_state import unmet_demand
from speech_service.errors import Overloaded

from conftest import (
    LONG_TEXT,
    SHORT_TEXT,
    add_voice,
    deployments,
    serve_config,
    start_serve,
    stop_serve,
    use_tiny_models,
)

pytestmark = pytest.mark.ray

MEDIUM_TEXT = ("The morning train left the station at seven. Passengers read newspapers and drank coffee. "
               "Outside the window, fields of wheat moved in the wind.")
UNPLACEABLE = {"num_cpus": 0.5, "num_gpus": 0, "resources": {"no_such_node": 1}}


def app_copy(base: dict, name: str, limits: dict | None = None) -> dict:
    app = copy.deepcopy(base)
    app["name"], app["route_prefix"] = name, f"/{name}"
    app["args"]["limits"].update(limits or {})
    return app


@pytest.fixture(scope="module")
def config(offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("resilience-store"))
    base = config["applications"][0]
    use_tiny_models(config, offline_models)

    tight = app_copy(base, "tight")
    synth = {x["name"]: x for x in tight["deployments"]}["Synthesizer"]
    synth.update(max_ongoing_requests=1, max_queued_requests=1,
                 backpressure_config={"status_code": 503, "retry_after_s": 7})
    synth["autoscaling_config"].update(min_replicas=1, max_replicas=1)

    unplaceable = []
    for name, limits in (("nocap", {"capacity_wait_s": 2, "request_timeout_s": 120}),
                         ("slow", {"capacity_wait_s": 120, "request_timeout_s": 2})):
        app = app_copy(base, name, limits)
        synth = {x["name"]: x for x in app["deployments"]}["Synthesizer"]
        synth["ray_actor_options"] = dict(UNPLACEABLE)
        # Its replica is never placed: deleting the app would wait the whole graceful shutdown for it.
        synth["graceful_shutdown_timeout_s"] = 1
        unplaceable.append(app)
    config["applications"] += [tight, *unplaceable]
    return config


@pytest.fixture(scope="module")
def base_url(config):
    url = start_serve(config)  # the shared cluster's two GPUs: one each for `tts` and `tight`
    deadline = time.time() + 300
    while {a.status for a in serve.status().applications.values()} != {"RUNNING"}:
        assert time.time() < deadline, "the applications did not start"
        time.sleep(1)
    yield url
    stop_serve()


@pytest.fixture(scope="module")
def http(base_url, short_wav):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        add_voice(client, "alice", short_wav, SHORT_TEXT)  # no Transcriber call; all apps share the store
        yield client


def synthesizer(app: str = "tts"):
    return serve.get_deployment_handle("Synthesizer", app)


def assert_json_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    return error


def test_unmet_demand_names_what_no_node_offers():
    cpu_node = {"CPU": 2.0, "memory": 8e9}
    assert unmet_demand({"CPU": 2.0, "GPU": 1.0}, [cpu_node]) == {"GPU": 1.0}
    assert unmet_demand({"CPU": 2.0}, [cpu_node]) == {}
    # Each part exists, but never on one node: the whole demand is unmet.
    assert unmet_demand({"CPU": 2.0, "GPU": 1.0}, [cpu_node, {"CPU": 1.0, "GPU": 1.0}]) == {"CPU": 2.0, "GPU": 1.0}
    assert Overloaded("full", retry_after_s=6.6).headers == {"Retry-After": "7"}


def test_killed_synthesizer_mid_request_is_retried_and_a_started_stream_breaks_off_incomplete(http):
    before = synthesizer().info.remote().result(timeout_s=300)  # wakes the replica
    # More steps over a long text: seconds of work, so the kill lands while it is in flight.
    body = {"voice": "alice", "input": LONG_TEXT, "seed": 3, "response_format": "wav", "nfe_step": 12}
    answers: dict = {}

    with http.stream("POST", "/v1/audio/speech", json={"voice": "alice", "input": LONG_TEXT, "stream": True,
                                                       "response_format": "pcm"}) as stream:
        assert stream.status_code == 200
        pieces = stream.iter_bytes()
        first = next(pieces)  # the replica is busy with the later segments now
        request = threading.Thread(target=lambda: answers.update(r=http.post("/v1/audio/speech", json=body)))
        request.start()
        time.sleep(0.5)
        assert request.is_alive()
        os.kill(before["pid"], signal.SIGKILL)
        # The response ends without its last chunk: the client learns its audio is a prefix.
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(pieces)
    assert len(first) > 0

    request.join(600)
    r = answers["r"]
    assert r.status_code == 200, r.text  # retried on the replica Serve started in the dead one's place
    again = http.post("/v1/audio/speech", json=body)
    assert again.status_code == 200, again.text
    # The retried request is the seeded speech, whole (the samples: each file has its own credentials).
    assert sf.read(io.BytesIO(r.content), dtype="int16")[0].tolist() == \
        sf.read(io.BytesIO(again.content), dtype="int16")[0].tolist()
    after = synthesizer().info.remote().result(timeout_s=300)
    assert after["pid"] != before["pid"]


def test_user_config_change_reconfigures_the_running_replica(http, config):
    # The cross-fade between segments is a sampling default whose effect shows in the length of
    # speech with several segments (the tiny random model sounds alike at any step count).
    def speak(**extra) -> bytes:
        r = http.post("/v1/audio/speech", json={"voice": "alice", "input": LONG_TEXT, "seed": 5,
                                                "response_format": "pcm", **extra})
        assert r.status_code == 200, r.text
        return r.content

    old_default, explicit = speak(), speak(cross_fade_duration=0.6)
    assert old_default != explicit
    before = synthesizer().info.remote().result(timeout_s=300)
    assert before["defaults"]["cross_fade_duration"] == 0.15

    changed = copy.deepcopy(config)
    deployments(changed)["Synthesizer"]["user_config"]["defaults"] = {"nfe_step": 4, "cross_fade_duration": 0.6}
    local_cluster.apply(changed)
    deadline = time.time() + 120
    while serve.status().applications["tts"].deployments["Synthesizer"].status != "HEALTHY" \
            or synthesizer().info.remote().result(timeout_s=300)["defaults"]["cross_fade_duration"] != 0.6:
        assert time.time() < deadline, "the new default was not applied"
        time.sleep(0.5)

    after = synthesizer().info.remote().result(timeout_s=300)
    assert (after["actor_id"], after["pid"]) == (before["actor_id"], before["pid"])  # the same replica
    assert speak() == explicit  # requests without cross_fade_duration now use the new default


def test_full_queue_answers_503_with_retry_after(http):
    body = {"voice": "alice", "input": MEDIUM_TEXT, "response_format": "pcm", "nfe_step": 8}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http.post("/tight/v1/audio/speech", json=body), range(6)))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    refused = [r for r in answers if r.status_code == 503]
    assert refused, statuses  # one runs, one waits, the rest are turned away
    for r in refused:
        assert_json_error(r, 503, "overloaded")
        assert r.headers["Retry-After"] == "7"  # from the deployment's backpressure_config


def test_unplaceable_synthesizer_answers_capacity_unavailable_within_the_wait(http):
    started = time.time()
    r = http.post("/nocap/v1/audio/speech", json={"voice": "alice", "input": "Hello."})
    elapsed = time.time() - started
    error = assert_json_error(r, 503, "capacity_unavailable")
    assert "no node offers {'no_such_node': 1.0}" in error["message"]
    assert int(r.headers["Retry-After"]) > 0
    assert 2 <= elapsed < 30
    status = http.get("/nocap/v1/status").json()["deployments"]
    assert "no node offers {'no_such_node': 1.0}" in status["Synthesizer"]["waiting_for"]
    assert status["Transcriber"]["waiting_for"] is None


def test_request_timeout_answers_504_for_whole_and_streamed_speech(http):
    for stream in (False, True):
        started = time.time()
        r = http.post("/slow/v1/audio/speech", json={"voice": "alice", "input": "Hello.", "stream": stream})
        error = assert_json_error(r, 504, "request_timeout")
        assert "limits.request_timeout_s" in error["message"]
        assert time.time() - started < 30

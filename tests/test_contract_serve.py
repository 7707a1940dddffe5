"""The contract on a real Serve deployment (config/serve.yaml, tiny offline models): request ids
through the proxy, the replicas and their log files; our metrics on Ray's Prometheus endpoint."""

import re
import time

import httpx
import pytest

from conftest import SHARED_CLUSTER, serve_config, start_serve, stop_serve, use_tiny_models

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def served(offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("serve-store"))
    logs = tmp_path_factory.mktemp("serve-logs")
    config["applications"][0]["logging_config"] = {"logs_dir": str(logs), "encoding": "TEXT"}
    use_tiny_models(config, offline_models)
    base_url = start_serve(config)
    with httpx.Client(base_url=base_url, timeout=300) as client:
        yield client, logs, f"http://127.0.0.1:{SHARED_CLUSTER.metrics_port}/metrics"
    stop_serve()


@pytest.fixture(scope="module")
def http(served, short_wav):
    client = served[0]
    with open(short_wav, "rb") as f:  # no transcript: the Transcriber transcribes it
        assert client.post("/v1/voices", data={"name": "alice"}, files={"file": f}).status_code == 201
    return client


def speak(http, request_id=None, **body):
    headers = {"X-Request-ID": request_id} if request_id else {}
    return http.post("/v1/audio/speech", headers=headers,
                     json={"voice": "alice", "input": "Hello there.", "response_format": "pcm", **body})


def test_every_response_carries_one_request_id(http):
    for r in (http.get("/healthz"), http.get("/v1/voices/nobody"), http.put("/v1/voices"), speak(http)):
        assert len(r.headers.get_list("x-request-id")) == 1, r.headers
    ours = {http.get("/v1/voices").headers["x-request-id"] for _ in range(3)}
    assert len(ours) == 3
    assert http.get("/v1/voices/nobody", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
    with http.stream("POST", "/v1/audio/speech", headers={"X-Request-ID": "stream-2"},
                     json={"voice": "alice", "input": "Hello there.", "stream": True}) as r:
        assert r.status_code == 200 and r.headers.get_list("x-request-id") == ["stream-2"]


def replica_log(logs, deployment: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in logs.glob(f"replica_*{deployment}*.log"))


def test_request_ids_reach_the_replicas_and_their_logs(http, served):
    logs = served[1]
    failed = speak(http, request_id="trace-me-404", voice="nobody")
    assert failed.status_code == 404 and failed.json()["error"]["message"].endswith("(request id: trace-me-404)")
    assert speak(http, request_id="trace-me-200").status_code == 200
    deadline = time.time() + 30
    while time.time() < deadline:
        ingress, synthesizer = replica_log(logs, "Ingress"), replica_log(logs, "Synthesizer")
        if "trace-me-404" in ingress and "trace-me-200" in synthesizer:
            break
        time.sleep(0.5)
    failure = [line for line in ingress.splitlines() if "trace-me-404" in line]
    assert any("404 voice_not_found" in line for line in failure), ingress[-3000:]
    assert "trace-me-200" in synthesizer, synthesizer[-3000:]  # carried through the handle


OUR_METRICS = ["ray_speech_requests_total", "ray_speech_audio_seconds_total", "ray_speech_real_time_factor_count",
               "ray_speech_time_to_first_audio_seconds_count", "ray_speech_queue_wait_seconds_count",
               "ray_speech_cold_starts_total", "ray_speech_cold_start_seconds_count", "ray_speech_transcriptions_total"]


def metric_totals(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if match := re.match(r"^(ray_speech_\w+?)(\{.*\})? ([0-9.eE+-]+)$", line):
            totals[match[1]] = totals.get(match[1], 0) + float(match[3])
    return totals


def test_our_metrics_reach_prometheus(http, served):
    for stream in (False, True, False):
        assert speak(http, stream=stream).status_code == 200
    deadline, totals = time.time() + 90, {}
    while time.time() < deadline:
        totals = metric_totals(httpx.get(served[2], timeout=10).text)
        if all(totals.get(name, 0) > 0 for name in OUR_METRICS):
            break
        time.sleep(2)
    assert {name: totals.get(name, 0) for name in OUR_METRICS if totals.get(name, 0) <= 0} == {}
    text = httpx.get(served[2], timeout=10).text
    assert re.search(r'ray_speech_requests_total\{[^}]*route="/v1/audio/speech"[^}]*status="200"', text), text[:2000]


def test_the_access_log_names_an_unknown_path_as_it_was_asked_for(http, served):
    assert http.get("/v1/embeddings", headers={"X-Request-ID": "unknown-path-1"}).status_code == 404
    assert http.put("/v1/voices").status_code == 405  # a known path, another method: still Starlette's 405
    deadline = time.time() + 30
    while time.time() < deadline:
        lines = [line for line in replica_log(served[1], "Ingress").splitlines() if "unknown-path-1" in line]
        if any("GET /v1/embeddings 404" in line for line in lines):
            break
        time.sleep(0.5)
    assert any("GET /v1/embeddings 404" in line for line in lines), lines

"""End to end over real HTTP against config/serve.yaml deployed on a local Ray cluster with one
logical GPU, the tiny offline models in the Synthesizer's and Transcriber's user_config."""

import base64
import copy
import io
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf
from ray import serve

from deployments import local_cluster
from speech_service.audio import encoding
from speech_service.config import SynthesisOptions

from conftest import (
    LONG_TEXT,
    SHORT_TEXT,
    add_voice,
    deployments,
    engine_stream,
    serve_config,
    server_timing,
    start_serve,
    stop_serve,
    use_tiny_models,
)

pytestmark = pytest.mark.ray

APP = "serve"  # its own name: test_health_and_status_do_not_wake_the_models counts replicas


@pytest.fixture(scope="module")
def config(offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("serve-store"), APP)
    d = use_tiny_models(config, offline_models, cpu_threads=2)  # the replica's 0.5 CPU would give 1
    # Both stay up once started: no test pays a second cold start, and the Transcriber's call counter
    # is one replica's. The last test shortens the Synthesizer's delays to see it rest at zero.
    for name in ("Synthesizer", "Transcriber"):
        d[name]["autoscaling_config"].update(downscale_delay_s=600, downscale_to_zero_delay_s=600)
    return config


@pytest.fixture(scope="module")
def base_url(config):
    yield start_serve(config)
    stop_serve()


@pytest.fixture(scope="module")
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        yield client


def running_replicas(deployment: str) -> int:
    status = serve.status().applications[APP].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_health_and_status_do_not_wake_the_models(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    for _ in range(3):
        status = http.get("/v1/status").json()
    synth = status["deployments"]["Synthesizer"]
    assert synth["model"] == "f5-tiny" and synth["replicas"] == {}
    assert status["deployments"]["Transcriber"]["replicas"] == {}
    assert status["cold_starts"] == {}  # nothing started yet
    assert running_replicas("Synthesizer") == 0 and running_replicas("Transcriber") == 0


def test_http_goes_through_haproxy_to_the_ingress(base_url, http):
    """config/ray.env's data plane: HAProxy, not Serve's Python proxy, listens on the service port."""
    port = int(base_url.rsplit(":", 1)[1])
    listeners = {c.pid for c in psutil.net_connections("tcp")
                 if c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    assert listeners and {psutil.Process(pid).name() for pid in listeners} == {"haproxy"}
    assert http.get("/healthz").json() == {"status": "ok"}


def test_an_endless_chunked_body_through_haproxy_is_refused_near_its_limit(base_url):
    """Serve's HAProxy streams a body to the Ingress: the app's own count (1 MB for a speech body)
    refuses a chunked body that never ends, and the connection closes, so the client stops sending
    long before the 200 MB it would."""
    sent, chunk = 0, b"x" * 65536

    def endless():
        nonlocal sent
        while sent < 200 * 2**20:
            sent += len(chunk)
            yield chunk

    try:
        response = httpx.post(f"{base_url}/v1/audio/speech", content=endless(),
                              headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    except (httpx.WriteError, httpx.RemoteProtocolError):
        pass  # answered and closed while the client was still sending: refused all the same
    assert sent < 32 * 2**20, sent


def test_long_recording_with_full_transcript_is_clipped_transcribed_and_speaks(http, long_wav):
    voice = add_voice(http, "alice", long_wav, LONG_TEXT)
    assert voice["original_duration_s"] > 20 and voice["duration_s"] <= 12.05
    assert voice["clipped"] is True and voice["ref_text_source"] == "asr"
    assert "train" in voice["ref_text"].lower() and len(voice["ref_text"]) < 0.75 * len(LONG_TEXT)

    r = http.post("/v1/audio/speech", json={"model": "f5-tts", "voice": "alice", "response_format": "wav",
                                            "input": "Good evening. " + LONG_TEXT})
    assert r.status_code == 200, r.text
    wave, sr = sf.read(io.BytesIO(r.content))
    assert sr == 24000 and len(wave) / sr > 10
    timing = server_timing(r)  # measured in the replica, through the Ingress and HTTP
    assert 0 < timing["model"] <= timing["total"]


def test_synthesis_makes_no_transcriber_calls(http):
    transcriber = serve.get_deployment_handle("Transcriber", APP)
    before = transcriber.stats.remote().result()
    assert before["calls"] >= 1  # the upload above was transcribed
    for text in ["One.", "Two sentences here. And another.", "Three, four, five."]:
        r = http.post("/v1/audio/speech", json={"voice": "alice", "input": text, "response_format": "pcm"})
        assert r.status_code == 200, r.text
    assert transcriber.stats.remote().result()["calls"] == before["calls"]
    assert running_replicas("Transcriber") == 1  # the same replica counted both times


def test_synthesizer_holds_a_logical_gpu_and_runs_on_the_cpu(http):
    info = serve.get_deployment_handle("Synthesizer", APP).info.remote().result()
    assert info["cuda_visible_devices"] in ("0", "1")  # Ray gave the replica one of the cluster's two GPUs
    assert info["device"] == "cpu"  # torch sees no CUDA device here, and the engine noticed
    assert info["cpu_threads"] == 2  # user_config cpu_threads, not Ray's one thread for 0.5 CPU


def test_status_reports_the_last_cold_start_of_each_started_deployment(http):
    cold_starts = http.get("/v1/status").json()["cold_starts"]  # both have served requests above
    assert set(cold_starts) == {"Synthesizer", "Transcriber"}
    synth = cold_starts["Synthesizer"]
    assert {"worker_start", "imports", "fetch", "weights", "warm_up", "other"} == set(synth["phases"])
    assert "warm_up" in cold_starts["Transcriber"]["phases"]
    for record in cold_starts.values():
        assert record["replica"] and record["ready_at"] > record["process_started_at"]
        assert sum(record["phases"].values()) == pytest.approx(record["total_s"], abs=0.01)


def test_a_stream_through_the_handle_is_the_engines_own_stream(http, engine):
    """Pieces cross the handle and the Ingress's encoder without loss, repetition or reordering: the
    same samples as the engine's own stream in this process, to within float rounding."""
    text = "One sentence first. Then a second one. A third to end."
    knobs = {"nfe_step": 4, "cfg_strength": 2.0, "sway_sampling_coef": -1.0, "cross_fade_duration": 0.15,
             "speed": 1.0, "seed": 11}
    body = {"voice": "alice", "input": text, "response_format": "pcm", "stream": True, **knobs}
    with http.stream("POST", "/v1/audio/speech", json=body) as r:
        assert r.status_code == 200
        streamed = np.frombuffer(b"".join(r.iter_bytes()), np.int16).astype(int)
    clip, _ = sf.read(io.BytesIO(http.get("/v1/voices/alice/audio").content), dtype="float32")
    pieces = list(engine_stream(engine, clip, http.get("/v1/voices/alice").json()["ref_text"], text,
                                SynthesisOptions(**knobs)))
    expected = np.frombuffer(encoding.to_pcm16(np.concatenate(pieces)), np.int16).astype(int)
    assert len(pieces) >= 2 and len(streamed) == len(expected)
    assert np.abs(streamed - expected).max() <= 2


def test_a_replica_prepares_a_voice_clip_once_and_is_sent_it_only_when_it_lacks_it(http, short_wav):
    add_voice(http, "dora", short_wav, SHORT_TEXT)
    synthesizer = serve.get_deployment_handle("Synthesizer", APP)
    body = {"voice": "dora", "input": "Hello there.", "response_format": "pcm", "seed": 4}
    first = http.post("/v1/audio/speech", json=body)  # named only, refused, sent again with the clip
    cache = synthesizer.info.remote().result()["reference_cache"]
    again = http.post("/v1/audio/speech", json=body)
    after = synthesizer.info.remote().result()["reference_cache"]
    assert first.status_code == again.status_code == 200 and first.content == again.content
    assert after["prepared"] == cache["prepared"] >= 1 and after["hits"] == cache["hits"] + 1
    # The miss is routine: answered, not logged by Serve as a failed request with its traceback.
    assert "ReferenceMissing" not in replica_logs("Synthesizer")


def replica_logs(deployment: str) -> str:
    """What the deployment's replicas logged in this Ray session (Ray's default log directory)."""
    logs = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs" / "serve"
    return "".join(path.read_text(errors="replace") for path in logs.glob(f"replica_{APP}_{deployment}_*.log"))


def test_openai_client(base_url, http):
    import openai  # here: collection imports every module, of the tiers that skip this one too

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed")
    speech = client.audio.speech.create(model="tts-1", voice="alice", input="Hello from the client.",
                                        response_format="wav")
    wave, sr = sf.read(io.BytesIO(speech.content))
    assert sr == 24000 and len(wave) > 0.3 * sr
    # OpenAI's server-sent events: base64 audio deltas, then the usage.
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alice", input="Hello from the client. Once more.", response_format="pcm",
            stream_format="sse") as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) > 0.3 * 2 * sr and events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["output_tokens"] == len(pcm) // 2 // 256


def test_timings_and_the_check_through_serve_in_a_stream_and_a_job(base_url, http):
    """The Synthesizer's segments heard by the Transcriber deployment: a stream's events in order,
    and a job that keeps its captions and its check."""
    import openai  # here, not at collection (see test_openai_client)

    text = "It cost $5.20. Then he left."
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed")
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alice", input=text, response_format="pcm", stream_format="sse",
            extra_body={"timestamps": "word", "quality": {"retries": 1}, "seed": 4}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.delta" and kinds[-1] == "speech.audio.done"
    timings = [n for n, kind in enumerate(kinds) if kind == "speech.audio.timestamps"]
    assert len(timings) == 2 and all("speech.audio.delta" in kinds[a + 1:b] for a, b in zip([-1, *timings], timings))
    words = [w for n in timings for w in events[n]["words"]]
    assert [w["text"] for w in words] == ["It", "cost", "$5.20", "Then", "he", "left"]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(e["segment"]["attempts"] == 2 for e in events if e["type"] == "speech.audio.quality")

    job = http.post("/v1/jobs", json={"voice": "alice", "input": text, "response_format": "wav", "seed": 4,
                                      "timestamps": "word", "quality": {"retries": 1}}).json()
    deadline = time.monotonic() + 300
    while (job := http.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    assert [s["attempts"] for s in job["quality"]["segments"]] == [2] and job["quality"]["passed"] is False
    captions = http.get(job["captions_url"]).json()["words"]
    assert [w["text"] for w in captions] == ["It", "cost", "$5.20", "Then", "he", "left"]
    assert http.get(job["captions_url"], params={"format": "vtt"}).text.startswith("WEBVTT")


def test_errors_from_inside_a_replica_keep_their_status(http):
    # A hand-made transcript far longer than its clip would break F5; the engine refuses it.
    voice = http.get("/v1/voices/alice").json()
    r = http.post("/v1/audio/speech", json={"voice": "nobody", "input": "Hi."})
    assert r.status_code == 404 and r.json()["error"]["code"] == "voice_not_found"
    r = http.patch("/v1/voices/alice", json={"ref_text": "word " * 200})
    assert r.status_code == 422 and r.json()["error"]["code"] == "implausible_ref_text"
    assert http.get("/v1/voices/alice").json()["ref_text"] == voice["ref_text"]


def test_synthesizer_scales_to_zero_and_back(http, config):
    quick = copy.deepcopy(config)  # an autoscaling change: applied to the running replica
    deployments(quick)["Synthesizer"]["autoscaling_config"].update(
        upscale_delay_s=0, downscale_delay_s=2, downscale_to_zero_delay_s=3, look_back_period_s=2)
    local_cluster.apply(quick)
    wait_for(lambda: running_replicas("Synthesizer") == 0, 120, "the Synthesizer to scale to zero")
    r = http.post("/v1/audio/speech", json={"voice": "alice", "input": "Back again.", "response_format": "mp3"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    assert running_replicas("Synthesizer") == 1

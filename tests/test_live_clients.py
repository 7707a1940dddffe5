"""Live text in through Serve: the offline profile deployed as `serve run` deploys it (HAProxy in front),
spoken to by the agent frameworks' own ElevenLabs clients (Pipecat, LiveKit) and by raw sockets that
drop, outlive a Synthesizer replica, or outlive their Ingress replica. One application for the module;
the tests that break a replica come last."""

import asyncio
import json
import os
import signal
import sys
import time

import httpx
import pytest
from ray import serve
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.common import offline_config
from deployments import local_cluster

from conftest import SHARED_CLUSTER, SHORT_TEXT, add_voice, start_serve, stop_serve

pytestmark = pytest.mark.ray

APP = "tts"
TEXT = "Hello there, Dr. Smith. It costs $5.20 today! Shall we go?"
LONG = ("The morning train left the station at seven. Passengers read newspapers and drank coffee. Outside "
        "the window, fields of wheat moved in the wind. A small dog barked at the passing cars. The conductor "
        "walked slowly down the aisle, checking every ticket with care.")
SHORT_SPEECH = {"voice": "alice", "input": "Yes.", "response_format": "pcm", "stream": True}
CHUNK, PACE_S = 4, 0.03  # as an LLM writes: a few characters every 30 ms


@pytest.fixture(scope="module")
def config(offline_models, tmp_path_factory):
    config = offline_config(offline_models, tmp_path_factory.mktemp("live") / "store", SHARED_CLUSTER.port, None)
    for d in config["applications"][0]["deployments"]:
        if d["name"] != "Ingress":  # warm for the whole module
            d["autoscaling_config"].update(downscale_delay_s=600, downscale_to_zero_delay_s=600)
    return config


@pytest.fixture(scope="module")
def base_url(config, short_wav):
    url = start_serve(config)
    with httpx.Client(base_url=url, timeout=300) as client:
        add_voice(client, "alice", short_wav, SHORT_TEXT)
    yield url
    stop_serve()


def ws_url(base_url: str, query: str = "output_format=pcm_24000") -> str:
    return f"{base_url.replace('http', 'ws', 1)}/v1/text-to-speech/alice/multi-stream-input?{query}"


def live_status(base_url: str) -> dict:
    status = httpx.get(f"{base_url}/v1/status", timeout=60).json()
    return status["deployments"]["Ingress"]["this_replica"]["live"]


async def feed(ws, context: str, text: str, sent: dict | None = None) -> None:
    await ws.send(json.dumps({"text": " ", "context_id": context}))
    for i in range(0, len(text), CHUNK):
        await ws.send(json.dumps({"text": text[i:i + CHUNK], "context_id": context}))
        await asyncio.sleep(PACE_S)
    if sent is not None:
        sent[context] = time.monotonic()
    await ws.send(json.dumps({"context_id": context, "flush": True}))
    await ws.send(json.dumps({"context_id": context, "close_context": True}))


async def read_until_final(ws, contexts: set[str], timeout: float = 120) -> dict[str, list[dict]]:
    """Every message for each context until its isFinal (or the socket closes)."""
    seen: dict[str, list[dict]] = {c: [] for c in contexts}
    open_ = set(contexts)

    async def read():
        async for raw in ws:
            message = json.loads(raw)
            message["at"] = time.monotonic()
            context = message.get("contextId")
            if context in seen:
                seen[context].append(message)
                if message.get("isFinal"):
                    open_.discard(context)
                    if not open_:
                        return

    await asyncio.wait_for(read(), timeout)
    return seen


# -- the agent frameworks' own clients ----------------------------------------------------------

def test_pipecat_speaks_every_sentence_an_llm_streams(base_url):
    from loguru import logger
    from pipecat.frames.frames import (
        ErrorFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        TTSAudioRawFrame,
        TTSTextFrame,
    )
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
    from pipecat.tests.utils import SleepFrame, run_test

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    frames = [LLMFullResponseStartFrame()]
    for i in range(0, len(TEXT), CHUNK):
        frames += [LLMTextFrame(text=TEXT[i:i + CHUNK]), SleepFrame(sleep=PACE_S)]
    frames += [LLMFullResponseEndFrame(), SleepFrame(sleep=8.0)]  # CPU: the last sentence's audio and isFinal
    tts = ElevenLabsTTSService(api_key="sk-unused", url=base_url.replace("http", "ws", 1),
                               settings=ElevenLabsTTSService.Settings(voice="alice"), stop_frame_timeout_s=30)
    down, up = asyncio.run(run_test(tts, frames_to_send=frames,
                                    pipeline_params=PipelineParams(audio_out_sample_rate=24000)))
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert len(audio) >= 3 and {f.sample_rate for f in audio} == {24000}
    assert sum(len(f.audio) for f in audio) / 2 / 24000 > 1.0
    # Its words come from our alignment, on the characters it sent: every sentence was spoken.
    words = "".join(f.text for f in down if isinstance(f, TTSTextFrame))
    assert words.replace(" ", "") == TEXT.replace(" ", "")


@pytest.mark.parametrize("encoding, rate", [("pcm_24000", 24000), (None, 22050)])  # None: its default, mp3_22050_32
def test_livekit_synthesizes_a_pushed_text_stream(base_url, encoding, rate):
    import aiohttp
    from livekit.agents import APIConnectOptions
    from livekit.plugins import elevenlabs

    async def scenario():
        async with aiohttp.ClientSession() as session:
            tts = elevenlabs.TTS(api_key="sk-unused", base_url=f"{base_url}/v1", voice_id="alice",
                                 http_session=session, **({"encoding": encoding} if encoding else {}))
            stream = tts.stream(conn_options=APIConnectOptions(timeout=60, max_retry=0))

            async def push():
                for i in range(0, len(TEXT), CHUNK):
                    stream.push_text(TEXT[i:i + CHUNK])
                    await asyncio.sleep(PACE_S)
                stream.end_input()

            feeder = asyncio.create_task(push())
            frames = [event.frame async for event in stream]
            await feeder
            await stream.aclose()
            await tts.aclose()
            return frames

    frames = asyncio.run(scenario())
    assert frames and {f.sample_rate for f in frames} == {rate}
    assert sum(f.samples_per_channel for f in frames) / rate > 1.0


# -- raw sockets ----------------------------------------------------------------------------------

def test_first_audio_of_a_context_arrives_before_its_last_text_chunk_is_sent(base_url):
    async def scenario():
        sent: dict = {}
        async with connect(ws_url(base_url)) as ws:
            feeder = asyncio.create_task(feed(ws, "a", LONG, sent))
            seen = await read_until_final(ws, {"a"})
            await feeder
        return seen["a"], sent["a"]

    messages, last_sent = asyncio.run(scenario())
    audio = [m for m in messages if m.get("audio")]
    assert audio and audio[0]["at"] < last_sent, f"first audio {audio[0]['at'] - last_sent:+.2f} s after the text"
    assert "".join(c for m in audio for c in m["alignment"]["chars"]) == " " + LONG  # the opening " " too


def test_fifty_sockets_dropped_mid_speech_leave_nothing_behind_and_http_is_served_meanwhile(base_url):
    async def speaking() -> object:
        ws = await connect(ws_url(base_url))
        await ws.send(json.dumps({"text": " ", "context_id": "c"}))
        await ws.send(json.dumps({"text": LONG, "context_id": "c", "flush": True}))
        return ws

    async def http_meanwhile(stop: asyncio.Event) -> list[tuple[float, int, float]]:
        """/healthz and a short speech, again and again: each one's time and the speech's answer."""
        answers = []
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            while not stop.is_set():
                start = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                health = time.monotonic() - start
                r = await client.post("/v1/audio/speech", json=SHORT_SPEECH)
                # The sockets' pieces wait at the Ingress beyond limits.max_live_pieces: the Synthesizer's
                # queue keeps room for this request.
                assert r.status_code == 200, r.text
                answers.append((health, r.status_code, time.monotonic() - start - health))
        return answers

    async def scenario():
        stop = asyncio.Event()
        served = asyncio.create_task(http_meanwhile(stop))
        sockets = await asyncio.gather(*(speaking() for _ in range(50)))
        await asyncio.sleep(1.0)
        during = await asyncio.to_thread(live_status, base_url)
        for ws in sockets:  # gone without a close frame, as a crashed client or a cut network
            ws.transport.abort()
        await asyncio.sleep(1.0)
        stop.set()
        return during, await served

    during, answers = asyncio.run(scenario())
    assert during["sockets"] == 50 and during["contexts"] > 0 and during["pieces_in_flight"] > 0, during
    assert answers and max(health for health, _, _ in answers) < 2, answers
    assert max(speech for _, _, speech in answers) < 30, answers
    deadline = time.monotonic() + 60
    while (live := live_status(base_url))["sockets"] or live["tasks"]:
        assert time.monotonic() < deadline, live
        time.sleep(0.5)
    assert live["contexts"] == 0 and live["pieces_in_flight"] == 0
    info = serve.get_deployment_handle("Synthesizer", APP).info.remote().result(timeout_s=60)
    assert info["queued_segments"] == 0
    assert httpx.post(f"{base_url}/v1/audio/speech", json=SHORT_SPEECH, timeout=60).status_code == 200


def test_a_context_outlives_a_killed_synthesizer_replica_with_its_audio_or_an_error(base_url):
    synthesizer = serve.get_deployment_handle("Synthesizer", APP)
    pid = synthesizer.info.remote().result(timeout_s=120)["pid"]

    async def scenario():
        async with connect(ws_url(base_url)) as ws:
            feeder = asyncio.create_task(feed(ws, "k", LONG))
            first = await asyncio.wait_for(ws.recv(), 60)  # audio is being made now
            os.kill(pid, signal.SIGKILL)
            seen = await read_until_final(ws, {"k"}, timeout=180)
            await feeder
        return json.loads(first), seen["k"]

    first, rest = asyncio.run(scenario())
    assert synthesizer.info.remote().result(timeout_s=120)["pid"] != pid  # Serve started another
    messages = [first, *rest]
    assert messages[-1].get("isFinal")  # never a hang: the context ends either way
    errors = [m for m in messages if m.get("error")]
    chars = "".join(c for m in messages if m.get("audio") for c in m["alignment"]["chars"])
    assert chars == " " + LONG or errors, (chars, errors)


async def open_contexts_then(base_url: str, stop) -> tuple[list[dict], int, float]:
    """Two contexts speaking on one socket when `stop()` (blocking) stops its Ingress replica: the
    errors the socket got, its close code and how long after the stop it closed."""
    async with connect(ws_url(base_url)) as ws:
        for context in ("a", "b"):
            await ws.send(json.dumps({"text": " ", "context_id": context}))
            await ws.send(json.dumps({"text": LONG, "context_id": context}))
        await asyncio.sleep(0.5)
        stopped_at = time.monotonic()
        await asyncio.to_thread(stop)
        errors = []
        with pytest.raises(ConnectionClosed):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if message.get("error"):
                    errors.append(message)
        return errors, ws.close_code, time.monotonic() - stopped_at


def assert_told_then_1012(errors: list[dict], code: int, after: float) -> None:
    assert code == 1012, (code, errors)
    assert {m["contextId"] for m in errors} == {"a", "b"} and {m["error"] for m in errors} == {"replica_stopping"}
    assert after < 30


def test_a_stopping_ingress_replica_closes_its_sockets_with_the_protocols_error(base_url, config):
    """A redeploy stops the Ingress replica: each open context gets the protocol's error, then close
    1012, before Serve would cut the socket without a word."""
    changed = json.loads(json.dumps(config))
    changed["applications"][0]["args"]["limits"]["retry_after_s"] = 7  # a new Ingress version
    assert_told_then_1012(*asyncio.run(open_contexts_then(base_url, lambda: local_cluster.apply(changed))))


def test_a_deleted_application_closes_its_sockets_with_the_protocols_error(base_url):
    """Last: the application goes (as `serve shutdown` takes it)."""
    local_cluster.wait_until_running({"applications": [{"name": APP}], "http_options": {"port": SHARED_CLUSTER.port}})
    assert_told_then_1012(*asyncio.run(open_contexts_then(base_url, lambda: serve.delete(APP, _blocking=False))))

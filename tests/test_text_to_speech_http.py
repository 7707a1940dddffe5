"""ElevenLabs' HTTP text-to-speech: the whole audio, the stream, and both with timestamps, in
ElevenLabs' output formats and shapes, with the keys its clients send; in process, on the tiny model."""

import asyncio
import base64
import json

import aiohttp
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_output_formats import decode_output

from speech_service.audio.output_formats import SUPPORTED
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app

from conftest import SHORT_TEXT, add_voice, tiered
from served import served_app
from test_api import assert_error

KEYS = [{"name": "ops", "key": "sk-ops", "scopes": ["admin"]}, {"name": "app", "key": "sk-app", "scopes": ["speak"]}]
XI = {"xi-api-key": "sk-app"}
LISTED = ["pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "mp3_22050_32", "mp3_44100_128", "ulaw_8000"]
ENDPOINTS = ["", "/stream", "/with-timestamps", "/stream/with-timestamps"]
SAID = "Dr. Smith paid $5.20"
SENT = "Hello there, Dr. Smith.It costs $5.20 today!Shall we go?"  # sentences without the space between


@pytest.fixture(scope="module")
def client(tmp_path_factory, backends, short_wav):
    store = tmp_path_factory.mktemp("tts-http") / "store"
    settings = ServiceSettings.model_validate({"store": {"path": str(store)}, "api_keys": KEYS})
    with TestClient(create_app(settings, backends), headers={"xi-api-key": "sk-ops"}) as client:
        add_voice(client, "alice", short_wav, SHORT_TEXT)
        assert client.post("/v1/voices/alice/consent", data={"method": "attested", "given_by": "Alice"}).is_success
        yield client


def tts(client, endpoint="", text=SAID, output_format=None, voice="alice", headers=XI, **body):
    params = {"output_format": output_format} if output_format else {}
    return client.post(f"/v1/text-to-speech/{voice}{endpoint}", params=params, headers=headers,
                       json={"text": text, "model_id": "eleven_flash_v2_5", "seed": 7, **body})


def timed(response, endpoint) -> list[dict]:
    """The JSON objects of a timestamped answer: one, or one a line."""
    if endpoint.startswith("/stream"):
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.text.splitlines()]
    return [response.json()]


def audio_of(response, endpoint) -> bytes:
    if endpoint.endswith("with-timestamps"):
        return b"".join(base64.b64decode(o["audio_base64"]) for o in timed(response, endpoint))
    return response.content


@pytest.fixture(scope="module")
def seconds(client):
    """Each endpoint's audio length of SAID, from its 24 kHz PCM."""
    return {endpoint: len(audio_of(tts(client, endpoint, output_format="pcm_24000"), endpoint)) / 2 / 24000
            for endpoint in ENDPOINTS}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
# The fast tier keeps one raw and one compressed format; the rest run in `make test`.
@pytest.mark.parametrize("name", tiered(LISTED, fast={"pcm_22050", "mp3_22050_32"}))
def test_every_endpoint_answers_in_each_format_at_its_rate_and_length(client, seconds, endpoint, name):
    r = tts(client, endpoint, output_format=name)
    assert r.status_code == 200, r.text
    if not endpoint.endswith("with-timestamps"):
        assert r.headers["content-type"] == SUPPORTED[name].media_type  # LiveKit wants audio/*
    samples, rate = decode_output(audio_of(r, endpoint), name)
    assert rate == SUPPORTED[name].sample_rate
    padding = 0.08 if name.startswith("mp3") else 2 / rate  # an MP3 file's LAME delay and padding
    assert seconds[endpoint] - 2 / rate <= len(samples) / rate <= seconds[endpoint] + padding
    assert np.abs(samples).max() > 0.01  # speech, not silence


def test_the_whole_audio_is_mp3_44100_128_by_default(client):
    r = tts(client)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    _, rate = decode_output(r.content, "mp3_44100_128")
    assert rate == 44100


@pytest.mark.parametrize("endpoint", tiered(["/with-timestamps", "/stream/with-timestamps"],
                                            fast={"/stream/with-timestamps"}))
@pytest.mark.parametrize("text", [SAID, SENT])
def test_the_alignment_is_on_exactly_the_characters_sent_within_the_audio(client, endpoint, text):
    r = tts(client, endpoint, text=text, output_format="pcm_24000")
    assert r.status_code == 200, r.text
    objects = timed(r, endpoint)
    duration = len(audio_of(r, endpoint)) / 2 / 24000
    starts = [s for o in objects for s in o["alignment"]["character_start_times_seconds"]]
    ends = [e for o in objects for e in o["alignment"]["character_end_times_seconds"]]
    assert "".join(c for o in objects for c in o["alignment"]["characters"]) == text
    assert all(o["normalized_alignment"] == o["alignment"] for o in objects)
    assert len(starts) == len(ends) == len(text)
    assert starts == sorted(starts) and all(s <= e <= duration + 1e-3 for s, e in zip(starts, ends))
    assert 0.5 * duration < ends[-1]  # the words take the audio, not a corner of it
    if endpoint.startswith("/stream") and text == SENT:
        assert len(objects) >= 3  # a sentence at a time


@pytest.mark.parametrize("model_id", ["eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2", None,
                                      "F5TTS_v1_Base"])
def test_elevenlabs_model_ids_mean_the_voices_model(client, model_id):
    r = client.post("/v1/text-to-speech/alice?output_format=pcm_16000", headers=XI,
                    json={"text": "Hi there.", **({"model_id": model_id} if model_id else {})})
    assert r.status_code == 200, r.text


def test_a_model_nobody_has_is_a_400_naming_the_names(client):
    assert_error(tts(client, model_id="gpt-nothing"), 400, "unknown_model")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_unknown_voice_is_404_before_any_audio(client, endpoint):
    assert_error(tts(client, endpoint, voice="nobody"), 404, "voice_not_found")


def test_an_unsupported_output_format_is_400_listing_the_supported(client):
    r = tts(client, output_format="opus_48000_64")
    assert_error(r, 400, "unsupported_output_format")
    assert "mp3_22050_32" in r.json()["error"]["message"] and r.json()["error"]["param"] == "output_format"


def test_fields_this_service_ignores_and_new_ones_are_accepted(client):
    r = tts(client, output_format="pcm_16000", previous_text="Before.", next_text="After.",
            previous_request_ids=["a"], apply_text_normalization="auto", language_code="en",
            pronunciation_dictionary_locators=[{"pronunciation_dictionary_id": "x", "version_id": "y"}],
            voice_settings={"stability": 0.5, "similarity_boost": 0.7, "style": 0.1, "use_speaker_boost": True},
            a_field_from_next_year={"anything": [1, 2]})
    assert r.status_code == 200, r.text


def test_voice_settings_speed_is_our_speed(client):
    slow, fast = (tts(client, output_format="pcm_24000", voice_settings={"speed": speed}) for speed in (0.7, 1.3))
    assert len(slow.content) > 1.4 * len(fast.content)
    assert_error(tts(client, voice_settings={"speed": 9}), 422, "invalid_request")


def test_the_key_comes_in_xi_api_key_and_is_checked_before_the_body(client):
    oversized = {"text": "x" * (1024 * 1024 + 10)}  # over limits.max_json_bytes: 413 once the key passes
    r = client.post("/v1/text-to-speech/alice", headers={"xi-api-key": "sk-wrong"}, json=oversized)
    assert_error(r, 401, "invalid_api_key")
    assert_error(client.post("/v1/text-to-speech/alice", headers=XI, json=oversized), 413, "body_too_large")
    bare = TestClient(client.app)  # without the module's client's key
    assert_error(bare.post("/v1/text-to-speech/alice", json={"text": SAID}), 401, "invalid_api_key")
    assert bare.post("/v1/text-to-speech/alice?output_format=pcm_16000", headers=XI,
                     json={"text": SAID}).status_code == 200
    assert bare.post("/v1/text-to-speech/alice?output_format=pcm_16000", headers={"Authorization": "Bearer sk-app"},
                     json={"text": SAID}).status_code == 200


@pytest.mark.slow  # every endpoint in turn
def test_every_answer_is_audited_and_carries_its_credentials(client):
    responses = {endpoint: tts(client, endpoint, output_format=fmt) for endpoint, fmt in
                 zip(ENDPOINTS, ["mp3_22050_32", "ulaw_8000", "pcm_44100", "pcm_16000"])}
    entries = {e["request_id"]: e for e in client.get("/v1/audit").json()["entries"]}
    for endpoint, r in responses.items():
        entry = entries[r.headers["x-request-id"]]
        assert (entry["key"], entry["voice"], entry["complete"]) == ("app", "alice", True)
        assert entry["kind"] == ("stream" if endpoint.startswith("/stream") else "speech")
    mp3 = responses[""]  # an MP3 file carries its manifest inside, as /v1/audio/speech's
    verified = client.post("/v1/provenance/verify", files={"file": ("speech.mp3", mp3.content, "audio/mpeg")})
    assert verified.json()["found"] and verified.json()["validation_state"] in ("Valid", "Trusted"), verified.text
    for endpoint in ENDPOINTS[1:]:  # raw audio: a sidecar bound to the audio bytes sent
        r = responses[endpoint]
        sidecar = client.get(r.headers["x-content-credentials"])
        assert sidecar.status_code == 200
        verified = client.post("/v1/provenance/verify", files={
            "file": ("speech.raw", audio_of(r, endpoint), "application/octet-stream"),
            "manifest": ("speech.c2pa", sidecar.content, "application/c2pa")})
        assert verified.json()["found"] and verified.json()["validation_state"] in ("Valid", "Trusted"), verified.text


def served_voice(base: str, short_wav) -> None:
    with open(short_wav, "rb") as f:
        r = httpx.post(f"{base}/v1/voices", headers={"xi-api-key": "sk-ops"},
                       data={"name": "alice", "ref_text": SHORT_TEXT},
                       files={"file": ("alice.wav", f, "audio/wav")}, timeout=60)
    assert r.status_code == 201, r.text


@pytest.mark.slow  # a served app and a third-party client
def test_pipecats_http_service_speaks_each_sentence(tmp_path, backends, short_wav):
    """Pipecat's own ElevenLabsHttpTTSService, fed an LLM's text a few characters at a time: one
    `/stream/with-timestamps` request a sentence, its audio frames and words from our alignment."""
    from loguru import logger
    from pipecat.frames.frames import (
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        TTSAudioRawFrame,
        TTSTextFrame,
    )
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.services.elevenlabs.tts import ElevenLabsHttpTTSService
    from pipecat.tests.utils import SleepFrame, run_test

    text = "Hello there, Dr. Smith. It costs $5.20 today! Shall we go?"
    frames = [LLMFullResponseStartFrame()]
    for i in range(0, len(text), 4):
        frames += [LLMTextFrame(text=text[i:i + 4]), SleepFrame(sleep=0.03)]
    frames += [LLMFullResponseEndFrame(), SleepFrame(sleep=0.5)]

    async def scenario(base):
        async with aiohttp.ClientSession() as session:
            tts = ElevenLabsHttpTTSService(api_key="sk-app", aiohttp_session=session, base_url=base,
                                           settings=ElevenLabsHttpTTSService.Settings(voice="alice"))
            return await run_test(tts, frames_to_send=frames,
                                  pipeline_params=PipelineParams(audio_out_sample_rate=16000))

    logger.remove()
    with served_app(tmp_path / "store", backends, api_keys=KEYS) as base:
        served_voice(base, short_wav)
        down, up = asyncio.run(scenario(base))
        entries = httpx.get(f"{base}/v1/audit", headers={"xi-api-key": "sk-ops"}).json()["entries"]
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert not [f for f in up if "Error" in type(f).__name__], up
    assert [e["format"] for e in entries] == ["pcm_16000"] * 3  # a request a sentence
    assert audio and all(f.sample_rate == 16000 and f.num_channels == 1 for f in audio)
    assert sum(len(f.audio) for f in audio) / 2 / 16000 > 1.0
    words = " ".join(f.text for f in down if isinstance(f, TTSTextFrame))
    assert words.split() == text.split()  # its words, from our alignment of the characters it sent


@pytest.mark.slow  # a served app and a third-party client
def test_livekits_synthesize_speaks_over_the_http_stream(tmp_path, backends, short_wav):
    """LiveKit's own `elevenlabs.TTS(...).synthesize`: `POST .../stream` decoded by the plugin."""
    from livekit.plugins import elevenlabs

    async def scenario(base, encoding):
        async with aiohttp.ClientSession() as session:
            tts = elevenlabs.TTS(api_key="sk-app", base_url=f"{base}/v1", voice_id="alice", encoding=encoding,
                                 http_session=session)
            frames = [ev.frame async for ev in tts.synthesize("Dr. Smith paid $5.20. Shall we go?")]
            await tts.aclose()
            return frames

    with served_app(tmp_path / "store", backends, api_keys=KEYS) as base:
        served_voice(base, short_wav)
        for encoding in ("mp3_22050_32", "pcm_24000"):  # LiveKit's default, and raw audio
            frames = asyncio.run(scenario(base, encoding))
            seconds = sum(f.samples_per_channel for f in frames) / frames[0].sample_rate
            assert frames[0].sample_rate == int(encoding.split("_")[1]) and seconds > 1.0, encoding

"""The HTTP contract, served in-process by FastAPI over the real engine and the real Whisper."""

import base64
import io
import json

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from speech_service import audio
from speech_service.audio import encoding
from speech_service.config import ServiceSettings, SynthesisOptions
from speech_service.http.app import create_app
from speech_service.storage.objects import open_object_store

from conftest import (
    LONG_TEXT,
    SHORT_TEXT,
    add_voice,
    convert,
    decode_file,
    engine_stream,
    espeak,
    server_timing,
    tiered,
)
from served import served_app


def make_client(tmp_path, backends, **settings):
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, **settings})
    client = TestClient(create_app(settings, backends))
    client.objects = open_object_store(settings.store)  # to look at what was stored
    return client


@pytest.fixture
def client(store_config, tmp_path, backends):
    """The voice tests run on both stores; speech-format tests pin `local` (the store is not what
    they test)."""
    return make_client(tmp_path, backends, store=store_config)


def upload(client, name, path, headers=None, **fields):
    with open(path, "rb") as f:
        return client.post("/v1/voices", data={"name": name, **fields}, files={"file": (path.name, f)},
                           headers=headers)


def assert_error(response, status, code):
    """OpenAI's error shape, the code we chose, and the request id in the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] and "param" in error
    assert f"(request id: {response.headers['x-request-id']})" in error["message"]


def speak(client, **body):
    return client.post("/v1/audio/speech", json={"voice": "alice", "input": "Hello there.", "nfe_step": 2, **body})


def test_voice_lifecycle(client, short_wav, backends):
    before = backends.transcriptions
    r = upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    assert r.status_code == 201, r.text
    voice = r.json()
    assert voice["ref_text"] == SHORT_TEXT and voice["ref_text_source"] == "user"
    assert voice["clipped"] is False and voice["warnings"] == []
    assert backends.transcriptions == before  # a usable transcript came with it
    assert client.get("/v1/voices/alice").json()["sha256"] == voice["sha256"]
    assert [v["name"] for v in client.get("/v1/voices").json()["voices"]] == ["alice"]

    wav = client.get("/v1/voices/alice/audio")
    assert wav.headers["content-type"] == "audio/wav"
    data, sr = sf.read(io.BytesIO(wav.content))
    assert sr == 24000 and data.ndim == 1 and len(data) / sr == pytest.approx(voice["duration_s"], abs=0.01)

    fixed = client.patch("/v1/voices/alice", json={"ref_text": "The quick brown fox jumps over a lazy dog."})
    assert fixed.status_code == 200 and fixed.json()["ref_text_source"] == "user"
    assert client.get("/v1/voices/alice").json()["ref_text"].endswith("a lazy dog.")

    assert client.delete("/v1/voices/alice").status_code == 204
    assert client.objects.list("") == []
    assert_error(client.get("/v1/voices/alice"), 404, "voice_not_found")
    assert_error(client.delete("/v1/voices/alice"), 404, "voice_not_found")


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_upload_without_transcript_is_transcribed_once(client, short_wav, backends):
    before = backends.transcriptions
    voice = upload(client, "alice", short_wav).json()
    assert voice["ref_text_source"] == "asr" and "fox" in voice["ref_text"].lower()
    assert backends.transcriptions == before + 1
    for _ in range(2):
        assert speak(client).status_code == 200
    assert backends.transcriptions == before + 1  # synthesis never transcribes


@pytest.mark.slow
@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_long_upload_with_full_transcript_stores_the_clip_and_its_own_transcript(client, long_wav, tmp_path):
    mp3 = convert(long_wav, tmp_path / "long.mp3")
    r = upload(client, "alice", mp3, ref_text=LONG_TEXT)
    assert r.status_code == 201, r.text
    voice = r.json()
    assert voice["clipped"] is True and voice["duration_s"] <= 12.05 and voice["original_duration_s"] > 20
    assert voice["ref_text_source"] == "asr" and voice["ref_text"] != LONG_TEXT
    assert len(voice["ref_text"]) < 0.75 * len(LONG_TEXT)
    assert "replaced" in voice["warnings"][0]
    assert speak(client, input="A new sentence, in the voice of the clip.").status_code == 200


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
@pytest.mark.parametrize("fmt, content_type", tiered([
    ("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("aac", "audio/aac"),
    ("flac", "audio/flac"), ("wav", "audio/wav"), ("pcm", "audio/pcm"),
], fast={"mp3", "pcm"}))
def test_speech_in_every_format(client, short_wav, fmt, content_type, tmp_path):
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    r = speak(client, response_format=fmt, seed=3)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == content_type
    timing = server_timing(r)  # the model's share of the response's time
    assert 0 < timing["model"] <= timing["total"]
    if fmt == "pcm":
        seconds = len(r.content) / 2 / 24000
    else:
        path = tmp_path / f"speech.{fmt}"
        path.write_bytes(r.content)
        seconds = len(sf.read(convert(path, tmp_path / "speech-check.wav"))[0]) / 24000
    assert 0.3 < seconds < 3.0


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
@pytest.mark.parametrize("fmt", tiered(["pcm", "wav", "mp3", "opus", "aac", "flac"], fast={"pcm", "mp3"}))
def test_streamed_speech_is_the_engines_stream_and_as_long_as_the_whole(client, backends, short_wav, fmt, tmp_path):
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    text = "First sentence here. A second one follows. And a third."
    body = dict(input=text, seed=9, response_format=fmt)
    whole = speak(client, **body)
    with client.stream("POST", "/v1/audio/speech", json={"voice": "alice", "nfe_step": 2, **body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == whole.headers["content-type"]
        assert "content-length" not in r.headers
        streamed = b"".join(r.iter_bytes())
    if fmt in ("pcm", "wav"):
        # Exactly the engine's own stream (nothing lost or repeated between pieces), up to a 16-bit
        # step of float rounding.
        start = 44 if fmt == "wav" else 0
        assert fmt == "pcm" or streamed[:4] == b"RIFF"
        clip, _ = sf.read(io.BytesIO(client.get("/v1/voices/alice/audio").content), dtype="float32")
        pieces = engine_stream(backends.engine, clip, SHORT_TEXT, text, SynthesisOptions(nfe_step=2, seed=9))
        expected = np.frombuffer(encoding.to_pcm16(np.concatenate(list(pieces))), np.int16).astype(int)
        got = np.frombuffer(streamed[start:], np.int16).astype(int)
        assert len(got) == len(expected) and np.abs(got - expected).max() <= 2

    def seconds(name: str, data: bytes) -> float:
        if fmt == "pcm":
            return len(data) / 2 / 24000
        (tmp_path / f"{name}.{fmt}").write_bytes(data)
        return len(sf.read(convert(tmp_path / f"{name}.{fmt}", tmp_path / f"{name}-decoded.wav"))[0]) / 24000

    # The whole response is one segment, the stream two (a short first one): the same text at the
    # voice's pace, less one cross-fade.
    assert seconds("streamed", streamed) == pytest.approx(seconds("whole", whole.content), rel=0.1)


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_sse_events_carry_the_streamed_audio_and_the_usage(client, short_wav):
    """OpenAI's `stream_format: "sse"`: base64 audio in `speech.audio.delta` events, then
    `speech.audio.done` with usage; the audio is the same as the plain stream's."""
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    body = {"voice": "alice", "input": "First sentence here. A second one follows.", "seed": 4, "nfe_step": 2,
            "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json={**body, "stream": True}) as r:
        plain = b"".join(r.iter_bytes())
    with client.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "sse"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line.removeprefix("data: ")) for line in r.iter_lines() if line.startswith("data: ")]
    *deltas, done = events
    assert len(deltas) >= 2 and {e["type"] for e in deltas} == {"speech.audio.delta"}  # one per segment at least
    streamed = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    a, b = (np.frombuffer(data, np.int16).astype(int) for data in (streamed, plain))
    assert len(a) == len(b) and np.abs(a - b).max() <= 2
    usage = done["usage"]
    assert done["type"] == "speech.audio.done" and usage["input_tokens"] == len(body["input"])
    assert usage["output_tokens"] == len(a) // 256 and usage["total_tokens"] == len(body["input"]) + len(a) // 256
    assert_error(speak(client, voice="nobody", stream_format="sse"), 404, "voice_not_found")


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_a_stream_that_breaks_off_says_so(client, short_wav, dies_after_first_piece):
    """A prefix of the audio is never passed off as the whole: SSE ends with an `error` event and no
    `speech.audio.done`."""
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    body = {"voice": "alice", "input": "First sentence here. A second one follows.", "nfe_step": 2,
            "response_format": "pcm", "stream_format": "sse", "seed": 1}
    with client.stream("POST", "/v1/audio/speech", json=body, headers={"X-Request-ID": "cut-1"}) as r:
        assert r.status_code == 200
        events = [json.loads(line.removeprefix("data: ")) for line in r.iter_lines() if line.startswith("data: ")]
    *deltas, last = events
    assert deltas and {e["type"] for e in deltas} == {"speech.audio.delta"}
    assert last["type"] == "error" and last["error"]["code"] == "stream_interrupted"
    assert last["error"]["message"].endswith("(request id: cut-1)") and "incomplete" in last["error"]["message"]


def test_a_raw_stream_that_breaks_off_ends_incomplete(tmp_path, backends, short_wav, dies_after_first_piece):
    """Raw audio has no room for an error: the response ends without its last chunk, so the
    client's HTTP library reports an incomplete body rather than a short file."""
    with served_app(tmp_path / "store", backends) as url, httpx.Client(base_url=url, timeout=60) as http:
        add_voice(http, "alice", short_wav, SHORT_TEXT)
        body = {"voice": "alice", "input": "First sentence here. A second one follows.", "nfe_step": 2,
                "response_format": "pcm", "stream": True}
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            with http.stream("POST", "/v1/audio/speech", json=body) as r:
                assert r.status_code == 200
                for data in r.iter_bytes():
                    received += data
        assert received  # the first piece arrived before the break
        assert http.get("/healthz").status_code == 200  # and the service is fine


def test_streaming_errors_keep_their_status(client, short_wav):
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    assert_error(speak(client, voice="nobody", stream=True, response_format="mp3"), 404, "voice_not_found")
    assert_error(speak(client, input=" ", stream=True, response_format="mp3"), 400, "empty_input")
    # The encoder starts alongside the first segment; a request that fails before it stops it.
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "ffmpeg"]


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_openai_fields_and_f5_extensions_are_honoured(client, short_wav):
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    body = dict(model="tts-1", response_format="pcm", seed=5, nfe_step=4, cfg_strength=1.5,
                sway_sampling_coef=-0.5, cross_fade_duration=0.1)
    a, b = speak(client, **body), speak(client, **body)
    assert a.content == b.content  # the seed reaches the model
    slow = speak(client, **body, speed=0.5)
    assert len(slow.content) == pytest.approx(2 * len(a.content), rel=0.15)


def test_overwrite(client, short_wav):
    assert upload(client, "alice", short_wav, ref_text=SHORT_TEXT).status_code == 201
    assert_error(upload(client, "alice", short_wav, ref_text=SHORT_TEXT), 409, "voice_exists")
    r = upload(client, "alice", short_wav, ref_text="The quick brown fox jumps.", overwrite="true")
    assert r.status_code == 201 and r.json()["ref_text"] == "The quick brown fox jumps."
    assert len(client.objects.list("voices/alice/")) == 2  # the record and its clip; the old clip went


def test_a_stale_if_match_is_refused_and_the_transcript_stays_the_current_clips(client, short_wav, tmp_path):
    """A fix written for the clip that was read never lands on the clip that replaced it (412)."""
    slower = espeak(SHORT_TEXT, tmp_path / "slower.wav", "-s", "130")  # the same words, another clip
    created = upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    read = client.get("/v1/voices/alice")
    assert created.headers["ETag"] == read.headers["ETag"]
    replaced = upload(client, "alice", slower, ref_text="A quick brown fox jumps over the lazy dogs.",
                      overwrite="true")
    current = replaced.headers["ETag"]
    assert replaced.status_code == 201 and current != read.headers["ETag"]

    stale = {"If-Match": read.headers["ETag"]}
    refused = client.patch("/v1/voices/alice", json={"ref_text": "The quick brown fox jumped over a lazy dog."},
                           headers=stale)
    assert_error(refused, 412, "precondition_failed")
    assert "'alice'" in refused.json()["error"]["message"] and current in refused.json()["error"]["message"]
    voice = client.get("/v1/voices/alice")
    assert voice.json()["ref_text"] == "A quick brown fox jumps over the lazy dogs."
    assert voice.json()["sha256"] == replaced.json()["sha256"] and voice.headers["ETag"] == current
    assert_error(client.delete("/v1/voices/alice", headers=stale), 412, "precondition_failed")
    assert_error(upload(client, "alice", short_wav, headers=stale, ref_text=SHORT_TEXT, overwrite="true"),
                 412, "precondition_failed")
    assert client.get("/v1/voices/alice").headers["ETag"] == current  # none of the three changed it

    fixed = client.patch("/v1/voices/alice", json={"ref_text": SHORT_TEXT}, headers={"If-Match": current})
    assert fixed.status_code == 200 and fixed.headers["ETag"] not in (current, read.headers["ETag"])
    assert client.delete("/v1/voices/alice", headers={"If-Match": "*"}).status_code == 204
    assert_error(client.patch("/v1/voices/alice", json={"ref_text": SHORT_TEXT}, headers={"If-Match": "*"}),
                 404, "voice_not_found")
    assert_error(upload(client, "alice", short_wav, headers={"If-Match": "*"}, ref_text=SHORT_TEXT,
                        overwrite="true"), 412, "precondition_failed")  # `*`: only over a voice that exists
    assert client.objects.list("") == []


@pytest.mark.parametrize("name", ["../x", "a b", "x" * 65, ".."])
def test_bad_voice_names(client, short_wav, name, tmp_path):
    assert_error(upload(client, name, short_wav, ref_text=SHORT_TEXT), 400, "invalid_voice_name")
    assert not (tmp_path / "x").exists()


def test_bad_audio_uploads(client, tmp_path):
    cases = {
        "empty.wav": (b"", "empty_audio"),
        "junk.mp3": (b"this is not audio at all" * 100, "unsupported_audio"),
    }
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(24000 * 3, np.float32), 24000)
    cases["silent.wav"] = (silent.read_bytes(), "silent_audio")
    for filename, (data, code) in cases.items():
        r = client.post("/v1/voices", data={"name": "bad"}, files={"file": (filename, data)})
        assert_error(r, 400, code)
    assert client.get("/v1/voices").json()["voices"] == []
    assert client.objects.list("") == []  # nothing half-written


def test_oversized_upload(tmp_path, backends, long_wav):
    small = make_client(tmp_path, backends, limits={"max_upload_bytes": 100_000})
    assert_error(upload(small, "alice", long_wav), 413, "upload_too_large")  # refused by its length header
    body = long_wav.read_bytes()[:110_000]  # under the header allowance, over the limit once read
    r = small.post("/v1/voices", data={"name": "alice"}, files={"file": ("a.wav", body)})
    assert_error(r, 413, "upload_too_large")
    assert small.get("/v1/voices").json()["voices"] == []


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_language_codes(client, short_wav):
    assert_error(upload(client, "alice", short_wav, language="english"), 400, "invalid_language")
    assert_error(upload(client, "alice", short_wav, language="xx"), 400, "unsupported_language")
    r = upload(client, "alice", short_wav, language="en")
    assert r.status_code == 201 and r.json()["language"] == "en"


def test_implausible_transcripts(client, short_wav):
    assert_error(upload(client, "alice", short_wav, ref_text=LONG_TEXT * 2), 422, "implausible_ref_text")
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    assert_error(client.patch("/v1/voices/alice", json={"ref_text": LONG_TEXT}), 422, "implausible_ref_text")
    assert_error(client.patch("/v1/voices/alice", json={"ref_text": "  "}), 422, "empty_ref_text")
    assert client.get("/v1/voices/alice").json()["ref_text"] == SHORT_TEXT


def test_an_operators_input_limit_is_documented_and_enforced(tmp_path, backends, short_wav):
    client = make_client(tmp_path, backends, limits={"max_input_chars": 40})
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SpeechRequest"]
    assert schema["properties"]["input"]["maxLength"] == 40
    assert_error(speak(client, input="x" * 41), 413, "input_too_long")
    assert "40" in speak(client, input="x" * 41).json()["error"]["message"]


def test_bad_speech_requests(client, short_wav):
    upload(client, "alice", short_wav, ref_text=SHORT_TEXT)
    assert_error(speak(client, voice="nobody"), 404, "voice_not_found")
    assert_error(speak(client, voice="../etc"), 400, "invalid_voice_name")
    assert_error(speak(client, input="   "), 400, "empty_input")
    assert_error(speak(client, input="\x00\x07\u200b\ufeff"), 400, "empty_input")  # nothing to say
    assert_error(speak(client, input="x" * 5000), 413, "input_too_long")
    assert_error(speak(client, model="whisper-1"), 400, "unknown_model")
    for field, value in [("speed", 10), ("nfe_step", 0), ("nfe_step", 1000), ("cfg_strength", -1),
                         ("sway_sampling_coef", 3), ("seed", -5), ("cross_fade_duration", 5),
                         ("response_format", "ogg"), ("unknown_field", 1)]:
        r = speak(client, **{field: value})
        assert_error(r, 422, "invalid_request")
        assert field in r.json()["error"]["message"]
    r = client.post("/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")
    assert_error(client.post("/v1/audio/speech", json={"voice": "alice"}), 422, "invalid_request")


def test_api_keys(tmp_path, backends):
    secured = make_client(tmp_path, backends, api_keys=["sk-one"])
    assert secured.get("/healthz").status_code == 200
    assert_error(secured.get("/v1/voices"), 401, "invalid_api_key")
    assert_error(secured.get("/v1/voices", headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
    assert secured.get("/v1/voices", headers={"Authorization": "Bearer sk-one"}).status_code == 200


def test_unknown_routes_answer_json(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.put("/v1/voices"), 405, "method_not_allowed")


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_a_clip_reaches_the_model_once_and_speech_follows_every_change_of_the_voice(client, backends, short_wav,
                                                                                    tmp_path):
    """The model side keeps prepared clips by sha256: a voice's clip is sent once, its transcript with
    every request, and the speech always equals the engine's for the voice's current clip and text."""
    samples = decode_file(short_wav)
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    sf.write(first, 0.8 * samples, 24000)  # clips no other test uploads, so none is cached yet
    sf.write(second, 0.8 * samples[::-1], 24000)
    body = {"voice": "cached", "input": "Hello there, friend.", "nfe_step": 4, "seed": 3, "response_format": "pcm"}

    def speech(**extra):
        r = client.post("/v1/audio/speech", json={**body, **extra})
        assert r.status_code == 200, r.text
        return np.frombuffer(r.content, np.int16).astype(int)

    def engine_alone():  # the engine given what the store holds now, no cache involved
        voice, wav = client.get("/v1/voices/cached").json(), client.get("/v1/voices/cached/audio").content
        wave = backends.engine.synthesize(audio.read_wav_bytes(wav), voice["ref_text"], body["input"],
                                          SynthesisOptions(nfe_step=4, seed=3))
        return np.frombuffer(encoding.encode(wave, "pcm"), np.int16).astype(int)

    def same(a, b):
        return len(a) == len(b) and np.abs(a - b).max() <= 1

    assert upload(client, "cached", first, ref_text=SHORT_TEXT).status_code == 201
    sent = backends.clips_sent
    spoken = speech()
    assert backends.clips_sent == sent + 1 and same(spoken, engine_alone())
    assert same(speech(), spoken) and same(speech(stream=True), spoken)
    assert backends.clips_sent == sent + 1  # the replica kept it

    patched = client.patch("/v1/voices/cached", json={"ref_text": "The quick brown fox jumped over a lazy cat."})
    assert patched.status_code == 200, patched.text
    after_patch = speech()
    assert backends.clips_sent == sent + 1  # same clip, new transcript: nothing to send
    assert not same(after_patch, spoken) and same(after_patch, engine_alone())

    assert upload(client, "cached", second, ref_text=SHORT_TEXT, overwrite="true").status_code == 201
    replaced = speech()
    assert backends.clips_sent == sent + 2  # a new clip: sent once
    assert not same(replaced, spoken) and same(replaced, engine_alone())


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_unknown_paths_other_methods_and_trailing_slashes(client):
    assert_error(client.get("/v1/embeddings"), 404, "not_found")
    assert "/v1/embeddings" in client.get("/v1/embeddings").json()["error"]["message"]
    assert_error(client.put("/v1/voices"), 405, "method_not_allowed")
    assert client.get("/v1/voices/", follow_redirects=False).status_code == 307
    assert client.get("/web/app.js").status_code == 200 and client.get("/healthz").status_code == 200

"""ElevenLabs' text-to-speech WebSocket protocol (`multi-stream-input`, `stream-input`) on the Ingress,
spoken as the raw protocol in process (Starlette's test client) over the tiny models: contexts, their
audio and alignment on the caller's characters, keys, settings, refusals and the socket's bounds."""

import base64
import hashlib
import io
import json
import socket
import threading
import time

import anyio
import numpy as np
import pytest
import soundfile as sf
import uvicorn
from fastapi.testclient import TestClient

from speech_service.audio.output_formats import ulaw_decode
from speech_service.config import ServiceSettings
from speech_service.http.app import create_app
from speech_service.http.routes import live_socket

from conftest import SHORT_TEXT, add_voice

MULTI = "/v1/text-to-speech/{voice}/multi-stream-input"
# What Pipecat's and LiveKit's sockets ask for by default, besides the format: accepted, ignored.
CLIENT_QUERY = "model_id=eleven_flash_v2_5&auto_mode=true&sync_alignment=true&enable_logging=true"
SENT = "Hello there, Dr. Smith.It costs $5.20 today!Shall we go?"  # sentences as Pipecat sends them
KEY = "sk-live-1"


def make_client(tmp_path, backends, short_wav, headers=None, **settings) -> TestClient:
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, **settings})
    client = TestClient(create_app(settings, backends), headers=headers)
    add_voice(client, "alice", short_wav, SHORT_TEXT)
    return client


@pytest.fixture
def client(tmp_path, backends, short_wav):
    return make_client(tmp_path, backends, short_wav)


def url(voice: str = "alice", output_format: str = "pcm_24000", path: str = MULTI, **query) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{path.format(voice=voice)}?output_format={output_format}&{CLIENT_QUERY}{extra}"


def receive(ws, timeout: float = 30.0) -> dict:
    """The server's next message, or `{"closed": code, "reason": ...}`; the test fails after `timeout`
    seconds instead of hanging (the test client's own receive waits forever)."""
    async def next_message():
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    if message["type"] == "websocket.close":
        return {"closed": message["code"], "reason": message.get("reason")}
    return json.loads(message["text"])


def until_final(ws, contexts: set[str]) -> list[dict]:
    """Every message up to the `isFinal` of each of `contexts`."""
    messages = []
    while contexts:
        message = receive(ws)
        assert "closed" not in message, message
        messages.append(message)
        if message.get("isFinal"):
            contexts.discard(message["contextId"])
    return messages


def close_socket(ws) -> dict:
    """`close_socket`, then the server's close (so the app has finished when the test client leaves)."""
    ws.send_json({"close_socket": True})
    while "closed" not in (message := receive(ws)):
        pass
    return message


def chars(messages: list[dict], context_id: str | None = None) -> str:
    return "".join(c for m in messages if "audio" in m and m.get("contextId") == context_id
                   for c in m["alignment"]["chars"])


def assert_alignment_within_audio(message: dict, rate: int = 24000) -> None:
    alignment = message["alignment"]
    assert message["normalizedAlignment"] == alignment
    assert message["contextId"] == message["context_id"]
    starts, durations = alignment["charStartTimesMs"], alignment["charDurationsMs"]
    assert len(alignment["chars"]) == len(starts) == len(durations)
    duration_ms = len(base64.b64decode(message["audio"])) / 2 / rate * 1000
    assert starts == sorted(starts) and starts[0] >= 0  # times of this message's own audio, from 0
    assert all(s + d <= duration_ms + 1 for s, d in zip(starts, durations))


@pytest.mark.slow  # test_live keeps the in-process twin fast
def test_three_contexts_on_one_socket_each_in_order_on_the_characters_sent(client):
    b = "Then flush this part and then the rest."
    c = "Closed midway, this one."  # closed with more of its text never sent
    texts = {"a": SENT, "b": b, "c": c}
    with client.websocket_connect(url()) as ws:
        ws.send_json({"text": " ", "context_id": "a", "voice_settings": {"speed": 1.0, "stability": 0.5}})
        ws.send_json({"text": " ", "context_id": "b", "voice_settings": {}})
        ws.send_json({"text": " ", "context_id": "c"})
        for i in range(0, len(SENT), 4):
            for cid, text in texts.items():
                if i < len(text):
                    ws.send_json({"text": text[i:i + 4], "context_id": cid,
                                  **({"flush": True} if cid == "b" and i + 4 == len("Then flush this part") else {})})
            if i == len(c) - 4:
                ws.send_json({"context_id": "c", "close_context": True})
            if i in (12, 36):  # Pipecat's keep-alives: with no context, and on one that is open
                ws.send_json({"text": ""})
                ws.send_json({"text": "", "context_id": "a"})
            time.sleep(0.03)
        ws.send_json({"context_id": "a", "flush": True})  # Pipecat ends a turn so
        ws.send_json({"context_id": "a", "close_context": True})
        ws.send_json({"text": "", "context_id": "b", "flush": True})  # LiveKit so
        ws.send_json({"context_id": "b", "close_context": True})
        messages = until_final(ws, {"a", "b", "c"})
        assert close_socket(ws)["closed"] == 1000

    for cid, text in texts.items():
        own = [m for m in messages if m.get("contextId") == cid]
        assert own[-1] == {"isFinal": True, "contextId": cid, "context_id": cid}  # nothing after it
        assert all("audio" in m for m in own[:-1]) and len(own) > 1
        assert chars(messages, cid) == " " + text  # exactly what was sent, init space included
        for m in own[:-1]:
            assert_alignment_within_audio(m)
    assert len([m for m in messages if m.get("contextId") == "a" and "audio" in m]) == 4  # its four pieces
    first_of_b = next(m for m in messages if m.get("contextId") == "b")
    assert "".join(first_of_b["alignment"]["chars"]) == " Then flush this part"  # the flush cut it there
    assert not any("error" in m for m in messages)


def test_first_audio_arrives_before_the_last_text_is_sent(client):
    first, rest = "Hello there, this is the first sentence. ", "And this is the rest of it."
    with client.websocket_connect(url()) as ws:
        ws.send_json({"text": " ", "context_id": "x"})
        for i in range(0, len(first), 4):
            ws.send_json({"text": first[i:i + 4], "context_id": "x"})
            time.sleep(0.03)
        heard = receive(ws)  # before the rest exists
        assert "audio" in heard and (" " + first).startswith("".join(heard["alignment"]["chars"]))
        for i in range(0, len(rest), 4):
            ws.send_json({"text": rest[i:i + 4], "context_id": "x"})
        ws.send_json({"context_id": "x", "close_context": True})
        messages = [heard, *until_final(ws, {"x"})]
        close_socket(ws)
    assert chars(messages, "x") == " " + first + rest


def test_stream_input_speaks_one_context_and_closes_after_its_final(client):
    path = "/v1/text-to-speech/{voice}/stream-input"
    with client.websocket_connect(url(path=path, output_format="pcm_16000")) as ws:
        ws.send_json({"text": " ", "voice_settings": {"speed": 1.1},
                      "generation_config": {"chunk_length_schedule": [50]}})
        ws.send_json({"text": "Dr. Smith paid $5.20.", "try_trigger_generation": True})
        ws.send_json({"text": "He left."})
        ws.send_json({"text": ""})  # the end of the text
        messages = []
        while "closed" not in (message := receive(ws)):
            messages.append(message)
    assert message["closed"] == 1000
    assert messages[-1] == {"isFinal": True}  # no context ids on stream-input
    assert all("audio" in m and "contextId" not in m for m in messages[:-1])
    assert chars(messages) == " Dr. Smith paid $5.20.He left."
    for m in messages[:-1]:
        assert_alignment_within_audio({**m, "contextId": None, "context_id": None}, rate=16000)


def test_a_context_for_an_unknown_voice_fails_alone_and_the_socket_goes_on(client, short_wav):
    with client.websocket_connect(url(voice="bob")) as ws:
        ws.send_json({"text": " Hello there.", "context_id": "x", "flush": True})
        error, final = receive(ws), receive(ws)
        assert error["error"] == "voice_not_found" and error["code"] == 404 and error["contextId"] == "x"
        assert final == {"isFinal": True, "contextId": "x", "context_id": "x"}  # the client's context ends now
        add_voice(client, "bob", short_wav, SHORT_TEXT)
        ws.send_json({"text": " Hello again.", "context_id": "x"})  # its id, after its isFinal: a new context
        ws.send_json({"context_id": "x", "close_context": True})
        messages = until_final(ws, {"x"})
        assert chars(messages, "x") == " Hello again."
        close_socket(ws)


def test_bad_messages_and_text_over_the_limit_are_refused_and_the_socket_goes_on(client):
    limit = client.app.state.services.settings.limits.max_input_chars
    with client.websocket_connect(url()) as ws:
        ws.send_text("{not json")
        assert receive(ws)["error"] == "invalid_message"
        ws.send_json({"text": 5, "context_id": "x"})
        assert receive(ws)["error"] == "invalid_message"
        ws.send_text('{"text": "' + "a" * 70_000 + '"}')
        assert receive(ws)["error"] == "message_too_large"
        ws.send_json({"text": " " + "word " * (limit // 5 + 1), "context_id": "x"})
        refused = receive(ws)
        assert refused["error"] == "input_too_long" and refused["contextId"] == "x"
        ws.send_json({"text": " Still here.", "context_id": "x"})
        ws.send_json({"context_id": "x", "close_context": True})
        assert chars(until_final(ws, {"x"}), "x") == " Still here."
        close_socket(ws)


def test_close_socket_stops_every_context_at_once(client):
    text = " " + " ".join(f"Sentence number {n} is here." for n in range(8))  # eight pieces each
    with client.websocket_connect(url()) as ws:
        for cid in "abcde":
            ws.send_json({"text": text, "context_id": cid})
        ws.send_json({"text": " Too many.", "context_id": "f"})
        assert receive(ws)["error"] == "too_many_contexts"
        ws.send_json({"close_socket": True})
        messages = []
        while "closed" not in (message := receive(ws)):
            messages.append(message)
    assert message["closed"] == 1000
    assert len(messages) < 10 and not any("isFinal" in m for m in messages)  # of forty pieces


@pytest.mark.parametrize("query, code", [({"output_format": "wav"}, "unsupported_output_format"),
                                         ({"model_id": "no-such-model"}, "unknown_model"),
                                         ({"inactivity_timeout": "500"}, "invalid_inactivity_timeout")])
def test_bad_settings_close_the_socket_with_the_error(client, query, code):
    target = url(**{k: v for k, v in query.items() if k != "output_format"},
                 output_format=query.get("output_format", "pcm_24000")).replace("model_id=eleven_flash_v2_5&", "")
    with client.websocket_connect(target) as ws:
        error = receive(ws)
        assert error["error"] == code and error["code"] == 400 and "message" in error
        assert receive(ws)["closed"] == 1008


@pytest.mark.slow  # waits out the timeout
def test_a_silent_socket_is_closed_after_its_inactivity_timeout(client):
    with client.websocket_connect(url(inactivity_timeout=1)) as ws:
        started = time.monotonic()
        assert receive(ws, timeout=10)["error"] == "input_timeout_exceeded"
        assert receive(ws)["closed"] == 1008
    assert 0.9 < time.monotonic() - started < 5


@pytest.fixture
def keyed(tmp_path, backends, short_wav):
    client = make_client(tmp_path, backends, short_wav, headers={"Authorization": "Bearer sk-admin"}, api_keys=[
        {"name": "ops", "key": "sk-admin", "scopes": ["admin"]},
        {"name": "app", "key": "sha256:" + hashlib.sha256(KEY.encode()).hexdigest(), "scopes": ["speak"]}])
    client.headers.pop("Authorization")  # it added the voice; each socket below presents its own key
    return client


def speak_once(ws, text: str = " Hello there.") -> str:
    ws.send_json({"text": text, "context_id": "k"})
    ws.send_json({"context_id": "k", "close_context": True})
    said = chars(until_final(ws, {"k"}), "k")
    close_socket(ws)
    return said


@pytest.mark.parametrize("headers", [{"xi-api-key": KEY}, {"Authorization": f"Bearer {KEY}"}])
def test_the_key_at_the_handshake(keyed, headers):
    with keyed.websocket_connect(url(), headers=headers) as ws:
        assert speak_once(ws) == " Hello there."


def test_the_key_in_the_first_message(keyed):
    with keyed.websocket_connect(url()) as ws:
        ws.send_json({"text": " ", "context_id": "k", "xi_api_key": KEY})
        assert speak_once(ws, "Hello there.") == " Hello there."


@pytest.mark.parametrize("headers, first", [({}, {"text": " ", "context_id": "k"}),
                                            ({}, {"text": " ", "context_id": "k", "xi_api_key": "sk-wrong"}),
                                            ({"xi-api-key": "sk-wrong"}, None)])
def test_no_key_or_a_wrong_one_is_refused(keyed, headers, first):
    with keyed.websocket_connect(url(), headers=headers) as ws:
        if first is not None:
            ws.send_json(first)
        error = receive(ws)
        assert error["error"] == "invalid_api_key" and error["code"] == 401
        assert receive(ws)["closed"] == 1008


def spoken_bytes(client, output_format: str) -> bytes:
    with client.websocket_connect(url(output_format=output_format, seed=7)) as ws:
        ws.send_json({"text": " Hello there, my friend.", "context_id": "r"})
        ws.send_json({"context_id": "r", "close_context": True})
        messages = until_final(ws, {"r"})
        close_socket(ws)
    return b"".join(base64.b64decode(m["audio"]) for m in messages if "audio" in m)


@pytest.mark.slow  # one socket per format
def test_each_rate_carries_the_same_audio_duration(client):
    samples_24k = len(spoken_bytes(client, "pcm_24000")) // 2
    assert samples_24k > 24000 * 0.3
    for rate in (8000, 16000, 22050, 44100, 48000):
        samples = len(spoken_bytes(client, f"pcm_{rate}")) // 2
        assert abs(samples - samples_24k * rate / 24000) <= 2, rate
    ulaw = spoken_bytes(client, "ulaw_8000")
    assert abs(len(ulaw) - samples_24k / 3) <= 2 and np.abs(ulaw_decode(ulaw)).max() > 0


def test_mp3_pieces_are_whole_files(client):
    with client.websocket_connect(url(output_format="mp3_22050_32")) as ws:
        ws.send_json({"text": " Hello there. And more.", "context_id": "m"})
        ws.send_json({"context_id": "m", "close_context": True})
        messages = [m for m in until_final(ws, {"m"}) if "audio" in m]
        close_socket(ws)
    for m in messages:
        audio, rate = sf.read(io.BytesIO(base64.b64decode(m["audio"])))
        assert rate == 22050 and len(audio) > 0


@pytest.mark.slow  # Whisper hears each piece
def test_alignment_heard_in_the_audio_on_request(client, backends):
    listened = backends.transcriber.listened
    with client.websocket_connect(url(alignment="heard")) as ws:
        ws.send_json({"text": " Dr. Smith paid $5.20.", "context_id": "h"})
        ws.send_json({"context_id": "h", "close_context": True})
        messages = until_final(ws, {"h"})
        close_socket(ws)
    assert chars(messages, "h") == " Dr. Smith paid $5.20."
    for m in messages[:-1]:
        assert_alignment_within_audio(m)
    assert backends.transcriber.listened > listened  # heard, not planned


def test_an_id_is_one_context_at_a_time(client):
    with client.websocket_connect(url()) as ws:
        ws.send_json({"text": " One sentence here. And another.", "context_id": "x"})
        ws.send_json({"context_id": "x", "close_context": True})
        ws.send_json({"text": " Too soon.", "context_id": "x"})  # x still speaks its text
        messages = until_final(ws, {"x"})
        refused = next(m for m in messages if "error" in m)
        assert refused["error"] == "context_finishing" and refused["contextId"] == "x"
        assert chars(messages, "x") == " One sentence here. And another."
        close_socket(ws)


def frame(payload: dict) -> bytes:
    """A client's masked text frame (RFC 6455), for a client that only writes."""
    data = json.dumps(payload).encode()
    mask = b"\x01\x02\x03\x04"
    size = bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + len(data).to_bytes(2, "big")
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.slow  # waits out a send timeout on a served app
def test_a_client_that_reads_nothing_is_dropped(tmp_path, backends, short_wav, monkeypatch):
    monkeypatch.setattr(live_socket, "SEND_TIMEOUT_S", 1.0)
    app = make_client(tmp_path, backends, short_wav).app
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # inherited by the server's connections
    server = uvicorn.Server(uvicorn.Config(app, ws="websockets-sansio", lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        client.sendall(f"GET {url(output_format='pcm_48000')} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        text = " " + " ".join(f"This is sentence number {n}, spoken to nobody." for n in range(12))
        client.settimeout(10)
        assert client.recv(4096).startswith(b"HTTP/1.1 101")  # the handshake's answer, before any frame
        client.sendall(frame({"text": text, "context_id": "x"}) + frame({"context_id": "x", "close_context": True}))
        time.sleep(5)  # the server makes audio, fills the buffers, and gives up on sending
        received = b""
        while chunk := client.recv(1 << 16):  # what was buffered, then the end: not the whole text's audio
            received += chunk
        assert b"isFinal" not in received
        client.close()
    finally:
        server.should_exit = True
        thread.join(10)

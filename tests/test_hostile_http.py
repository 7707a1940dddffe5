"""Requests an attacker would send: a body that never ends, a body without a key, a file built to
make parsing slow. None may stall the replica or make it read more than a route's limit; each is a
4xx naming the problem (docs/ARCHITECTURE.md, "Threats")."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from speech_service.audio import uploads
from speech_service.config import ApiKey, ServiceSettings
from speech_service.errors import BadRequest
from speech_service.http.app import create_app
from speech_service.http.auth import KeyGate, KeyRing, anonymous_admin_refusal

from conftest import SHORT_TEXT
from served import served_app

MB = 1024 * 1024
EMPTY_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # a tag with no frames: 10 bytes
ID3_BOMB = EMPTY_ID3 * (4 * MB // len(EMPTY_ID3))  # 4 MB of nothing but empty tags


MP3_FRAME = b"\xff\xfb\x90\x00" + bytes(400)
# One tag that declares 4 MB of padding, then a frame: sniffed as mp3, so ffmpeg reads it all.
ONE_BIG_TAG = b"ID3\x04\x00\x00" + bytes([0x02, 0x00, 0x00, 0x00]) + bytes(4 * MB) + MP3_FRAME


def test_many_id3_tags_are_no_audio_file_known_at_once():
    """A file of 400,000 empty tags is refused after a few (the old loop copied the rest of the file
    per tag: 13.9 s for 4 MB, about half an hour for 50 MB, on the event loop in /verify)."""
    started = time.process_time()
    assert uploads.sniff_container(ID3_BOMB) is None
    assert uploads.sniff_container(ID3_BOMB + MP3_FRAME) is None
    assert time.process_time() - started < 0.5  # bounded: microseconds here; the old loop: seconds
    assert uploads.sniff_container(EMPTY_ID3 * 2 + MP3_FRAME) == "mp3"  # real files: a tag or two, then frames
    assert uploads.sniff_container(ONE_BIG_TAG) == "mp3"
    with pytest.raises(BadRequest, match="ID3 tags with no audio"):
        uploads.decode(ID3_BOMB, max_seconds=600)


@pytest.mark.slow  # a served app and 32 MB of posts; the sniff's bound above stays in the minute loop
def test_health_answers_while_id3_bombs_go_to_every_route_that_takes_a_file(tmp_path, backends, short_wav):
    """Must show of the hostile-world issue: while a 4 MB file of empty ID3 tags is posted to every
    route that takes a file, `/healthz` on the same replica answers within 0.5 s throughout, and
    each post is refused within 10 s (a 4xx; verify's contract answers a file without credentials
    200 `found: false`)."""
    with served_app(tmp_path / "store", backends, jobs={"sweep_interval_s": 3600}) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        voice = client.post("/v1/voices", data={"name": "alice", "ref_text": SHORT_TEXT},
                            files={"file": ("a.wav", short_wav.read_bytes())})
        assert voice.status_code == 201, voice.text
        challenge = client.post("/v1/voices/alice/consent/challenge").json()["id"]
        posts = {
            "voice": lambda bomb: client.post("/v1/voices", data={"name": "bomb", "ref_text": SHORT_TEXT},
                                              files={"file": ("b.mp3", bomb)}),
            "consent": lambda bomb: client.post("/v1/voices/alice/consent", files={"file": ("r.mp3", bomb)}, data={
                "method": "spoken", "given_by": "Alice", "challenge_id": challenge}),
            "verify": lambda bomb: client.post("/v1/provenance/verify", files={"file": ("b.mp3", bomb)}),
            "verify with a sidecar": lambda bomb: client.post(
                "/v1/provenance/verify", files={"file": ("b.mp3", bomb), "manifest": ("b.c2pa", bomb)}),
        }
        stop, health = threading.Event(), []

        def watch_health():
            with httpx.Client(base_url=url, timeout=5) as own:
                while not stop.is_set():
                    started = time.monotonic()
                    assert own.get("/healthz").status_code == 200
                    health.append(time.monotonic() - started)
                    time.sleep(0.02)

        def post(item):
            (what, send), bomb = item
            started = time.monotonic()
            response = send(bomb)
            refused = 400 <= response.status_code < 500
            if what.startswith("verify") and response.status_code == 200:  # verify's own answer for such a file
                refused = response.json()["found"] is False
            return what, refused, response.status_code, time.monotonic() - started

        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(post, [(p, bomb) for p in posts.items() for bomb in (ID3_BOMB, ONE_BIG_TAG)]))
        finally:
            stop.set()
            watcher.join(10)
    for what, refused, status, took in answers:  # verify: a file without credentials is `found: false`
        assert refused and took < 10, (what, status, took)
    assert len(health) > 5 and max(health) < 0.5, max(health)


# -- bodies counted as they arrive -------------------------------------------------------------------

async def _call(app, method: str, path: str, *, chunks: int, chunk: bytes, headers=(),
                first: bytes = b"") -> tuple[int, dict, int]:
    """An ASGI request whose body arrives in `chunks` pieces (after `first`), as a chunked upload
    does (no Content-Length); returns the status, the JSON answer and how many bytes the app pulled."""
    pulled, sent = 0, 0
    answer: dict = {}

    async def receive():
        nonlocal pulled, sent
        if sent == chunks:
            await asyncio.sleep(3600)  # the client waits for the answer (a disconnect would be one)
        body = first + chunk if sent == 0 else chunk
        sent += 1
        pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": sent < chunks}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"test"), *[(k.encode(), v.encode()) for k, v in headers]]}
    await asyncio.wait_for(app(scope, receive, send), 60)
    return answer["status"], json.loads(answer.get("body") or b"{}"), pulled


def _app(tmp_path, backends, **settings):
    return create_app(ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}, **settings}),
                      backends)


CHUNK = b"x" * (64 * 1024)
ENDLESS = 200 * MB // len(CHUNK)  # 200 MB, were it all read


@pytest.mark.parametrize("path, content_type, limit", [
    ("/v1/audio/speech", "application/json", 1 * MB),  # limits.max_json_bytes
    ("/v1/voices", "multipart/form-data; boundary=b", 50 * MB),  # limits.max_upload_bytes
    ("/v1/jobs", "application/json", 1 * MB),
])
def test_a_chunked_body_is_refused_once_it_passes_its_routes_limit(tmp_path, backends, path, content_type, limit):
    app = _app(tmp_path, backends)
    form = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'  # then the file
    status, answer, pulled = asyncio.run(_call(app, "POST", path, chunks=ENDLESS, chunk=CHUNK,
                                               headers=[("content-type", content_type)],
                                               first=form if "multipart" in content_type else b""))
    assert status == 413 and answer["error"]["code"] in ("body_too_large", "upload_too_large"), answer
    assert limit < pulled <= limit + 64 * 1024 + len(CHUNK) + len(form)  # the limit and the form's slack, not 200 MB


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read(tmp_path, backends):
    app = _app(tmp_path, backends)
    status, answer, pulled = asyncio.run(_call(app, "POST", "/v1/audio/speech", chunks=ENDLESS, chunk=CHUNK, headers=[
        ("content-type", "application/json"), ("content-length", str(200 * MB))]))
    assert (status, answer["error"]["code"], pulled) == (413, "body_too_large", 0)


@pytest.mark.parametrize("headers", [[], [("authorization", "Bearer wrong")]], ids=["no key", "wrong key"])
@pytest.mark.parametrize("path", ["/v1/voices", "/v1/audio/speech", "/v1/provenance/verify"])
def test_a_body_without_a_valid_key_is_refused_before_it_is_read(tmp_path, backends, path, headers):
    """With keys configured, a 50 MB body sent without a key (or with a wrong one) is 401 at once:
    the service reads none of it."""
    app = _app(tmp_path, backends, api_keys=["sk-right"])
    status, answer, pulled = asyncio.run(_call(app, "POST", path, chunks=50 * MB // len(CHUNK), chunk=CHUNK,
                                               headers=[("content-type", "multipart/form-data; boundary=b"),
                                                        *headers]))
    assert (status, answer["error"]["code"], pulled) == (401, "invalid_api_key", 0)


def test_the_limits_hold_over_real_http(tmp_path, backends):
    """The same over a socket: a chunked speech body that never ends is answered 413, and the client
    had sent far less than it would (the server stopped reading near the 1 MB limit)."""
    sent = 0

    def endless():
        nonlocal sent
        while sent < 200 * MB:
            sent += len(CHUNK)
            yield CHUNK

    with served_app(tmp_path / "store", backends) as url:
        try:
            response = httpx.post(f"{url}/v1/audio/speech", content=endless(),
                                  headers={"content-type": "application/json"}, timeout=30)
            assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
        except (httpx.WriteError, httpx.RemoteProtocolError):
            pass  # the server answered and closed while the client was still sending: refused all the same
    assert sent < 32 * MB, sent  # the limit, plus what the sockets' buffers held


# -- who is limited ----------------------------------------------------------------------------------

async def _through_gate(gate: KeyGate, client: str, key: str | None = None, path: str = "/v1/voices") -> int:
    status = {}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]

    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers, "client": (client, 1)}
    await gate(scope, None, send)
    return status["code"]


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


PUBLIC = frozenset({"/v1/audio/voices"})


def test_callers_without_a_key_are_limited_per_address():
    """The public catalog's callers send no key: each address has its own bucket; /healthz has none."""
    gate = KeyGate(_ok, KeyRing([ApiKey(name="ops", key="sk-ops")]), anonymous_per_minute=3, public=PUBLIC)
    first = [asyncio.run(_through_gate(gate, "10.0.0.1", path="/v1/audio/voices")) for _ in range(4)]
    assert first == [200, 200, 200, 429]
    assert asyncio.run(_through_gate(gate, "10.0.0.2", path="/v1/audio/voices")) == 200  # its own bucket
    assert all(asyncio.run(_through_gate(gate, "10.0.0.1", path="/healthz")) == 200 for _ in range(5))


def test_open_mode_has_no_limits():
    """No keys: the loopback demo, or an operator who said so; limits come with keys."""
    gate = KeyGate(_ok, KeyRing([]), anonymous_per_minute=1)
    assert all(asyncio.run(_through_gate(gate, "127.0.0.1")) == 200 for _ in range(5))


def test_wrong_keys_count_against_the_address_so_keys_cannot_be_guessed_at_speed():
    gate = KeyGate(_ok, KeyRing([ApiKey(name="ops", key="sk-right")]), anonymous_per_minute=2)
    guesses = [asyncio.run(_through_gate(gate, "10.0.0.1", key=f"sk-{n}")) for n in range(3)]
    assert guesses == [401, 401, 429]
    assert asyncio.run(_through_gate(gate, "10.0.0.1", key="sk-right")) == 200  # a key has its own limits


def test_a_rate_under_one_a_minute_still_lets_requests_through():
    """`requests_per_minute: 0.5` is one request every two minutes, not a key refused forever."""
    now = [0.0]
    gate = KeyGate(_ok, KeyRing([ApiKey(name="slow", key="sk-slow", requests_per_minute=0.5)]),
                   anonymous_per_minute=60, clock=lambda: now[0])
    assert asyncio.run(_through_gate(gate, "10.0.0.1", key="sk-slow")) == 200
    assert asyncio.run(_through_gate(gate, "10.0.0.1", key="sk-slow")) == 429
    now[0] += 120
    assert asyncio.run(_through_gate(gate, "10.0.0.1", key="sk-slow")) == 200


def test_anonymous_buckets_are_bounded():
    gate = KeyGate(_ok, KeyRing([ApiKey(name="ops", key="sk-ops")]), anonymous_per_minute=60, public=PUBLIC)
    gate.MAX_ADDRESSES = 100
    for n in range(1000):
        asyncio.run(_through_gate(gate, f"10.0.{n // 256}.{n % 256}", path="/v1/audio/voices"))
    assert len(gate._usage) <= 101


# -- open by default only on loopback ----------------------------------------------------------------

def test_no_keys_on_a_network_address_refuses_to_start_unless_the_operator_says_so():
    open_ring, keyed = KeyRing([]), KeyRing([ApiKey(name="ops", key="sk-ops")])
    refusal = anonymous_admin_refusal(open_ring, "0.0.0.0", allowed=False)
    assert refusal and "api_keys" in refusal and "allow_anonymous_admin" in refusal
    assert anonymous_admin_refusal(open_ring, "10.1.2.3", allowed=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.1.1"):  # a demo on this machine stays open
        assert anonymous_admin_refusal(open_ring, host, allowed=False) is None
    assert anonymous_admin_refusal(open_ring, "0.0.0.0", allowed=True) is None  # said explicitly
    assert anonymous_admin_refusal(keyed, "0.0.0.0", allowed=False) is None


def test_the_shipped_profiles_are_secure_by_default():
    """Production and the cluster as shipped (0.0.0.0, no keys) refuse to start until keys are set; the
    offline demo (127.0.0.1) runs as before."""
    from deployments.profiles import load_profile

    for name, refused in (("production", True), ("offline", False), ("cluster", True)):
        config = load_profile(name)
        args = ServiceSettings.model_validate(config["applications"][0]["args"])
        host = config.get("http_options", {}).get("host", "0.0.0.0")
        assert bool(anonymous_admin_refusal(KeyRing(args.keys()), host, args.allow_anonymous_admin)) is refused

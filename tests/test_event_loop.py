"""The Ingress's event loop never waits on the store: a store that does not answer holds up the
request that needs it, never `/healthz` or any other request of the same replica."""

import socket
import threading
import time

import httpx
import pytest

from conftest import SHORT_TEXT
from served import served_app


@pytest.fixture
def silent_s3():
    """A listener that accepts connections and never replies, as a hung S3 endpoint does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", held
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.slow
def test_health_answers_while_a_voice_creation_waits_on_a_silent_s3(silent_s3, backends, short_wav, monkeypatch):
    endpoint, held = silent_s3
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    store = {"kind": "s3", "bucket": "voices", "endpoint_url": endpoint, "read_timeout_s": 2, "max_attempts": 1}
    with served_app(store, backends, jobs={"sweep_interval_s": 3600}) as url:
        answers = []

        def create():
            answers.append(httpx.post(f"{url}/v1/voices", data={"name": "alice", "ref_text": SHORT_TEXT},
                                      files={"file": ("a.wav", short_wav.read_bytes())}, timeout=60))

        time.sleep(0.3)  # the job sweep at start-up has reached the store by now
        before = len(held)
        creating = threading.Thread(target=create)
        creating.start()
        deadline = time.monotonic() + 10
        while len(held) == before and time.monotonic() < deadline:  # the creation waits on the store now
            time.sleep(0.02)
        assert len(held) > before, "the voice creation never reached the store"
        waits = []
        for _ in range(5):
            started = time.monotonic()
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            waits.append(time.monotonic() - started)
            time.sleep(0.1)
        assert creating.is_alive()  # still waiting on the store while health answered
        assert max(waits) < 0.5, waits
        creating.join(30)
    assert answers[0].status_code == 503 and answers[0].json()["error"]["code"] == "store_unavailable"


def test_no_route_or_dependency_of_the_api_takes_a_thread_of_its_own():
    """FastAPI runs a plain `def` route or dependency in its thread pool: a hop per request and
    dependency (about 1 ms each on 2 busy cores). Blocking work goes to threads of our choosing."""
    import inspect

    from fastapi.routing import APIRoute

    from speech_service.http import auth
    from speech_service.http.routes import audit, catalog, consent, jobs, provenance, speech, system, voices

    def calls(dependant):
        for dependency in dependant.dependencies:
            yield dependency.call
            yield from calls(dependency)

    routes = [route for module in (audit, catalog, consent, jobs, provenance, speech, system, voices)
              for route in module.router.routes if isinstance(route, APIRoute)]
    assert len(routes) > 20
    in_threads = {f"{route.path} {getattr(call, '__qualname__', call)}" for route in routes
                  for call in [route.endpoint, *calls(route.dependant)] if not inspect.iscoroutinefunction(call)}
    assert not in_threads, in_threads
    assert inspect.iscoroutinefunction(auth.authenticated)  # every /v1 router's own dependency

"""An Ingress replica's live sockets: bounded below Serve's request slots, counted in `/v1/status`, and
told when the replica stops (docs/ARCHITECTURE.md, "Live text in"). In process."""

import asyncio
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_live_socket import close_socket, make_client, receive, url

from speech_service.config import ServiceSettings
from speech_service.errors import Overloaded, ReplicaStopping
from speech_service.http.app import create_app
from speech_service.service.live import ContextDone, LiveSession, LiveSessions


def test_sockets_past_the_limit_are_refused_and_a_closed_one_frees_its_seat():
    async def scenario():
        sessions = LiveSessions(max_sockets=2)
        first, _ = sessions.open(), sessions.open()
        with pytest.raises(Overloaded) as refused:
            sessions.open()
        first.close()
        sessions.open()
        return refused.value, sessions.counts()

    refused, counts = asyncio.run(scenario())
    assert refused.code == "too_many_sockets" and "limits.max_sockets" in refused.message
    assert counts["sockets"] == 2 and counts["max_sockets"] == 2


@pytest.mark.slow  # many sockets; its one-socket twin stays fast
def test_a_stopping_replica_tells_every_socket_and_refuses_new_ones():
    checks = []

    def stopping() -> bool:  # what the deployment asks Serve; here the third look says yes
        checks.append(1)
        return len(checks) >= 3

    async def scenario():
        sessions = LiveSessions(max_sockets=10, stopping=stopping)
        seats = [sessions.open() for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*(seat.stopping.wait() for seat in seats)), 10)
        with pytest.raises(ReplicaStopping):
            sessions.open()
        return sessions.counts()

    counts = asyncio.run(scenario())
    assert counts["stopping"] and len(checks) == 3


def test_the_status_counts_this_replicas_sockets_contexts_and_tasks(tmp_path):
    async def speak(body, text):
        await asyncio.sleep(30)  # a piece being made

    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path)}})
    client = TestClient(create_app(settings, backends=_NoModels()))
    live = client.app.state.services.live

    async def scenario():
        seat = live.open()
        session = seat.hold(LiveSession(speak))
        session.context("a", {"voice": "v"}).add("One sentence. And a", flush=False)
        await asyncio.sleep(0)
        during = live.counts()
        await session.close()
        seat.close()
        await asyncio.sleep(0)
        return during, live.counts()

    during, after = asyncio.run(scenario())
    assert during == {"sockets": 1, "max_sockets": 100, "contexts": 1, "pieces_in_flight": 1, "tasks": 2,
                      "stopping": False}
    assert after == {**during, "sockets": 0, "contexts": 0, "pieces_in_flight": 0, "tasks": 0}
    status = client.get("/v1/status").json()
    assert status["deployments"]["Ingress"]["this_replica"]["live"]["sockets"] == 0


class _NoModels:
    """Backends that no test here reaches: status wakes no model."""

    async def status(self):
        return {"deployments": {}}



def test_the_sockets_of_a_replica_have_at_most_max_pieces_at_the_synthesizer():
    """Beyond the share, pieces wait at the Ingress instead of filling the Synthesizer's queue, which
    would refuse HTTP speech (and the pieces) as `overloaded`."""
    busy, most = 0, 0

    async def speak(body, text):
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.01)
        busy -= 1
        return np.zeros(240, np.float32), None

    async def scenario():
        sessions = LiveSessions(max_sockets=10, max_pieces=3)
        held = [sessions.open().hold(LiveSession(speak)) for _ in range(4)]
        for session in held:
            session.context("a", {"voice": "v"}).add("One. Two. Three. Four. Five.", flush=True)
            session.context("a").close()
        for session in held:
            while not isinstance(await asyncio.wait_for(session.outbox.get(), 10), ContextDone):
                pass
        return len(sessions.tasks)

    assert asyncio.run(scenario()) == 0
    assert most == 3


# -- over the socket route, in process ---------------------------------------------------------

def test_a_socket_past_max_sockets_gets_the_protocols_error_and_1013(tmp_path, backends, short_wav):
    client = make_client(tmp_path, backends, short_wav, limits={"max_sockets": 1})
    with client.websocket_connect(url()) as first:
        first.send_json({"text": ""})  # the first socket holds its seat
        with client.websocket_connect(url()) as second:
            refusal, closed = receive(second), receive(second)
        assert close_socket(first)["closed"] == 1000
    assert refusal["error"] == "too_many_sockets" and "limits.max_sockets" in refusal["message"]
    assert closed["closed"] == 1013
    with client.websocket_connect(url()) as again:  # the seat was given back
        assert close_socket(again)["closed"] == 1000


def test_a_stopping_replica_tells_each_open_context_then_closes_with_1012(tmp_path, backends, short_wav):
    client = make_client(tmp_path, backends, short_wav)
    stop = threading.Event()
    client.app.state.services.live.stopping = stop.is_set  # what the deployment asks Serve
    with client.websocket_connect(url()) as ws:
        for context in ("a", "b"):
            ws.send_json({"text": " ", "context_id": context})
            ws.send_json({"text": "A long text still being spoken when the replica stops, and", "context_id": context})
        stop.set()
        messages = []
        while "closed" not in (message := receive(ws)):
            messages.append(message)
    errors = [m for m in messages if "error" in m]
    assert {m["contextId"] for m in errors} == {"a", "b"} and {m["error"] for m in errors} == {"replica_stopping"}
    assert message["closed"] == 1012
    assert client.app.state.services.live.counts()["sockets"] == 0
    with client.websocket_connect(url()) as ws:  # new sockets are refused the same way
        assert receive(ws)["error"] == "replica_stopping" and receive(ws)["closed"] == 1012


@pytest.mark.slow  # waits past an inactivity timeout
def test_a_client_waiting_for_audio_still_being_made_is_not_closed_as_inactive(tmp_path, backends, short_wav,
                                                                             monkeypatch):
    """Under load (pieces waiting for their share of the Synthesizer) a client that sent all its text
    may wait longer than its `inactivity_timeout` for the audio owed to it."""
    made = backends.synthesizer.synthesize_segment

    async def busy(reference, plan, index):  # a Synthesizer that takes longer than the timeout
        await asyncio.sleep(1.5)
        return await made(reference, plan, index)

    monkeypatch.setattr(backends.synthesizer, "synthesize_segment", busy)
    client = make_client(tmp_path, backends, short_wav)
    with client.websocket_connect(url(inactivity_timeout=1)) as ws:
        ws.send_json({"text": " One sentence. And another one.", "context_id": "k"})
        ws.send_json({"context_id": "k", "close_context": True})
        messages = [receive(ws) for _ in range(3)]
        assert close_socket(ws)["closed"] == 1000
    assert [bool(m.get("audio")) for m in messages] == [True, True, False] and messages[-1]["isFinal"]

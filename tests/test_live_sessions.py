"""An Ingress replica's live sockets: bounded below Serve's request slots, counted in `/v1/status`, and
told when the replica stops (docs/ARCHITECTURE.md, "Live text in"). In process."""

import asyncio

import pytest
from fastapi.testclient import TestClient

from speech_service.config import ServiceSettings
from speech_service.errors import Overloaded, ReplicaStopping
from speech_service.http.app import create_app
from speech_service.service.live import LiveSession, LiveSessions


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

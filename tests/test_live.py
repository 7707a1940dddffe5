"""Live text in, below the protocol: a session's contexts cut text as it arrives, speak each piece as
soon as it is complete, deliver in order, and leave nothing behind when dropped. In process, on the
tiny model."""

import asyncio

import pytest
from fastapi.testclient import TestClient

from speech_service.config import ServiceSettings
from speech_service.errors import ServiceError
from speech_service.http.app import create_app
from speech_service.service.live import ContextDone, ContextFailed, LiveSession, LiveSpeech, Spoken

from conftest import SHORT_TEXT, add_voice

BODY = {"voice": "alice", "nfe_step": 2, "seed": 5}
SENT = "Hello there, Dr. Smith.It costs $5.20 today!Shall we go?"


@pytest.fixture
def speech(tmp_path, backends, short_wav):
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")}})
    client = TestClient(create_app(settings, backends))
    add_voice(client, "alice", short_wav, SHORT_TEXT)
    return client.app.state.services.speech


async def drain(session: LiveSession, until: set[str]) -> list:
    events = []
    while until:
        event = await asyncio.wait_for(session.outbox.get(), 120)
        events.append(event)
        if isinstance(event, ContextDone | ContextFailed):
            until.discard(event.context_id)
    return events


def test_three_contexts_each_speak_in_order_on_the_characters_sent(speech):
    async def scenario():
        session = LiveSession(LiveSpeech(speech).speak)
        texts = {"a": SENT, "b": "One more thing. And another.", "c": "This one is dropped midway, and"}
        for i in range(0, max(map(len, texts.values())), 4):
            for cid, text in texts.items():
                if i < len(text):
                    session.context(cid, BODY).add(text[i:i + 4])
            await asyncio.sleep(0.03)
        session.contexts["c"].cancel()
        session.context("a").close()
        session.context("b").close()
        events = await drain(session, {"a", "b"})
        await session.close()
        return events, session

    events, session = asyncio.run(scenario())
    for cid, text in (("a", SENT), ("b", "One more thing. And another.")):
        spoken = [e for e in events if isinstance(e, Spoken) and e.context_id == cid]
        assert "".join(c for e in spoken for c in e.alignment.chars) == text
        for e in spoken:
            a = e.alignment
            assert len(a.chars) == len(a.starts_s) == len(a.durations_s)
            assert all(0 <= s <= len(e.wave) / 24000 + 1e-6 for s in a.starts_s)
            assert a.starts_s == sorted(a.starts_s)
    assert len([e for e in events if isinstance(e, Spoken) and e.context_id == "a"]) == 4  # four pieces
    dropped = "".join(c for e in events if isinstance(e, Spoken) and e.context_id == "c" for c in e.alignment.chars)
    assert "This one is dropped midway, and".startswith(dropped)  # what was made before it was dropped
    assert not any(isinstance(e, ContextDone) and e.context_id == "c" for e in events)
    assert session.contexts == {}


def test_a_piece_the_service_refuses_ends_its_context_with_the_error(speech):
    async def scenario():
        session = LiveSession(LiveSpeech(speech).speak)
        session.context("x", {**BODY, "voice": "nobody"}).add("Hello there. ")
        session.context("x").close()
        return await drain(session, {"x"})

    events = asyncio.run(scenario())
    assert isinstance(events[-1], ContextFailed) and events[-1].error.code == "voice_not_found"
    assert isinstance(events[-1].error, ServiceError)

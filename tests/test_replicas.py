"""The replica classes the deployments wrap, driven in process: their reload rules and refusals, and
the Ingress's call policy (`ModelCalls`) with the failures Ray reports."""

import asyncio
import time

import numpy as np
import pytest

from speech_service.audio import encoding
from speech_service.config import LimitSettings, SynthesisOptions
from speech_service.errors import (
    BadRequest,
    CapacityUnavailable,
    ModelUnavailable,
    Overloaded,
    ReferenceMissing,
    RequestTimeout,
    StreamInterrupted,
    SynthesizerUnavailable,
    Unprocessable,
)
from speech_service.references import Reference
from speech_service.service import model_calls
from speech_service.service.model_calls import ModelCalls
from speech_service.storage.voices import sha256
from speech_service.synthesis.replica import SynthesisReplica
from speech_service.transcription.replica import TranscriptionReplica

from conftest import SHORT_TEXT, decode_file


class Loads:
    """A loader that counts its calls and hands out the session's engine (or fails)."""

    def __init__(self, model, fail: Exception | None = None):
        self.model, self.fail, self.calls = model, fail, 0

    def __call__(self, settings, *rest):  # (settings, spec, clock) for the Synthesizer, (settings, clock) else
        self.calls += 1
        if self.fail:
            raise self.fail
        return self.model


@pytest.fixture
def voice(short_wav):
    wav = encoding.to_wav_bytes(decode_file(short_wav))
    return Reference("alice", sha256(wav), SHORT_TEXT, wav)


def test_a_replica_without_weights_stays_up_and_says_how_to_provide_them(synth_settings, voice):
    loads = Loads(None, FileNotFoundError("no such file: model.safetensors"))
    replica = SynthesisReplica(loader=loads)
    replica.reconfigure(synth_settings)
    with pytest.raises(ModelUnavailable) as err:
        asyncio.run(replica.synthesize(voice, "Hello.", SynthesisOptions()))
    assert "model.safetensors" in err.value.message and "checkpoint" in err.value.message
    assert replica.info()["load_error"] == err.value.message and replica.info()["model"] is None


def test_live_settings_apply_without_a_reload_and_weight_settings_reload(engine, synth_settings):
    loads = Loads(engine)
    replica = SynthesisReplica(loader=loads)
    replica.reconfigure(synth_settings)
    replica.reconfigure(synth_settings.model_copy(update={"defaults": SynthesisOptions(nfe_step=3),
                                                          "max_batch_size": 3}))
    assert loads.calls == 1 and engine.defaults.nfe_step == 3 and engine.max_batch_size == 3
    replica.reconfigure(synth_settings.model_copy(update={"use_ema": not synth_settings.use_ema}))
    assert loads.calls == 2  # a weight field: new weights
    replica.reconfigure(synth_settings)
    assert loads.calls == 3 and engine.defaults == synth_settings.defaults and engine.max_batch_size == 8


def test_refusals_are_answered_not_raised(engine, synth_settings, voice):
    replica = SynthesisReplica(loader=Loads(engine))
    replica.reconfigure(synth_settings)
    unknown = Reference("bob", "0" * 64, SHORT_TEXT)  # named only, never sent
    assert isinstance(asyncio.run(replica.synthesize(unknown, "Hello.", SynthesisOptions())), ReferenceMissing)
    assert isinstance(replica.plan(unknown, "Hello.", SynthesisOptions()), ReferenceMissing)

    async def first_piece(reference, text):
        return await anext(replica.synthesize_stream(reference, text, SynthesisOptions(nfe_step=2)))

    assert isinstance(asyncio.run(first_piece(unknown, "Hello.")), ReferenceMissing)
    too_long = Reference("alice", voice.sha256, SHORT_TEXT * 40, voice.wav)  # more text than the clip holds
    refused = asyncio.run(replica.synthesize(too_long, "Hello.", SynthesisOptions(nfe_step=2)))
    assert isinstance(refused, Unprocessable) and refused.code == "text_exceeds_frames"
    spoken = asyncio.run(replica.synthesize(voice, "Hello there.", SynthesisOptions(nfe_step=2, seed=1)))
    assert len(spoken.wave) > 0 and spoken.model_s > 0
    # The clip is kept: named only, it is found now.
    assert len(asyncio.run(replica.synthesize(voice.named(), "Hello.", SynthesisOptions(nfe_step=2))).wave) > 0


@pytest.mark.slow  # every segment made twice
def test_a_segment_of_a_plan_is_what_the_whole_response_has_there(engine, synth_settings, voice):
    replica = SynthesisReplica(loader=Loads(engine))
    replica.reconfigure(synth_settings)
    text = "The first sentence is here. " * 12
    options = SynthesisOptions(nfe_step=2, seed=4)
    plan = replica.plan(voice, text, options)
    assert len(plan.segments) >= 2 and plan.seed == 4
    segments = [asyncio.run(replica.synthesize_segment(voice, plan, i)).wave for i in range(len(plan.segments))]
    from speech_service.audio.seams import join

    whole = asyncio.run(replica.synthesize(voice, text, options)).wave
    assert np.abs(join(segments, plan.cross_fade_samples) - whole).max() < 1 / 32767


@pytest.mark.slow  # Whisper hears speech: seconds each
def test_the_transcriber_refuses_an_unknown_language_and_fails_without_its_model(whisper, whisper_settings,
                                                                               short_wav):
    replica = TranscriptionReplica(loader=Loads(whisper))
    replica.reconfigure(whisper_settings)
    clip = decode_file(short_wav)
    assert "fox" in replica.transcribe(clip, "en").lower()
    assert isinstance(replica.transcribe(clip, "xx"), BadRequest)
    broken = TranscriptionReplica(loader=Loads(None, OSError("no model.bin")))
    broken.reconfigure(whisper_settings)
    with pytest.raises(ModelUnavailable) as err:
        broken.transcribe(clip)
    assert "no model.bin" in err.value.message


# -- the call policy ---------------------------------------------------------------------------
class Gone(Exception):
    pass


class Full(Exception):
    retry_after_s = 7


def classify(exc):
    return {Gone: "replica_gone", Full: "backpressure"}.get(type(exc))


def calls(**limits) -> ModelCalls:
    return ModelCalls(LimitSettings(**{"request_timeout_s": 5, "capacity_wait_s": 5, **limits}), classify=classify)


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch):
    monkeypatch.setattr(model_calls, "REPLICA_RETRY_DELAY_S", 0.01)


def answers(*outcomes):
    """`start` for a call whose attempts end as `outcomes` say (an exception is raised)."""
    outcomes = list(outcomes)
    started = []

    async def attempt(outcome):
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def start():
        started.append(1)
        return attempt(outcomes.pop(0))

    return start, started


def test_a_call_whose_replica_died_is_sent_again_once():
    start, started = answers(Gone("actor died"), "speech")
    assert asyncio.run(calls().call("Synthesizer", SynthesizerUnavailable, start)) == "speech" and len(started) == 2
    start, started = answers(Gone("actor died"), Gone("actor died again"), "never")
    with pytest.raises(SynthesizerUnavailable) as err:
        asyncio.run(calls().call("Synthesizer", SynthesizerUnavailable, start))
    assert len(started) == 2 and err.value.status_code == 503 and err.value.headers["Retry-After"]


def test_a_call_whose_replica_node_was_lost_is_sent_again_without_waiting_out_its_timeout(monkeypatch):
    """A node cut off the network fails no call by itself: the call asks whether its replica's node
    is still there, and is sent again (to a live replica) when it is not."""
    monkeypatch.setattr(model_calls, "NODE_CHECK_S", 0.05)
    first, started = Hanging(), []

    def start():
        started.append(1)
        return first if len(started) == 1 else _now("speech")

    policy = ModelCalls(LimitSettings(request_timeout_s=30, capacity_wait_s=30), classify=classify,
                        replica_lost=lambda response, since: response is first)
    began = time.monotonic()
    assert asyncio.run(policy.call("Synthesizer", SynthesizerUnavailable, start)) == "speech"
    assert len(started) == 2 and first.cancelled and time.monotonic() - began < 2


def test_a_stream_whose_replica_node_is_lost_breaks_off_interrupted(monkeypatch):
    monkeypatch.setattr(model_calls, "NODE_CHECK_S", 0.05)

    class Pieces:  # a stream that sends one piece, then nothing: its node is gone
        def __aiter__(self):
            return self

        async def __anext__(self):
            if not hasattr(self, "sent"):
                self.sent = True
                return b"one"
            await asyncio.sleep(3600)

    pieces, received = Pieces(), []
    policy = ModelCalls(LimitSettings(request_timeout_s=30), classify=classify,
                        replica_lost=lambda response, since: getattr(response, "sent", False))

    async def collect():
        async for piece in policy.stream("Synthesizer", SynthesizerUnavailable, lambda: pieces):
            received.append(piece)

    began = time.monotonic()
    with pytest.raises(StreamInterrupted):
        asyncio.run(collect())
    assert received == [b"one"] and time.monotonic() - began < 2


async def _now(value):
    return value


def test_a_full_queue_is_503_overloaded_with_its_retry_after():
    start, started = answers(Full())
    with pytest.raises(Overloaded) as err:
        asyncio.run(calls().call("Synthesizer", SynthesizerUnavailable, start))
    assert err.value.headers == {"Retry-After": "7"} and len(started) == 1


def test_a_returned_refusal_is_raised_and_other_errors_pass_through():
    start, _ = answers(BadRequest("empty", code="empty_input"))
    with pytest.raises(BadRequest):
        asyncio.run(calls().call("Synthesizer", SynthesizerUnavailable, lambda: _answered(start)))
    start, started = answers(ValueError("a bug"))
    with pytest.raises(ValueError):
        asyncio.run(calls().call("Synthesizer", SynthesizerUnavailable, start))
    assert len(started) == 1  # not a replica's death: not sent again


async def _answered(start):
    try:
        return await start()
    except BadRequest as exc:
        return exc  # as a replica returns its refusal


class Hanging:
    """A call that never answers, cancellable like a Ray response."""

    def __init__(self):
        self.cancelled = False

    def __await__(self):
        return asyncio.sleep(3600).__await__()

    def cancel(self):
        self.cancelled = True


def test_a_call_that_never_answers_is_504_within_its_bound_and_cancelled():
    hanging = Hanging()
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        asyncio.run(calls(request_timeout_s=0.3).call("Synthesizer", SynthesizerUnavailable, lambda: hanging))
    assert time.monotonic() - started < 2 and hanging.cancelled


def test_a_deployment_no_node_can_host_is_503_capacity_unavailable():
    policy = ModelCalls(LimitSettings(request_timeout_s=30, capacity_wait_s=0.2), classify=classify,
                        capacity_problem=lambda deployment: f"no node has a GPU for the {deployment}")
    started = time.monotonic()
    with pytest.raises(CapacityUnavailable) as err:
        asyncio.run(policy.call("Synthesizer", SynthesizerUnavailable, lambda: Hanging()))
    assert "GPU" in err.value.message and time.monotonic() - started < 3


def test_a_capacity_look_that_fails_is_no_verdict_and_the_call_still_answers(monkeypatch):
    looks = []

    def failing_look(deployment):
        looks.append(deployment)
        raise ValueError("the cluster's state could not be read")

    async def answer_later():
        await asyncio.sleep(0.6)
        return "speech"

    monkeypatch.setattr(model_calls, "CAPACITY_RECHECK_S", 0.1)
    policy = ModelCalls(LimitSettings(request_timeout_s=30, capacity_wait_s=0.1), classify=classify,
                        capacity_problem=failing_look)
    assert asyncio.run(policy.call("Synthesizer", SynthesizerUnavailable, answer_later)) == "speech"
    assert len(looks) >= 2  # looked, failed, and looked again while the call went on


def test_serve_status_is_read_one_thread_at_a_time(monkeypatch):
    """Ray's `serve.status()` breaks when two threads parse at once (see deployments/serve_state.py);
    a stand-in that fails the same way when entered twice at once must never fail."""
    import threading

    from deployments import serve_state

    inside, failures = [], []

    def status():
        if inside:
            failures.append("entered while another thread was inside")
        inside.append(1)
        time.sleep(0.02)
        inside.pop()
        return "status"

    monkeypatch.setattr(serve_state.serve, "status", status)
    threads = [threading.Thread(target=serve_state.serve_status) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_stream_is_retried_until_its_first_piece_and_then_raises_interrupted():
    opened = []

    async def pieces(fail_first: bool, fail_later: bool):
        if fail_first:
            raise Gone("died before its first piece")
        yield b"one"
        if fail_later:
            raise Gone("died mid-stream")
        yield b"two"

    def open_pieces():
        opened.append(1)
        return pieces(fail_first=len(opened) == 1, fail_later=True)

    received = []

    async def collect():
        async for piece in calls().stream("Synthesizer", SynthesizerUnavailable, open_pieces):
            received.append(piece)

    with pytest.raises(StreamInterrupted):  # a prefix is not passed off as the whole
        asyncio.run(collect())
    assert received == [b"one"] and len(opened) == 2  # retried once before its first piece


def test_a_call_is_on_a_lost_replica_when_its_actor_died_or_else_when_a_node_died_since_it_began():
    from deployments.dead_replicas import LostReplicas

    class ActorID:
        def hex(self):
            return "abc123"

    actors, dead_nodes = {"abc123": "ALIVE"}, {"node-old"}  # a node dead before anything began
    lost = LostReplicas(period_s=0.0, state_of=actors.get, dead_nodes=lambda: set(dead_nodes))
    streamed = type("Stream", (), {"_replica_result": type("Result", (), {"_actor_id": ActorID()})()})()
    unary = object()  # names no replica until it answers

    def settles(response, since, expected: bool) -> bool:  # looks run in background threads
        deadline = time.monotonic() + 5
        while lost.holds(response, since) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return lost.holds(response, since) == expected

    began = time.monotonic()
    assert settles(streamed, began, False) and settles(unary, began, False)
    dead_nodes.add("node-2")  # a node dies; the streamed call's replica is elsewhere
    assert settles(unary, began, True) and settles(streamed, began, False)
    assert settles(unary, time.monotonic() + 60, False)  # a call begun after the death is fine
    actors["abc123"] = "DEAD"
    assert settles(streamed, began, True)

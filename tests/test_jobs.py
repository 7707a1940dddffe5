"""Jobs without Ray or HTTP: the record's states in the object store, and the runner that moves them.

The synthesis side is a small stand-in whose calls can be made to fail the way a dying Synthesizer
replica does (the real death is tested on Ray in test_jobs_serve.py)."""

import asyncio
import io
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import soundfile as sf

from speech_service import audio
from speech_service.audio import encoding
from speech_service.audio.seams import join
from speech_service.config import F5_DEFAULTS, JobSettings, ServiceSettings
from speech_service.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unprocessable,
)
from speech_service.plans import Segment, SpeechPlan
from speech_service.schemas import JobError, JobProgress, SpeechRequest
from speech_service.service.jobs import JobRunner
from speech_service.service.speech import SpeechService
from speech_service.storage.audit import AuditEntry, AuditStore
from speech_service.storage.job_record import ID_PREFIX
from speech_service.storage.jobs import JobStore, Superseded
from speech_service.storage.objects import LocalObjectStore
from speech_service.storage.voices import VoiceRecord, VoiceStore, now, sha256

TEXT = "First sentence here. Second one follows! Third is a question? Fourth ends it."


def request(**fields) -> SpeechRequest:
    return SpeechRequest(**{"voice": "alice", "input": TEXT, "response_format": "wav", **fields})


@pytest.fixture
def objects(object_store):
    """The store-level tests run on both stores: a directory and a real S3 server (SeaweedFS)."""
    return object_store


class Clock:
    """The time of leases and expiry, moved by the test: no test waits for a lease to run out."""

    def __init__(self):
        self.t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def job_store(objects, clock=None, **settings) -> JobStore:
    return JobStore(objects, JobSettings(**settings), clock or Clock())


# -- the store --------------------------------------------------------------------------------------
def test_lifecycle_in_the_store(objects):
    jobs = job_store(objects)
    job = jobs.create(request())
    assert job.status == "queued" and job.attempts == 0
    assert objects.list("jobs/") == [f"jobs/{job.id}.json"]

    claimed = jobs.claim(job.id)
    assert claimed.status == "running" and claimed.attempts == 1 and claimed.started_at
    assert jobs.claim(job.id) is None  # held: nobody else gets it
    jobs.renew(job.id, 1, JobProgress(segments_done=1, segments_total=3, audio_seconds=1.5))
    assert jobs.get(job.id).progress == JobProgress(segments_done=1, segments_total=3, audio_seconds=1.5)
    with pytest.raises(Conflict) as exc:
        jobs.result(job.id)
    assert exc.value.code == "job_not_finished"

    done = jobs.succeed(job.id, 1, b"RIFF...")
    assert done.status == "succeeded" and done.finished_at and done.expires_at > done.finished_at
    assert jobs.result(job.id) == (jobs.get(job.id), b"RIFF...")
    assert jobs.cancel_or_remove(job.id) is None  # finished: removed
    assert objects.list("jobs/") == []
    with pytest.raises(NotFound):
        jobs.get(job.id)


@pytest.mark.parametrize("job_id", ["job_0123456789abcdef0123", "nope", "../voices/alice/voice"])
def test_unknown_ids_are_not_found(objects, job_id):
    jobs = job_store(objects)
    for call in (jobs.get, jobs.result, jobs.cancel_or_remove):
        with pytest.raises(NotFound) as exc:
            call(job_id)
        assert exc.value.code == "job_not_found"


def test_listing_is_newest_first_in_pages(objects):
    jobs = job_store(objects)
    ids = []
    for _ in range(5):
        ids.append(jobs.create(request()).id)
        time.sleep(0.002)  # ids carry milliseconds
    newest_first = ids[::-1]
    page, more = jobs.list(2)
    assert [j.id for j in page] == newest_first[:2] and more
    page, more = jobs.list(2, after=page[-1].id)
    assert [j.id for j in page] == newest_first[2:4] and more
    page, more = jobs.list(2, after=page[-1].id)
    assert [j.id for j in page] == newest_first[4:] and not more


def test_finished_jobs_expire_with_their_audio(objects):
    clock = Clock()
    jobs = job_store(objects, clock, result_ttl_s=300)
    kept = jobs.create(request())  # not finished: never expires
    job = jobs.create(request())
    jobs.claim(job.id)
    jobs.succeed(job.id, 1, b"audio")
    assert jobs.result(job.id)[1] == b"audio"
    clock.advance(299)
    assert jobs.result(job.id)[1] == b"audio"
    clock.advance(2)
    with pytest.raises(NotFound):
        jobs.result(job.id)
    assert objects.list("jobs/") == [f"jobs/{kept.id}.json"]
    assert [j.id for j in jobs.list(10)[0]] == [kept.id]


def test_cancel_stops_the_holder_and_its_result_is_dropped(objects):
    jobs = job_store(objects)
    queued = jobs.create(request())
    assert jobs.cancel_or_remove(queued.id).status == "cancelled"
    assert jobs.claim(queued.id) is None

    running = jobs.create(request())
    jobs.claim(running.id)
    cancelled = jobs.cancel_or_remove(running.id)
    assert cancelled.status == "cancelled" and cancelled.expires_at
    with pytest.raises(Superseded):
        jobs.renew(running.id, 1)
    with pytest.raises(Superseded):
        jobs.succeed(running.id, 1, b"late audio")
    assert f"jobs/{running.id}.wav" not in objects.list("jobs/")
    assert jobs.get(running.id).status == "cancelled"


def test_a_lapsed_lease_is_retried_then_failed(objects):
    clock = Clock()
    jobs = job_store(objects, clock, lease_s=30, max_attempts=2)
    job = jobs.create(request())
    assert jobs.claim(job.id).attempts == 1  # its runner then dies: nothing renews the lease
    clock.advance(29)
    assert jobs.claim(job.id) is None
    clock.advance(2)
    assert jobs.claim(job.id).attempts == 2
    with pytest.raises(Superseded):
        jobs.renew(job.id, 1)  # the first runner, were it alive, has lost the job
    clock.advance(31)
    assert jobs.claim(job.id) is None
    failed = jobs.get(job.id)
    assert failed.status == "failed" and failed.error.code == "runner_lost"
    assert "attempt 2 of 2" in failed.error.message


def test_concurrent_claims_have_one_winner(objects):
    jobs = job_store(objects)
    job = jobs.create(request())
    barrier = threading.Barrier(6)
    results = []

    def claim():
        barrier.wait()
        results.append(jobs.claim(job.id))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1 and jobs.get(job.id).attempts == 1


def test_join():
    a, b = np.ones(100, np.float32), np.zeros(100, np.float32)
    joined = join([a, b], 10)
    assert len(joined) == 190 and joined[89] == 1 and joined[100] == 0 and 0 < joined[95] < 1


# -- the runner -----------------------------------------------------------------------------------
class ReplicaDied(Exception):
    """What a handle call raises when the replica under it is killed."""


class Backends:
    """Speech stand-in: a plan of `segments` segments, 0.5 s of tone per segment call. `fail`
    decides per segment call (1-based) what to raise; `gate` (when set) holds every call until it
    opens. `planned` keeps the texts it was asked to plan."""

    def __init__(self, fail=lambda n: None, segments=1):
        self.calls = 0
        self.fail = fail
        self.segments = segments
        self.planned: list[str] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = self.most_in_flight = 0  # segment calls under way, and the most at once

    async def plan(self, reference, text, options):
        self.planned.append(text)
        words = text.split()
        size = -(-len(words) // self.segments)
        parts = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
        return SpeechPlan([Segment(part, 100) for part in parts], options.over(F5_DEFAULTS), seed=7)

    async def synthesize_segment(self, reference, plan, index):
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)  # a call takes a turn of the loop, as a real one does
            if (error := self.fail(self.calls)) is not None:
                raise error
            return audio.Speech(np.sin(np.arange(12000, dtype=np.float32) / 10) * 0.3, 0.01)
        finally:
            self.in_flight -= 1


def make_runner(tmp_path, backends, objects=None, clock=None, **job_settings):
    settings = ServiceSettings.model_validate({"store": {"path": str(tmp_path / "store")},
                                               "jobs": {"retry_delay_s": 0, **job_settings}})
    voices = VoiceStore(LocalObjectStore(tmp_path / "store"))
    wav = encoding.to_wav_bytes(np.zeros(24000, np.float32) + 0.1)
    voices.put(VoiceRecord(name="alice", ref_text="Hello.", ref_text_source="user", duration_s=1.0,
                           original_duration_s=1.0, clipped=False, sha256=sha256(wav), created_at=now()),
               wav, overwrite=False)
    jobs = JobStore(objects or LocalObjectStore(tmp_path / "store"), settings.jobs, clock or Clock())
    return JobRunner(jobs, SpeechService(settings, voices, backends), settings.jobs)


async def finished(runner, job_id, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = runner.store.get(job_id)
        if record.status not in ("queued", "running"):
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"job still {record.status}")


def test_a_job_runs_to_succeeded_with_progress(tmp_path, objects):
    runner = make_runner(tmp_path, Backends(segments=2), objects)

    async def scenario():
        job = await runner.submit(request())
        return await finished(runner, job.id)

    record = asyncio.run(scenario())
    assert record.status == "succeeded" and record.attempts == 1 and record.error is None
    assert record.progress == JobProgress(segments_done=2, segments_total=2, audio_seconds=1.0)
    assert runner.speech.backends.planned == [TEXT]  # the whole text, planned once
    _, data = runner.store.result(record.id)
    wave, rate = sf.read(io.BytesIO(data))
    assert rate == 24000 and len(wave) == 24000 - int(0.15 * 24000)  # two pieces, one cross-fade


def test_a_replica_death_is_retried(tmp_path):
    backends = Backends(fail=lambda n: ReplicaDied("The actor died unexpectedly") if n == 2 else None, segments=2)
    runner = make_runner(tmp_path, backends)

    async def scenario():
        return await finished(runner, (await runner.submit(request())).id)

    record = asyncio.run(scenario())
    # The retry resumes after the finished first segment: three calls, not four.
    assert record.status == "succeeded" and record.attempts == 2 and backends.calls == 3
    assert record.progress == JobProgress(segments_done=2, segments_total=2, audio_seconds=1.0)
    assert record.last_error.code == "synthesis_failed" and "ReplicaDied" in record.last_error.message


def test_a_full_synthesizer_queue_is_waited_out_without_spending_attempts(tmp_path):
    backends = Backends(fail=lambda n: Overloaded("queue full", retry_after_s=0.1) if n <= 3 else None)
    runner = make_runner(tmp_path, backends, max_attempts=1)

    async def scenario():
        return await finished(runner, (await runner.submit(request())).id)

    record = asyncio.run(scenario())
    assert record.status == "succeeded" and record.attempts == 1 and backends.calls == 4


def test_repeated_deaths_fail_the_job_with_the_reason(tmp_path):
    backends = Backends(fail=lambda n: ReplicaDied("The actor died unexpectedly"))
    runner = make_runner(tmp_path, backends, max_attempts=3)

    async def scenario():
        return await finished(runner, (await runner.submit(request())).id)

    record = asyncio.run(scenario())
    assert record.status == "failed" and record.attempts == 3 and backends.calls == 3
    assert record.error.code == "synthesis_failed" and "actor died" in record.error.message
    with pytest.raises(Conflict):
        runner.store.result(record.id)


def test_a_request_error_fails_at_once(tmp_path):
    backends = Backends(fail=lambda n: Unprocessable("too much text", code="text_exceeds_frames"))
    runner = make_runner(tmp_path, backends)

    async def scenario():
        return await finished(runner, (await runner.submit(request())).id)

    record = asyncio.run(scenario())
    assert record.status == "failed" and record.attempts == 1 and record.error.code == "text_exceeds_frames"


def test_cancel_stops_the_runner_between_segments(tmp_path):
    backends = Backends(segments=4)
    runner = make_runner(tmp_path, backends)

    async def scenario():
        backends.gate = asyncio.Event()
        job = await runner.submit(request())
        while backends.calls < 1:
            await asyncio.sleep(0.01)
        runner.store.cancel_or_remove(job.id)  # as DELETE does, from anywhere
        backends.gate.set()
        await asyncio.sleep(0.3)
        return job.id

    job_id = asyncio.run(scenario())
    record = runner.store.get(job_id)
    assert record.status == "cancelled" and backends.calls == 1 and record.progress.segments_done == 0
    assert runner.store.objects.list("jobs/") == [f"jobs/{job_id}.json"]


def test_a_sweep_takes_over_a_job_whose_runner_died(tmp_path, objects):
    backends, clock = Backends(), Clock()
    runner = make_runner(tmp_path, backends, objects, clock, lease_s=30)
    job = runner.store.create(request())
    runner.store.claim(job.id)  # a runner in another process took it, then died

    async def scenario():
        clock.advance(29)
        await runner.sweep()  # the lease still holds: left alone
        await asyncio.sleep(0.05)
        assert backends.calls == 0 and runner.store.get(job.id).attempts == 1
        clock.advance(2)
        await runner.sweep()
        return await finished(runner, job.id)

    record = asyncio.run(scenario())
    assert record.status == "succeeded" and record.attempts == 2


def test_stopping_hands_running_jobs_back(tmp_path):
    backends = Backends()
    runner = make_runner(tmp_path, backends)

    async def scenario():
        backends.gate = asyncio.Event()
        job = await runner.submit(request())
        while backends.calls < 1:
            await asyncio.sleep(0.01)
        await runner.stop()
        return job.id

    record = runner.store.get(asyncio.run(scenario()))
    assert record.status == "queued" and record.attempts == 0  # the next runner gets a full set of attempts


def test_jobs_over_max_running_wait_queued_and_start_in_the_order_they_came(tmp_path):
    backends = Backends(segments=2)
    runner = make_runner(tmp_path, backends, max_running=2)

    async def scenario():
        backends.gate = asyncio.Event()
        jobs = [await runner.submit(request(input=f"{TEXT} Job {n}.")) for n in range(5)]
        while backends.calls < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        held = [runner.store.get(job.id).status for job in jobs], backends.calls
        backends.gate.set()
        return held, [await finished(runner, job.id) for job in jobs]

    (statuses, calls), records = asyncio.run(scenario())
    assert statuses == ["running", "running", "queued", "queued", "queued"] and calls == 2
    assert [r.status for r in records] == ["succeeded"] * 5 and all(r.attempts == 1 for r in records)
    assert backends.most_in_flight == 2  # the Synthesizer never saw more than two of these jobs at once
    # Started in turn. Two jobs started together claim and plan in threads, in either order.
    planned = [text.removeprefix(f"{TEXT} Job ") for text in backends.planned]
    assert sorted(planned[:2]) == ["0.", "1."] and sorted(planned[2:4]) == ["2.", "3."] and planned[4:] == ["4."]


def test_stopping_leaves_the_waiting_jobs_queued_for_any_runner(tmp_path):
    backends = Backends()
    runner = make_runner(tmp_path, backends, max_running=1)

    async def scenario():
        backends.gate = asyncio.Event()
        jobs = [await runner.submit(request()) for _ in range(3)]
        while backends.calls < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        calls = backends.calls
        await runner.stop()
        await asyncio.sleep(0.1)
        return jobs, calls

    jobs, calls = asyncio.run(scenario())
    assert calls == 1 and backends.calls == 1  # one ran; nothing started when it was handed back
    assert [runner.store.get(job.id).status for job in jobs] == ["queued"] * 3
    assert [runner.store.get(job.id).attempts for job in jobs] == [0, 0, 0]


@pytest.mark.parametrize("fields, error, code", [
    ({"voice": "nobody"}, NotFound, "voice_not_found"),
    ({"input": "x" * 5000}, PayloadTooLarge, "input_too_long"),
    ({"model": "whisper"}, BadRequest, "unknown_model"),
])
def test_bad_requests_are_refused_at_submit(tmp_path, fields, error, code):
    runner = make_runner(tmp_path, Backends())
    with pytest.raises(error) as exc:
        asyncio.run(runner.submit(request(**fields)))
    assert exc.value.code == code and runner.store.ids() == []


class CountingStore(LocalObjectStore):
    """A directory store that counts reads per key."""

    def __init__(self, root):
        super().__init__(root)
        self.reads: dict[str, int] = {}

    def get(self, key):
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key)


def test_the_sweep_reads_a_finished_job_once_and_removes_it_when_expired(tmp_path):
    objects = CountingStore(tmp_path / "store")
    clock = Clock()
    runner = make_runner(tmp_path, Backends(), objects, clock, result_ttl_s=300)

    async def scenario():
        job = await runner.submit(request())
        await finished(runner, job.id)
        while runner.store.get(job.id).audit_due is not None:  # its runner writes the audit entry just after
            await asyncio.sleep(0.01)
        before = objects.reads[f"jobs/{job.id}.json"]
        for _ in range(3):
            await runner.sweep()
        reads = objects.reads[f"jobs/{job.id}.json"] - before
        clock.advance(301)
        await runner.sweep()
        return reads

    assert asyncio.run(scenario()) == 1
    assert objects.list("jobs/") == []


def test_the_layout_reaches_the_planner_as_it_was(tmp_path):
    """A job's text is planned whole, line breaks included: they are layout the pipeline reads."""
    backends = Backends(segments=2)
    runner = make_runner(tmp_path, backends)
    listed = "Buy these:\n- eggs\n- milk.\n\nThen go home."

    async def scenario():
        return await finished(runner, (await runner.submit(request(input=listed))).id)

    assert asyncio.run(scenario()).status == "succeeded" and backends.planned == [listed]


# -- a transcript fixed between attempts ---------------------------------------------------------
class VoicedBackends(Backends):
    """Each segment's tone follows the voice's transcript it was made with, as the model's does."""

    async def synthesize_segment(self, reference, plan, index):
        await super().synthesize_segment(reference, plan, index)
        period = 5 + len(reference.ref_text)
        return audio.Speech(np.sin(np.arange(12000, dtype=np.float32) / period) * 0.3, 0.01)


def samples(runner, job_id) -> np.ndarray:
    return sf.read(io.BytesIO(runner.store.result(job_id)[1]), dtype="int16")[0]


def test_a_retry_after_the_transcript_was_fixed_speaks_only_the_new_one(tmp_path):
    """The transcript is corrected (PATCH) between a failed attempt and its retry: the retry plans
    and makes every segment again, so the file is the fresh job's, never two transcripts in one."""
    def fixed_then_died(n):
        if n == 2:  # the first segment was made with the old transcript
            runner.speech.store.update("alice", lambda r: r.model_copy(update={"ref_text": "Hello there, friend."}))
            return ReplicaDied("The actor died unexpectedly")
        return None

    backends = VoicedBackends(fail=fixed_then_died, segments=2)
    runner = make_runner(tmp_path, backends)

    async def scenario():
        retried = await finished(runner, (await runner.submit(request(seed=5))).id)
        return retried, await finished(runner, (await runner.submit(request(seed=5))).id)

    retried, fresh = asyncio.run(scenario())
    assert retried.status == fresh.status == "succeeded" and retried.attempts == 2
    assert len(backends.planned) == 3  # planned again for the retry, as for the fresh job
    assert np.array_equal(samples(runner, retried.id), samples(runner, fresh.id))


# -- listing reads what it lists ----------------------------------------------------------------
def test_a_keys_listing_reads_only_its_own_records(tmp_path):
    objects = CountingStore(tmp_path / "store")
    jobs = job_store(objects)
    mine = jobs.create(request(), owner="app")
    others = [jobs.create(request(), owner="crowd").id for _ in range(200)]
    objects.reads.clear()
    page, more = jobs.list(20, owner="app")
    assert [j.id for j in page] == [mine.id] and not more
    assert sum(objects.reads.values()) == 1
    objects.reads.clear()
    page, more = jobs.list(1, owner="crowd")
    assert [j.id for j in page] == [max(others)] and more and sum(objects.reads.values()) == 1
    objects.reads.clear()
    page, more = jobs.list(1)  # an admin's: every owner's, newest first
    assert [j.id for j in page] == [max(others)] and more and sum(objects.reads.values()) == 1
    assert jobs.ids() == sorted([mine.id, *others], reverse=True)  # the index is no job


def test_a_key_named_dot_dot_has_an_index_of_its_own(objects):
    jobs = job_store(objects)
    job = jobs.create(request(), owner="..")
    assert [j.id for j in jobs.list(5, owner="..")[0]] == [job.id] and jobs.list(5, owner=".")[0] == []


# -- a key's jobs count against its limit ----------------------------------------------------------
def active(objects, owner="app") -> list[str]:
    return objects.list(f"jobs/active/key-{owner}/")


def test_a_job_counts_against_its_key_until_it_is_over(objects):
    clock = Clock()
    jobs = job_store(objects, clock, lease_s=30, max_attempts=1)
    done, failed, lost, cancelled, removed = (jobs.create(request(), owner="app", max_active=5) for _ in range(5))
    with pytest.raises(RateLimited) as exc:
        jobs.create(request(), owner="app", max_active=5)
    assert exc.value.code == "concurrency_limit_exceeded" and exc.value.retry_after_s
    assert "has 5 jobs queued or running" in exc.value.message and "max_concurrent: 5" in exc.value.message
    assert len(active(objects)) == 5 and len(jobs.list(10, owner="app")[0]) == 5  # the refused one left nothing
    assert jobs.create(request(), owner="other", max_active=5).owner == "other"  # another key's count

    for job in (done, failed, lost):
        jobs.claim(job.id)
    jobs.succeed(done.id, 1, b"audio")
    jobs.retry_or_fail(failed.id, 1, JobError(code="bad", message="bad"), retryable=False)
    clock.advance(31)
    assert jobs.claim(lost.id) is None and jobs.get(lost.id).status == "failed"  # its runner was lost
    jobs.cancel_or_remove(cancelled.id)
    jobs.remove(removed.id)
    assert active(objects) == []
    assert jobs.create(request(), owner="app", max_active=1).status == "queued"


def test_submits_at_once_never_exceed_the_limit(objects):
    jobs = job_store(objects)
    barrier = threading.Barrier(6)
    accepted, refused = [], []

    def submit():
        barrier.wait()
        try:
            accepted.append(jobs.create(request(), owner="app", max_active=2))
        except RateLimited:
            refused.append(1)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) <= 2 and len(accepted) + len(refused) == 6
    assert sorted(k.rsplit("/", 1)[1] for k in active(objects)) == sorted(j.id for j in accepted)


def test_the_runner_frees_a_keys_slot_when_its_job_ends(tmp_path):
    backends = Backends()
    runner = make_runner(tmp_path, backends)

    async def scenario():
        backends.gate = asyncio.Event()
        held = [await runner.submit(request(), owner="app", max_active=2) for _ in range(2)]
        with pytest.raises(RateLimited):
            await runner.submit(request(), owner="app", max_active=2)
        backends.gate.set()
        for job in held:
            await finished(runner, job.id)
        return await finished(runner, (await runner.submit(request(), owner="app", max_active=2)).id)

    assert asyncio.run(scenario()).status == "succeeded"
    assert active(runner.store.objects) == []


def test_the_sweep_removes_markers_left_behind(tmp_path):
    objects = LocalObjectStore(tmp_path / "store")
    runner = make_runner(tmp_path, Backends(), objects)
    job = runner.store.create(request(), owner="app")
    runner.store.claim(job.id)
    runner.store.succeed(job.id, 1, b"audio")
    old_gone = f"{ID_PREFIX}{int((time.time() - 3600) * 1000):012x}00000000"  # its record was never written
    being_made = f"{ID_PREFIX}{int(time.time() * 1000):012x}00000000"  # its record is about to be
    left = [f"jobs/active/key-app/{job.id}", f"jobs/owners/key-app/{old_gone}", f"jobs/active/key-app/{old_gone}"]
    for key in [*left, f"jobs/owners/key-app/{being_made}"]:
        objects.put(key, b"")  # what a store that failed to delete them left
    asyncio.run(runner.sweep())
    assert objects.list("jobs/owners/") == sorted([f"jobs/owners/key-app/{job.id}",
                                                   f"jobs/owners/key-app/{being_made}"])
    assert active(objects) == []


# -- one audit entry per delivered job ------------------------------------------------------------
class LosesTheAnswer(LocalObjectStore):
    """The first write of a `succeeded` record lands, and its answer is lost (a timeout)."""

    def __init__(self, root):
        super().__init__(root)
        self.lost = 0

    def put(self, key, data, **conditions):
        etag = super().put(key, data, **conditions)
        if not self.lost and b'"status":"succeeded"' in data:
            self.lost += 1
            raise StoreUnavailable("The store did not answer in time.")
        return etag


class HoldsTheAnswer(LocalObjectStore):
    """The first write of a `succeeded` record lands; its answer waits until `answer` is set."""

    def __init__(self, root):
        super().__init__(root)
        self.landed, self.answer = threading.Event(), threading.Event()

    def put(self, key, data, **conditions):
        etag = super().put(key, data, **conditions)
        if not self.landed.is_set() and b'"status":"succeeded"' in data:
            self.landed.set()
            self.answer.wait(10)
        return etag


def trail(tmp_path, runner) -> list:
    """The audit entries from the jobs' clock's day (a job's entry is timed as it finished) to today's."""
    runner.speech.audit.flush()
    since, until = runner.store.now() - timedelta(days=1), datetime.now(timezone.utc) + timedelta(days=1)
    return AuditStore(LocalObjectStore(tmp_path / "store")).read(since, until)[0]


async def entries_of(tmp_path, runner, job_id, timeout=5) -> list:
    deadline = time.monotonic() + timeout
    while not (found := [e for e in trail(tmp_path, runner) if e.request_id == job_id]) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return found


def test_noting_the_audit_entry_written_leaves_the_job_a_client_sees_as_it_was(tmp_path):
    """The runner clears `audit_due` just after the job reads succeeded: bookkeeping, so a client that
    read the finished job (its `updated_at` included) reads the same job after it (a full run once saw
    `updated_at` move under test_jobs_outlive_the_app_that_ran_them)."""
    clock = Clock()
    store = job_store(LocalObjectStore(tmp_path), clock)
    job = store.create(request(), owner="app")
    attempt = store.claim(job.id).attempts
    entry = AuditEntry(time=clock(), kind="job", key="app", voice="alice", consent_id=None, model="f5-tts",
                       format="wav", text_sha256="t", output_sha256="o", request_id=job.id)
    seen = store.succeed(job.id, attempt, b"audio", audit=entry)
    assert seen.audit_due is not None
    clock.advance(5)
    store.audited(job.id)
    assert store.get(job.id).audit_due is None and store.get(job.id).view() == seen.view()


def test_a_success_whose_answer_was_lost_is_audited_once(tmp_path):
    objects = LosesTheAnswer(tmp_path / "store")
    runner = make_runner(tmp_path, Backends(), objects)

    async def scenario():
        job = await finished(runner, (await runner.submit(request(), owner="app")).id)
        first = await entries_of(tmp_path, runner, job.id)
        await runner.sweep()
        return job, first, await entries_of(tmp_path, runner, job.id)

    job, first, after_sweep = asyncio.run(scenario())
    assert objects.lost == 1 and job.status == "succeeded" and job.attempts == 1
    assert len(first) == 1 and after_sweep == first
    [entry] = first
    assert (entry.kind, entry.key, entry.time) == ("job", "app", job.finished_at)
    assert entry.output_sha256 == sha256(runner.store.result(job.id)[1])
    assert active(objects) == []


def test_a_runner_stopped_after_its_success_landed_is_audited_by_a_sweep(tmp_path):
    objects = HoldsTheAnswer(tmp_path / "store")
    runner = make_runner(tmp_path, Backends(), objects)

    async def scenario():
        job = await runner.submit(request(), owner="app")
        await asyncio.to_thread(objects.landed.wait, 10)
        await runner.stop()  # its replica stops with the success written, before any audit entry
        objects.answer.set()
        assert runner.store.get(job.id).status == "succeeded"
        assert await entries_of(tmp_path, runner, job.id, timeout=0.5) == []  # the stopped runner wrote none
        other = JobRunner(runner.store, runner.speech, runner.settings)  # any replica's sweep
        await other.sweep()
        found = await entries_of(tmp_path, runner, job.id)
        assert len(found) == 1, "the sweep wrote no entry"
        runner.speech.audit.write_job(found[0])  # the stopped runner's write, landing late
        await other.sweep()
        return job.id, found, await entries_of(tmp_path, runner, job.id)

    job_id, found, again = asyncio.run(scenario())
    assert len(found) == 1 and again == found and found[0].output_sha256 == sha256(runner.store.result(job_id)[1])
    assert runner.store.get(job_id).audit_due is None  # said in the record: no sweep writes it again

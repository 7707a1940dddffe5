"""Asynchronous speech jobs. `JobStore` keeps their records and results in the object store;
`JobRunner` moves them through their states. Plain Python: the ingress deployment hosts the runner.

Keys: `jobs/{id}.json` is the record, and the truth; `jobs/{id}.{format}` is the audio, written
before the record says `succeeded`. Every change to a record is a conditional write of the version
that was read, so two runners never both hold a job. A runner holds a lease on its job
(`lease_until`) and renews it while it works; a `queued` or `running` job whose lease has run out
has no runner, and whichever ingress sweeps first re-runs it (up to `max_attempts`) or fails it.
See docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import numpy as np
from pydantic import BaseModel, Field

from . import audio
from .config import F5_DEFAULTS, JobSettings, SynthesisOptions
from .errors import Conflict, NotFound, Overloaded, ServiceError, unwrap
from .objects import ObjectStore, PreconditionFailed
from .references import Reference
from .schemas import Job, JobError, JobProgress, JobStatus, SpeechRequest
from .speech import SpeechService

logger = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
ID_RE = re.compile(r"^job_[0-9a-f]{20}$")
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？…])(\s+)")


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    """Time-ordered, so a listing of keys is a listing by age: 12 hex digits of milliseconds, 8 random."""
    return f"job_{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


class JobRecord(BaseModel):
    """What the store keeps about a job."""

    id: str
    status: JobStatus
    request: SpeechRequest
    progress: JobProgress = Field(default_factory=JobProgress)
    error: JobError | None = None
    last_error: JobError | None = None
    attempts: int = 0
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    lease_until: datetime  # a queued or running job whose lease has passed is free for any runner

    @property
    def result_key(self) -> str:
        return f"jobs/{self.id}.{self.request.response_format}"

    def view(self) -> Job:
        body = self.request
        return Job(
            **self.model_dump(include={"id", "status", "progress", "error", "last_error", "attempts", "max_attempts",
                                       "created_at", "updated_at", "started_at", "finished_at", "expires_at"}),
            voice=body.voice, model=body.model, response_format=body.response_format, input_chars=len(body.input),
            audio_url=f"/v1/jobs/{self.id}/audio" if self.status == "succeeded" else None,
        )


class Superseded(Exception):
    """The job was cancelled, removed or taken over by another runner: stop working on it."""


class _Unchanged(Exception):
    """Raised by a record change to leave the record as it is."""


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"Job '{job_id}' does not exist or has expired.", code="job_not_found")


class JobStore:
    def __init__(self, objects: ObjectStore, settings: JobSettings):
        self.objects = objects
        self.settings = settings

    @staticmethod
    def _key(job_id: str) -> str:
        if not ID_RE.fullmatch(job_id):
            raise _not_found(job_id)
        return f"jobs/{job_id}.json"

    def create(self, request: SpeechRequest) -> JobRecord:
        t = now()
        record = JobRecord(id=new_id(), status="queued", request=request, max_attempts=self.settings.max_attempts,
                           created_at=t, updated_at=t, lease_until=t)
        self.objects.put(self._key(record.id), record.model_dump_json().encode(), if_none_match=True)
        return record

    def _read(self, job_id: str) -> tuple[JobRecord, str]:
        try:
            stored = self.objects.get(self._key(job_id))
        except KeyError:
            raise _not_found(job_id) from None
        return JobRecord.model_validate_json(stored.data), stored.etag

    def get(self, job_id: str) -> JobRecord:
        """The record; an expired job is removed here and reads as not found."""
        record, _ = self._read(job_id)
        if record.expires_at is not None and record.expires_at <= now():
            self.remove(job_id)
            raise _not_found(job_id)
        return record

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` to the current record and write it back only if nobody wrote in between;
        on a lost race, read again and re-apply. `change` may raise to leave the record alone."""
        for attempt in range(100):
            record, etag = self._read(job_id)
            change(record)
            record.updated_at = now()
            try:
                self.objects.put(self._key(job_id), record.model_dump_json().encode(), if_match=etag)
                return record
            except PreconditionFailed:
                time.sleep(0.005 * attempt)
        raise RuntimeError(f"job {job_id}: too many concurrent writers")

    def ids(self) -> list[str]:
        """Every job id, newest first."""
        keys = self.objects.list("jobs/")
        return sorted((k.removeprefix("jobs/").removesuffix(".json") for k in keys if k.endswith(".json")),
                      reverse=True)

    def list(self, limit: int, after: str | None = None) -> tuple[list[JobRecord], bool]:
        """Up to `limit` jobs older than the job `after`, newest first, and whether there are more."""
        ids = [i for i in self.ids() if after is None or i < after]
        page: list[JobRecord] = []
        for n, job_id in enumerate(ids):
            try:
                page.append(self.get(job_id))
            except NotFound:  # expired or removed meanwhile
                continue
            if len(page) == limit:
                return page, n + 1 < len(ids)
        return page, False

    def result(self, job_id: str) -> tuple[JobRecord, bytes]:
        record = self.get(job_id)
        if record.status != "succeeded":
            raise Conflict(f"Job '{job_id}' is {record.status}; its audio is there once it has succeeded.",
                           code="job_not_finished")
        try:
            return record, self.objects.get(record.result_key).data
        except KeyError:  # removed between the two reads
            raise _not_found(job_id) from None

    def remove(self, job_id: str) -> None:
        record, _ = self._read(job_id)
        self.objects.delete(record.result_key)
        self.objects.delete(self._key(job_id))

    def cancel_or_remove(self, job_id: str) -> JobRecord | None:
        """Cancel a queued or running job (its runner stops at its next check) and return it; remove
        a finished one and return None."""
        def cancel(record: JobRecord) -> None:
            if record.status not in ACTIVE:
                raise _Unchanged
            self._finish(record, "cancelled")

        if self.get(job_id).status in ACTIVE:
            try:
                return self.update(job_id, cancel)
            except _Unchanged:  # finished meanwhile
                pass
        self.remove(job_id)
        return None

    # -- moves made by runners ---------------------------------------------------------------
    def _finish(self, record: JobRecord, status: JobStatus, error: JobError | None = None) -> None:
        t = now()
        record.status, record.error, record.finished_at = status, error, t
        record.expires_at = t + timedelta(seconds=self.settings.result_ttl_s)

    def _lease(self) -> datetime:
        return now() + timedelta(seconds=self.settings.lease_s)

    def claim(self, job_id: str) -> JobRecord | None:
        """Start a new attempt at a job nobody holds (queued, or running with a lapsed lease).
        None when another runner holds it or it is over; a lost job out of attempts is failed."""
        def take(record: JobRecord) -> None:
            if record.status not in ACTIVE or record.lease_until > now():
                raise _Unchanged
            if record.attempts >= record.max_attempts:
                self._finish(record, "failed", JobError(code="runner_lost", message=(
                    f"The job's runner stopped (no sign of it for {self.settings.lease_s:g} s) on attempt "
                    f"{record.attempts} of {record.max_attempts}.")))
                return
            record.status, record.attempts, record.lease_until = "running", record.attempts + 1, self._lease()
            record.started_at = record.started_at or now()
            record.progress = JobProgress()

        try:
            record = self.update(job_id, take)
        except (_Unchanged, NotFound):
            return None
        return record if record.status == "running" else None

    def _holding(self, record: JobRecord, attempt: int) -> None:
        if record.status != "running" or record.attempts != attempt:
            raise Superseded(record.id)

    def renew(self, job_id: str, attempt: int, progress: JobProgress | None = None) -> JobRecord:
        """Extend the lease of the runner of `attempt` (and record its progress); Superseded when the
        job is no longer that runner's."""
        def extend(record: JobRecord) -> None:
            self._holding(record, attempt)
            record.lease_until = self._lease()
            if progress is not None:
                record.progress = progress

        try:
            return self.update(job_id, extend)
        except NotFound:
            raise Superseded(job_id) from None

    def succeed(self, job_id: str, attempt: int, data: bytes) -> JobRecord:
        record = self.renew(job_id, attempt)
        self.objects.put(record.result_key, data)  # the audio first: a succeeded record always has it

        def done(record: JobRecord) -> None:
            self._holding(record, attempt)
            self._finish(record, "succeeded")

        try:
            return self.update(job_id, done)
        except (Superseded, NotFound):
            try:
                current = self._read(job_id)[0].status
            except NotFound:
                current = None
            if current in (None, "cancelled", "failed"):  # nobody will ever serve this audio
                self.objects.delete(record.result_key)
            raise Superseded(job_id) from None

    def retry_or_fail(self, job_id: str, attempt: int, error: JobError, retryable: bool) -> JobRecord:
        """After a failed attempt: back to `queued` while attempts remain (and the error allows it),
        else `failed` with `error`."""
        def after_failure(record: JobRecord) -> None:
            self._holding(record, attempt)
            if retryable and record.attempts < record.max_attempts:
                record.status, record.last_error, record.lease_until = "queued", error, now()
            else:
                self._finish(record, "failed", error)

        try:
            return self.update(job_id, after_failure)
        except NotFound:
            raise Superseded(job_id) from None

    def release(self, job_id: str, attempt: int) -> None:
        """Hand a job back untouched (its runner is shutting down): queued, free, the attempt not counted."""
        def hand_back(record: JobRecord) -> None:
            self._holding(record, attempt)
            record.status, record.attempts, record.lease_until = "queued", record.attempts - 1, now()

        try:
            self.update(job_id, hand_back)
        except (Superseded, NotFound):
            pass


def split_segments(text: str, max_chars: int) -> list[str]:
    """Whole sentences, grouped up to `max_chars` (a longer sentence stays whole: the engine splits
    it further to fit the model). The text between them is kept as it was: line breaks are layout
    the engine reads (`engine.flatten_layout`)."""
    segments: list[str] = []
    current = ""
    parts = _SENTENCE_END.split(text.strip())  # sentence, the space after it, sentence, ...
    for sentence, space in zip(parts[::2], [*parts[1::2], ""]):
        if current and len(current) + len(sentence) > max_chars:
            segments.append(current.strip())
            current = ""
        current += sentence + space
    if current.strip():
        segments.append(current.strip())
    return segments


def _seconds(waves: list[np.ndarray]) -> float:
    return round(sum(len(w) for w in waves) / audio.SAMPLE_RATE, 2)


class JobRunner:
    """Runs jobs in this process (the ingress replica's event loop): one task per job it holds, and
    a periodic sweep that removes expired jobs and picks up jobs whose runner was lost."""

    def __init__(self, store: JobStore, speech: SpeechService, settings: JobSettings):
        self.store = store
        self.speech = speech
        self.settings = settings
        self._tasks: dict[str, asyncio.Task] = {}
        self._sweeper: asyncio.Task | None = None
        # Finished records never change again: the sweep remembers when they expire instead of
        # reading them every time (on S3 each read is a request).
        self._expiry: dict[str, datetime] = {}
        # Audio of the segments finished so far, per job this process runs: a retry after a failed
        # Synthesizer call resumes after them (same text, same seed, so the same audio).
        self._segments: dict[str, tuple[str, list[np.ndarray]]] = {}  # job id -> (voice clip sha256, audio)

    async def submit(self, body: SpeechRequest) -> JobRecord:
        """Check the request as `/v1/audio/speech` would (a bad one is an error now, not a failed job
        later), store the job and start it."""
        self.speech.check(body)
        await asyncio.to_thread(self.speech.store.get, body.voice)
        record = await asyncio.to_thread(self.store.create, body)
        self._start(record.id)
        return record

    def _start(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._run(job_id), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="job sweep")

    async def stop(self) -> None:
        """Stop sweeping and hand the jobs this process runs back to the queue."""
        tasks = [t for t in [self._sweeper, *self._tasks.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("job sweep failed; trying again in %s s", self.settings.sweep_interval_s)
            await asyncio.sleep(self.settings.sweep_interval_s)

    async def sweep(self) -> None:
        """Remove expired jobs; re-run (or fail, when out of attempts) jobs nobody holds."""
        ids = await asyncio.to_thread(self.store.ids)
        self._expiry = {i: t for i, t in self._expiry.items() if i in set(ids)}
        for job_id in ids:
            if job_id in self._tasks or self._expiry.get(job_id, now()) > now():
                continue
            try:
                record = await asyncio.to_thread(self.store.get, job_id)  # removes it once expired
            except NotFound:
                self._expiry.pop(job_id, None)
                continue
            if record.expires_at is not None:
                self._expiry[job_id] = record.expires_at
            elif record.lease_until <= now():
                self._start(job_id)

    async def _run(self, job_id: str) -> None:
        try:
            while (record := await asyncio.to_thread(self.store.claim, job_id)) is not None:
                logger.info("job %s: attempt %d of %d", job_id, record.attempts, record.max_attempts)
                if not await self._attempt(record):
                    return
                await asyncio.sleep(self.settings.retry_delay_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. the store is unreachable: the lease runs out and a sweep retries
            logger.exception("job %s: runner error", job_id)
        finally:
            self._segments.pop(job_id, None)

    async def _attempt(self, record: JobRecord) -> bool:
        """One attempt; True when the job went back to the queue for another."""
        lost = asyncio.Event()
        work = asyncio.create_task(self._synthesize(record))
        heartbeat = asyncio.create_task(self._heartbeat(record, work, lost))
        try:
            await work
            return False
        except Superseded:
            return False
        except asyncio.CancelledError:
            if lost.is_set():  # the heartbeat found the job cancelled or taken over
                return False
            await asyncio.shield(asyncio.to_thread(self.store.release, record.id, record.attempts))
            raise
        except Exception as exc:
            return await self._failed(record, exc)
        finally:
            heartbeat.cancel()
            work.cancel()

    async def _heartbeat(self, record: JobRecord, work: asyncio.Task, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await asyncio.to_thread(self.store.renew, record.id, record.attempts)
            except Superseded:
                lost.set()
                work.cancel()
                return
            except Exception as exc:  # keep working; if this persists the lease runs out
                logger.warning("job %s: could not renew the lease: %s", record.id, exc)

    async def _synthesize(self, record: JobRecord) -> None:
        body, attempt = record.request, record.attempts
        segments = split_segments(body.input, self.settings.segment_chars)
        # Transcript and clip read together once per attempt, so every segment speaks one version
        # of the voice; the clip goes to a replica only when it lacks it (`SpeechService.send`).
        reference = await self.speech.reference_with_clip(body.voice)
        clip, waves = self._segments.get(record.id) or (reference.sha256, [])
        if clip != reference.sha256:  # the voice was replaced since: start again in the new one
            waves = []
        self._segments[record.id] = (reference.sha256, waves)
        await asyncio.to_thread(self.store.renew, record.id, attempt, JobProgress(
            segments_done=len(waves), segments_total=len(segments), audio_seconds=_seconds(waves)))
        options = body.options()
        for done, text in enumerate(segments[len(waves):], len(waves) + 1):
            waves.append(await self._segment(reference, text, options))
            # Also the check between segments: a cancelled job stops here.
            await asyncio.to_thread(self.store.renew, record.id, attempt, JobProgress(
                segments_done=done, segments_total=len(segments), audio_seconds=_seconds(waves)))
        fade = body.cross_fade_duration
        fade = F5_DEFAULTS.cross_fade_duration if fade is None else fade
        speech = audio.join(waves, int(fade * audio.SAMPLE_RATE))
        data = await asyncio.to_thread(audio.encode, speech, body.response_format)
        await asyncio.to_thread(self.store.succeed, record.id, attempt, data)
        logger.info("job %s: succeeded on attempt %d", record.id, attempt)

    async def _segment(self, reference: Reference, text: str, options: SynthesisOptions) -> np.ndarray:
        """One Synthesizer call, within `segment_timeout_s`. A full queue (503 `overloaded`) is waited
        out as its Retry-After says, within the same time: busy is not a failed attempt."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.segment_timeout_s
        while True:
            try:
                speech = await asyncio.wait_for(
                    self.speech.send(reference, lambda ref: self.speech.backends.synthesize(ref, text, options)),
                    max(deadline - loop.time(), 0.0))
                return speech.wave
            except TimeoutError:
                raise TimeoutError(f"A Synthesizer call took over {self.settings.segment_timeout_s:g} s.") from None
            except Overloaded as exc:
                wait = exc.retry_after_s or self.settings.retry_delay_s
                if loop.time() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)

    async def _failed(self, record: JobRecord, exc: Exception) -> bool:
        cause = unwrap(exc)
        if isinstance(cause, ServiceError):  # a 4xx is the request's fault: retrying cannot help
            error, retryable = JobError(code=cause.code, message=cause.message), cause.status_code >= 500
        elif isinstance(cause, TimeoutError):
            error, retryable = JobError(code="synthesis_timeout", message=str(cause)), True
        else:  # e.g. the Synthesizer replica died under the call (Ray's ActorDiedError)
            first_line = (str(cause).strip().splitlines() or [""])[0][:300]
            error, retryable = JobError(code="synthesis_failed", message=f"{type(cause).__name__}: {first_line}"), True
        logger.warning("job %s: attempt %d failed: %s", record.id, record.attempts, error.message)
        try:
            after = await asyncio.to_thread(self.store.retry_or_fail, record.id, record.attempts, error, retryable)
        except Superseded:
            return False
        return after.status == "queued"

"""Asynchronous speech jobs: `JobRunner` runs the jobs of `storage.jobs.JobStore` in the ingress
replica's event loop, renews their leases, and retries or fails them (docs/ARCHITECTURE.md, "Jobs")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from speech_service import audio
from speech_service.audio import encoding, seams
from speech_service.config import JobSettings
from speech_service.errors import NotFound, Overloaded, ServiceError, unwrap
from speech_service.plans import SpeechPlan
from speech_service.schemas import JobError, JobProgress, SpeechRequest
from speech_service.service import audit, marking
from speech_service.service.listening import HeardSegment
from speech_service.service.speech import SpeechService
from speech_service.storage.jobs import JobRecord, JobStore, Superseded
from speech_service.storage.voices import sha256
from speech_service.text.script import Script

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _seconds(made: list[HeardSegment]) -> float:
    return round(sum(len(s.wave) for s in made) / audio.SAMPLE_RATE, 2)


class JobRunner:
    """Runs jobs in this process (the ingress replica's event loop): one task per job it holds, and
    a periodic sweep that removes expired jobs and picks up jobs whose runner was lost."""

    def __init__(self, store: JobStore, speech: SpeechService, settings: JobSettings):
        self.store = store
        self.speech = speech
        self.settings = settings
        self._tasks: dict[str, asyncio.Task] = {}
        # Jobs to start here, in the order they came, once fewer than `max_running` run (any other
        # replica's sweep may claim one first: then it ends at once here).
        self._waiting: dict[str, None] = {}
        self._sweeper: asyncio.Task | None = None
        # Finished records never change again: the sweep remembers when they expire instead of
        # reading them every time (on S3 each read is a request).
        self._expiry: dict[str, datetime] = {}
        # The plan and the audio of the segments finished so far, per job this process runs: a retry
        # after a failed Synthesizer call resumes after them (same plan and seed, so the same audio).
        # They hold while the script reads as it did for them (its lines after the lexicons, and each
        # voice's clip, transcript, model, language, consent): a transcript fixed between attempts
        # starts the job again.
        self._segments: dict[str, tuple[Script, SpeechPlan, list[HeardSegment]]] = {}

    async def submit(self, body: SpeechRequest, owner: str | None = None, max_active: int | None = None) -> JobRecord:
        """Check the request as `/v1/audio/speech` would (a bad one is an error now, not a failed job
        later), store the job and start it; 429 when `owner` has `max_active` jobs queued or running."""
        self.speech.check(body)
        await self.speech.director.script(body)  # its voices exist with the consent required, its markup reads
        record = await asyncio.to_thread(self.store.create, body, owner, max_active)
        self._start(record.id)
        return record

    def _start(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        if len(self._tasks) >= self.settings.max_running:
            self._waiting[job_id] = None  # stays queued in the store until a slot frees
            return
        self._waiting.pop(job_id, None)
        task = asyncio.create_task(self._run(job_id), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._ended(job_id))

    def _ended(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        if self._waiting:
            self._start(next(iter(self._waiting)))

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="job sweep")

    async def stop(self) -> None:
        """Stop sweeping and hand the jobs this process runs back to the queue (the waiting ones
        never left it)."""
        self._waiting.clear()  # so the tasks ending below start none of them
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
        """Remove expired jobs; re-run (or fail, when out of attempts) jobs nobody holds; write the
        audit entries of delivered jobs whose runner stopped first; tidy the owners' indexes."""
        await asyncio.to_thread(self.speech.marker.sidecars.sweep)  # expired sidecar manifests
        keys = await asyncio.to_thread(self.store.keys)
        self._expiry = {i: t for i, t in self._expiry.items() if i in set(keys.ids)}
        for job_id in keys.ids:
            if job_id in self._tasks or job_id in self._waiting \
                    or self._expiry.get(job_id, self.store.now()) > self.store.now():
                continue
            try:
                record = await asyncio.to_thread(self.store.get, job_id)  # removes it once expired
                await asyncio.to_thread(self.store.index.backfill, record, keys)
            except NotFound:
                self._expiry.pop(job_id, None)
                continue
            if record.expires_at is not None:
                if await self._audit(record):  # else read again next time
                    self._expiry[job_id] = record.expires_at
            elif record.lease_until <= self.store.now():
                self._start(job_id)
        await asyncio.to_thread(self.store.index.tidy, keys, set(self._expiry), self.settings.lease_s)

    async def _audit(self, record: JobRecord) -> bool:
        """Write the audit entry a delivered job still owes, and say so in its record; False when
        the store failed (a sweep tries again)."""
        if record.audit_due is None:
            return True
        try:
            await asyncio.to_thread(self.speech.audit.write_job, record.audit_due)
            await asyncio.to_thread(self.store.audited, record.id)
        except Exception as exc:
            logger.warning("job %s: its audit entry is not written yet (a sweep will): %s", record.id, exc)
            return False
        return True

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
        """The whole response's plan, its segments made one call each (each call a check for
        cancellation and a progress report), joined as the whole response joins them."""
        body, attempt = record.request, record.attempts
        # The script and its clips read once per attempt, so every segment speaks one version of each
        # voice; the clips go to a replica only when it lacks them (`SpeechService.send`).
        script = await self.speech.director.with_clips(await self.speech.director.script(body))
        voice = replace(script, references=tuple(reference.named() for reference in script.references))
        made_for, plan, made = self._segments.get(record.id) or (voice, None, [])
        if made_for != voice or plan is None:  # a voice changed since (clip, transcript, ...): start again
            plan = await self._call(lambda: self.speech.send(
                script, lambda s: self.speech.backends.plan(s.references[0], s.sent(), body.options())))
            made = []
        self._segments[record.id] = (voice, plan, made)
        total = len(plan.segments)
        await asyncio.to_thread(self.store.renew, record.id, attempt, JobProgress(
            segments_done=len(made), segments_total=total, audio_seconds=_seconds(made)))
        listened = self.speech.listened
        make = listened.listener(body, script).make
        for index in range(len(made), total):
            made.append(await self._call(lambda i=index: make(plan, i)))
            # Also the check between segments: a cancelled job stops here.
            await asyncio.to_thread(self.store.renew, record.id, attempt, JobProgress(
                segments_done=index + 1, segments_total=total, audio_seconds=_seconds(made)))
        found = listened.found(body, made, plan, listened.check_for(body), script)  # QualityCheckFailed: `require`
        speech = seams.join([s.wave for s in made], plan.cross_fade_samples, plan.pause_samples)
        data = await asyncio.to_thread(encoding.encode, speech, body.response_format)
        facts = marking.facts(body, script, record.id, record.owner)
        marked = await asyncio.to_thread(self.speech.marker.whole, data, body.response_format, facts, record.id)
        # The audit entry lands with the `succeeded` record, then goes to the trail: once per job.
        entry = audit.entry(facts, "job", body.response_format, await asyncio.to_thread(sha256, marked.data))
        done = await asyncio.to_thread(self.store.succeed, record.id, attempt, marked.data, found.words,
                                       found.quality, entry)
        logger.info("job %s: succeeded on attempt %d", record.id, attempt)
        await self._audit(done)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """One Synthesizer call, within `segment_timeout_s`. A full queue (503 `overloaded`) is waited
        out as its Retry-After says, within the same time: busy is not a failed attempt."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.segment_timeout_s
        while True:
            try:
                return await asyncio.wait_for(call(), max(deadline - loop.time(), 0.0))
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

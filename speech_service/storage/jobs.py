"""A job's moves through its states (`JobStore`), made by `service.jobs.JobRunner` and a caller's
cancel, on top of `storage.job_objects.JobObjects` (the job's objects in the store).

A job is created `queued`; a runner claims it (`running`), renews its lease (`lease_until`) while it
works, and ends it `succeeded` (its results written first), back to `queued` for a retry, or
`failed`; a caller may cancel it. Every move is a conditional write of the version that was read,
so two runners never both hold a job. A `queued` or `running` job whose lease has run out has no
runner, and whichever ingress sweeps first re-runs it (up to `max_attempts`) or fails it. See
docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from speech_service.errors import NotFound, StoreUnavailable
from speech_service.schemas import Caption, JobError, JobProgress, JobStatus, QualityReport
from speech_service.storage.audit import AuditEntry
from speech_service.storage.job_objects import ACTIVE, JobObjects
from speech_service.storage.job_record import JobRecord

logger = logging.getLogger(__name__)

# Between tries of a success's write whose answer did not come (`succeed`).
_SUCCESS_RETRY_DELAYS_S = (0.2, 1.0, 3.0)


class Superseded(Exception):
    """The job was cancelled, removed or taken over by another runner: stop working on it."""


class _Unchanged(Exception):
    """Raised by a record change to leave the record as it is."""


class JobStore(JobObjects):
    """The jobs' store: `JobObjects`' reads and writes, and the moves, each one an `update` (a
    conditional write of the record as it was read)."""

    def cancel_or_remove(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        """Cancel a queued or running job (its runner stops at its next check) and return it; remove
        a finished one and return None."""
        def cancel(record: JobRecord) -> None:
            if record.status not in ACTIVE:
                raise _Unchanged
            self._finish(record, "cancelled")

        if self.get(job_id, owner).status in ACTIVE:
            try:
                return self.update(job_id, cancel)
            except _Unchanged:  # finished meanwhile
                pass
        self.remove(job_id)
        return None

    # -- moves made by runners ---------------------------------------------------------------
    def _finish(self, record: JobRecord, status: JobStatus, error: JobError | None = None) -> None:
        t = self.now()
        record.status, record.error, record.finished_at = status, error, t
        record.expires_at = t + timedelta(seconds=self.settings.result_ttl_s)

    def _lease(self) -> datetime:
        return self.now() + timedelta(seconds=self.settings.lease_s)

    def claim(self, job_id: str) -> JobRecord | None:
        """Start a new attempt at a job nobody holds (queued, or running with a lapsed lease).
        None when another runner holds it or it is over; a lost job out of attempts is failed."""
        def take(record: JobRecord) -> None:
            if record.status not in ACTIVE or record.lease_until > self.now():
                raise _Unchanged
            if record.attempts >= record.max_attempts:
                self._finish(record, "failed", JobError(code="runner_lost", message=(
                    f"The job's runner stopped (no sign of it for {self.settings.lease_s:g} s) on attempt "
                    f"{record.attempts} of {record.max_attempts}.")))
                return
            record.status, record.attempts, record.lease_until = "running", record.attempts + 1, self._lease()
            record.started_at = record.started_at or self.now()
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

    def succeed(self, job_id: str, attempt: int, data: bytes, captions: list[Caption] | None = None,
                quality: QualityReport | None = None, audit: AuditEntry | None = None) -> JobRecord:
        """Store the results, then the `succeeded` record (with `audit`, timed as it finished, as its
        `audit_due`); Superseded when the job is no longer this attempt's."""
        record = self.renew(job_id, attempt)
        self._write_results(record, data, captions)  # the results first: a succeeded record always has them

        def done(record: JobRecord) -> None:
            if record.status == "succeeded" and record.attempts == attempt:
                raise _Unchanged  # an earlier try of this write landed; its answer was lost
            self._holding(record, attempt)
            self._finish(record, "succeeded")
            record.quality = quality
            record.audit_due = None if audit is None else audit.model_copy(update={"time": record.finished_at})

        try:
            return self._write_success(job_id, done)
        except (Superseded, NotFound):
            try:
                current = self._read(job_id)[0].status
            except NotFound:
                current = None
            if current in (None, "cancelled", "failed"):  # nobody will ever serve these results
                self._drop_results(record)
            raise Superseded(job_id) from None

    def _write_success(self, job_id: str, done: Callable[[JobRecord], None]) -> JobRecord:
        """The `succeeded` write, tried again while the store does not answer. A try that landed with
        its answer lost is found by the next (succeeded under this attempt) and taken as landed."""
        delays = iter(_SUCCESS_RETRY_DELAYS_S)
        while True:
            try:
                return self.update(job_id, done)
            except _Unchanged:
                landed = self._read(job_id)[0]
                self.index.settled(landed)
                return landed
            except StoreUnavailable:
                if (delay := next(delays, None)) is None:
                    raise
                logger.warning("job %s: the store did not answer the succeeded write; trying again", job_id)
                time.sleep(delay)

    def audited(self, job_id: str) -> None:
        """The job's audit entry is in the trail: no sweep writes it again."""
        def written(record: JobRecord) -> None:
            if record.audit_due is None:
                raise _Unchanged
            record.audit_due = None

        try:
            self.update(job_id, written, touch=False)  # the job a client sees is the same, `updated_at` too
        except (_Unchanged, NotFound):
            pass

    def retry_or_fail(self, job_id: str, attempt: int, error: JobError, retryable: bool) -> JobRecord:
        """After a failed attempt: back to `queued` while attempts remain (and the error allows it),
        else `failed` with `error`."""
        def after_failure(record: JobRecord) -> None:
            self._holding(record, attempt)
            if retryable and record.attempts < record.max_attempts:
                record.status, record.last_error, record.lease_until = "queued", error, self.now()
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
            record.status, record.attempts, record.lease_until = "queued", record.attempts - 1, self.now()

        try:
            self.update(job_id, hand_back)
        except (Superseded, NotFound):
            pass

"""Job records and results in the object store (`JobStore`); `service.jobs.JobRunner` moves
them through their states.

Keys: `jobs/{id}.json` is the record, and the truth; `jobs/{id}.{format}` is the audio and
`jobs/{id}.captions` its words' timings (JSON, when the job asked for timestamps), written before
the record says `succeeded`. Every change to a record is a conditional write of the version
that was read, so two runners never both hold a job. A runner holds a lease on its job
(`lease_until`) and renews it while it works; a `queued` or `running` job whose lease has run out
has no runner, and whichever ingress sweeps first re-runs it (up to `max_attempts`) or fails it.
See docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import TypeAdapter

from speech_service.config import JobSettings
from speech_service.errors import Conflict, NotFound
from speech_service.schemas import Caption, JobError, JobProgress, JobStatus, QualityReport, SpeechRequest
from speech_service.storage.job_record import JobRecord, new_id, now
from speech_service.storage.objects import ObjectStore, PreconditionFailed

logger = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
_CAPTIONS = TypeAdapter(list[Caption])
ID_RE = re.compile(r"^job_[0-9a-f]{20}$")


class Superseded(Exception):
    """The job was cancelled, removed or taken over by another runner: stop working on it."""


class _Unchanged(Exception):
    """Raised by a record change to leave the record as it is."""


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"Job '{job_id}' does not exist or has expired.", code="job_not_found")


class JobStore:
    """`clock` tells the time of leases and expiry (tests pass one they move by hand)."""

    def __init__(self, objects: ObjectStore, settings: JobSettings, clock: Callable[[], datetime] = now):
        self.objects = objects
        self.settings = settings
        self.now = clock

    @staticmethod
    def _key(job_id: str) -> str:
        if not ID_RE.fullmatch(job_id):
            raise _not_found(job_id)
        return f"jobs/{job_id}.json"

    def create(self, request: SpeechRequest, owner: str | None = None) -> JobRecord:
        t = self.now()
        record = JobRecord(id=new_id(), status="queued", request=request, max_attempts=self.settings.max_attempts,
                           created_at=t, updated_at=t, lease_until=t, owner=owner)
        self.objects.put(self._key(record.id), record.model_dump_json().encode(), if_none_match=True)
        return record

    def _read(self, job_id: str) -> tuple[JobRecord, str]:
        try:
            stored = self.objects.get(self._key(job_id))
        except KeyError:
            raise _not_found(job_id) from None
        return JobRecord.model_validate_json(stored.data), stored.etag

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The record; an expired job is removed here and reads as not found, and so does another
        owner's job when `owner` is given."""
        record, _ = self._read(job_id)
        if owner is not None and record.owner != owner:
            raise _not_found(job_id)
        if record.expires_at is not None and record.expires_at <= self.now():
            self.remove(job_id)
            raise _not_found(job_id)
        return record

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` to the current record and write it back only if nobody wrote in between;
        on a lost race, read again and re-apply. `change` may raise to leave the record alone."""
        for attempt in range(100):
            record, etag = self._read(job_id)
            change(record)
            record.updated_at = self.now()
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

    def list(self, limit: int, after: str | None = None, owner: str | None = None) -> tuple[list[JobRecord], bool]:
        """Up to `limit` jobs older than the job `after`, newest first (of `owner` when given), and
        whether there are more."""
        ids = [i for i in self.ids() if after is None or i < after]
        page: list[JobRecord] = []
        for n, job_id in enumerate(ids):
            try:
                page.append(self.get(job_id, owner))
            except NotFound:  # expired or removed meanwhile, or another owner's
                continue
            if len(page) == limit:
                return page, n + 1 < len(ids)
        return page, False

    def result(self, job_id: str, owner: str | None = None) -> tuple[JobRecord, bytes]:
        record = self.get(job_id, owner)
        if record.status != "succeeded":
            raise Conflict(f"Job '{job_id}' is {record.status}; its audio is there once it has succeeded.",
                           code="job_not_finished")
        try:
            return record, self.objects.get(record.result_key).data
        except KeyError:  # removed between the two reads
            raise _not_found(job_id) from None

    def captions(self, job_id: str, owner: str | None = None) -> list[Caption]:
        record = self.get(job_id, owner)
        if not record.request.timestamps:
            raise NotFound(f"Job '{job_id}' did not ask for timestamps; send \"timestamps\": \"word\" with the job.",
                           code="captions_not_requested")
        if record.status != "succeeded":
            raise Conflict(f"Job '{job_id}' is {record.status}; its captions are there once it has succeeded.",
                           code="job_not_finished")
        try:
            return _CAPTIONS.validate_json(self.objects.get(record.captions_key).data)
        except KeyError:  # removed between the two reads
            raise _not_found(job_id) from None

    def remove(self, job_id: str) -> None:
        record, _ = self._read(job_id)
        self.objects.delete(record.result_key)
        self.objects.delete(record.captions_key)
        self.objects.delete(self._key(job_id))

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
                quality: QualityReport | None = None) -> JobRecord:
        record = self.renew(job_id, attempt)
        if captions is not None:
            self.objects.put(record.captions_key, _CAPTIONS.dump_json(captions))
        self.objects.put(record.result_key, data)  # the results first: a succeeded record always has them

        def done(record: JobRecord) -> None:
            self._holding(record, attempt)
            self._finish(record, "succeeded")
            record.quality = quality

        try:
            return self.update(job_id, done)
        except (Superseded, NotFound):
            try:
                current = self._read(job_id)[0].status
            except NotFound:
                current = None
            if current in (None, "cancelled", "failed"):  # nobody will ever serve these results
                self.objects.delete(record.result_key)
                self.objects.delete(record.captions_key)
            raise Superseded(job_id) from None

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

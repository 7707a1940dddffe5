"""Job records and results in the object store (`JobStore`); `service.jobs.JobRunner` moves
them through their states.

Keys: `jobs/{id}.json` is the record, and the truth; `jobs/{id}.{format}` is the audio and
`jobs/{id}.captions` its words' timings (JSON, when the job asked for timestamps), written before
the record says `succeeded`. Every change to a record is a conditional write of the version
that was read, so two runners never both hold a job. A runner holds a lease on its job
(`lease_until`) and renews it while it works; a `queued` or `running` job whose lease has run out
has no runner, and whichever ingress sweeps first re-runs it (up to `max_attempts`) or fails it.

Two indexes of empty markers, per owner (a key's name): `jobs/owners/key-{owner}/{id}` (its jobs,
so a listing reads only the records it lists) and `jobs/active/key-{owner}/{id}` (its queued and
running jobs, which its `max_concurrent` bounds across every ingress). Both are written before
the record; the owner's goes after it, the active one once the record is written finished; a sweep
removes those left behind. See docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import TypeAdapter

from speech_service.config import JobSettings
from speech_service.errors import Conflict, NotFound, RateLimited, StoreUnavailable
from speech_service.schemas import Caption, JobError, JobProgress, JobStatus, QualityReport, SpeechRequest
from speech_service.storage.audit import AuditEntry
from speech_service.storage.job_record import JobRecord, age_s, new_id, now
from speech_service.storage.objects import ObjectStore, PreconditionFailed

logger = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
_CAPTIONS = TypeAdapter(list[Caption])
ID_RE = re.compile(r"^job_[0-9a-f]{20}$")
_RECORD_RE = re.compile(r"^jobs/(job_[0-9a-f]{20})\.json$")
_MARKER_RE = re.compile(r"^jobs/(?:owners|active)/key-[^/]+/(job_[0-9a-f]{20})$")
# A job over its key's limit is refused for this long: jobs take seconds at the least.
_LIMIT_RETRY_AFTER_S = 5.0
# Between tries of a success's write whose answer did not come (`succeed`).
_SUCCESS_RETRY_DELAYS_S = (0.2, 1.0, 3.0)


class Superseded(Exception):
    """The job was cancelled, removed or taken over by another runner: stop working on it."""


class _Unchanged(Exception):
    """Raised by a record change to leave the record as it is."""


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"Job '{job_id}' does not exist or has expired.", code="job_not_found")


def _owner_prefix(owner: str) -> str:
    return f"jobs/owners/key-{owner}/"  # "key-": a key may be named "." or ".."


def _active_prefix(owner: str) -> str:
    return f"jobs/active/key-{owner}/"


def _markers(record: JobRecord) -> list[str]:
    """The index markers of a job: none without an owner (the service has no keys)."""
    if record.owner is None:
        return []
    return [_owner_prefix(record.owner) + record.id, _active_prefix(record.owner) + record.id]


def _newest_first(keys: list[str]) -> list[str]:
    return sorted((key.rsplit("/", 1)[-1] for key in keys), reverse=True)


@dataclass(frozen=True)
class JobKeys:
    """One listing of `jobs/`: the records' ids (newest first) and each index marker's job id."""

    ids: list[str]
    markers: dict[str, str]


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

    def create(self, request: SpeechRequest, owner: str | None = None, max_active: int | None = None) -> JobRecord:
        """Store a new queued job; 429 when `owner` has `max_active` jobs queued or running already."""
        t = self.now()
        record = JobRecord(id=new_id(), status="queued", request=request, max_attempts=self.settings.max_attempts,
                           created_at=t, updated_at=t, lease_until=t, owner=owner)
        markers = _markers(record)
        try:
            for key in markers:  # before the record: a job is never missing from its owner's indexes
                self.objects.put(key, b"")
            if owner is not None and max_active is not None:
                self._check_active(record.id, owner, max_active)
            self.objects.put(self._key(record.id), record.model_dump_json().encode(), if_none_match=True)
        except BaseException:
            self._drop_quietly(markers)
            raise
        return record

    def _check_active(self, job_id: str, owner: str, limit: int) -> None:
        """Counted after this job's own marker is written: of two submits at once, the later to list
        sees the other, so the key never has more than `limit` (one may be refused needlessly)."""
        others = [key for key in self.objects.list(_active_prefix(owner)) if not key.endswith(job_id)]
        if len(others) >= limit:
            raise RateLimited(f"The key '{owner}' has {len(others)} jobs queued or running, its limit of concurrent "
                              f"requests (max_concurrent: {limit}); retry when one has finished.",
                              code="concurrency_limit_exceeded", retry_after_s=_LIMIT_RETRY_AFTER_S)

    def _drop_quietly(self, keys: list[str]) -> None:
        """Remove index markers; one left behind (the store failed) is the sweep's to remove."""
        for key in keys:
            try:
                self.objects.delete(key)
            except StoreUnavailable as exc:
                logger.warning("left the job marker %s behind: %s", key, exc.message)

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
            was = record.status
            change(record)
            record.updated_at = self.now()
            try:
                self.objects.put(self._key(job_id), record.model_dump_json().encode(), if_match=etag)
            except PreconditionFailed:
                time.sleep(0.005 * attempt)
                continue
            if was in ACTIVE and record.status not in ACTIVE:
                self._settled(record)
            return record
        raise RuntimeError(f"job {job_id}: too many concurrent writers")

    def _settled(self, record: JobRecord) -> None:
        """A finished job no longer counts against its owner's limit."""
        if record.owner is not None:
            self._drop_quietly([_active_prefix(record.owner) + record.id])

    def keys(self) -> JobKeys:
        found = self.objects.list("jobs/")
        return JobKeys(sorted((m.group(1) for k in found if (m := _RECORD_RE.match(k))), reverse=True),
                       {k: m.group(1) for k in found if (m := _MARKER_RE.match(k))})

    def ids(self) -> list[str]:
        """Every job id, newest first."""
        return self.keys().ids

    def list(self, limit: int, after: str | None = None, owner: str | None = None) -> tuple[list[JobRecord], bool]:
        """Up to `limit` jobs older than the job `after`, newest first (of `owner` when given), and
        whether there are more. An owner's come from its index: only the records listed are read."""
        listed = self.ids() if owner is None else _newest_first(self.objects.list(_owner_prefix(owner)))
        ids = [i for i in listed if ID_RE.fullmatch(i) and (after is None or i < after)]
        page: list[JobRecord] = []
        for n, job_id in enumerate(ids):
            try:
                page.append(self.get(job_id, owner))
            except NotFound:  # expired or removed meanwhile, or a marker whose record is still being written
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
        self._drop_quietly(_markers(record))  # after the record: a marker without one is only skipped

    def tidy_index(self, keys: JobKeys, finished: set[str], grace_s: float) -> None:
        """The sweep's: remove the markers of jobs that are gone (older than `grace_s`: a job being
        created writes its markers first) and the active markers of `finished` jobs."""
        records = set(keys.ids)
        stale = [key for key, job_id in keys.markers.items()
                 if (job_id not in records and age_s(job_id) > grace_s)
                 or (job_id in finished and key.startswith("jobs/active/"))]
        self._drop_quietly(stale)

    def index(self, record: JobRecord, keys: JobKeys) -> None:
        """The sweep's: write the owner marker of a job stored before owners had an index."""
        if record.owner is not None and _owner_prefix(record.owner) + record.id not in keys.markers:
            self.objects.put(_owner_prefix(record.owner) + record.id, b"")

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
        if captions is not None:
            self.objects.put(record.captions_key, _CAPTIONS.dump_json(captions))
        self.objects.put(record.result_key, data)  # the results first: a succeeded record always has them

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
                self.objects.delete(record.result_key)
                self.objects.delete(record.captions_key)
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
                self._settled(landed)
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
            self.update(job_id, written)
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

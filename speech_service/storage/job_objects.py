"""A job's objects in the object store (`JobObjects`): the base of `storage.jobs.JobStore`, which
moves jobs through their states.

`jobs/{id}.json` is the record, and the truth; every change to it is a conditional write of the
version that was read (`update`). `jobs/{id}.{format}` is the audio and `jobs/{id}.captions` its
words' timings (JSON, when the job asked for timestamps), served once the record says `succeeded`.
Each owner's jobs are also listed by empty markers (`storage.job_index.JobIndex`), written before
the record and removed after it. See docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import TypeAdapter

from speech_service.config import JobSettings
from speech_service.errors import Conflict, NotFound
from speech_service.schemas import Caption, SpeechRequest
from speech_service.storage.job_index import JobIndex, JobKeys
from speech_service.storage.job_record import JobRecord, new_id, now
from speech_service.storage.objects import ObjectStore, PreconditionFailed

ACTIVE = ("queued", "running")
_CAPTIONS = TypeAdapter(list[Caption])
ID_RE = re.compile(r"^job_[0-9a-f]{20}$")


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"Job '{job_id}' does not exist or has expired.", code="job_not_found")


class JobObjects:
    """A job's record, results and index markers; `clock` tells the time of leases and expiry
    (tests pass one they move by hand)."""

    def __init__(self, objects: ObjectStore, settings: JobSettings, clock: Callable[[], datetime] = now):
        self.objects = objects
        self.settings = settings
        self.now = clock
        self.index = JobIndex(objects)

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
        with self.index.adding(record, max_active):
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

    def update(self, job_id: str, change: Callable[[JobRecord], None], touch: bool = True) -> JobRecord:
        """Apply `change` to the current record and write it back only if nobody wrote in between;
        on a lost race, read again and re-apply. `change` may raise to leave the record alone.
        `touch=False`: a change of our own bookkeeping, which leaves `updated_at` as clients saw it."""
        for attempt in range(100):
            record, etag = self._read(job_id)
            was = record.status
            change(record)
            if touch:
                record.updated_at = self.now()
            try:
                self.objects.put(self._key(job_id), record.model_dump_json().encode(), if_match=etag)
            except PreconditionFailed:
                time.sleep(0.005 * attempt)
                continue
            if was in ACTIVE and record.status not in ACTIVE:
                self.index.settled(record)
            return record
        raise RuntimeError(f"job {job_id}: too many concurrent writers")

    def keys(self) -> JobKeys:
        """One listing of `jobs/`, for the sweep: the records and the index markers."""
        return JobKeys.of(self.objects.list("jobs/"))

    def ids(self) -> list[str]:
        """Every job id, newest first."""
        return self.keys().ids

    def list(self, limit: int, after: str | None = None, owner: str | None = None) -> tuple[list[JobRecord], bool]:
        """Up to `limit` jobs older than the job `after`, newest first (of `owner` when given), and
        whether there are more. An owner's come from its index: only the records listed are read."""
        listed = self.ids() if owner is None else self.index.owned(owner)
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

    def _write_results(self, record: JobRecord, data: bytes, captions: list[Caption] | None) -> None:
        if captions is not None:
            self.objects.put(record.captions_key, _CAPTIONS.dump_json(captions))
        self.objects.put(record.result_key, data)

    def _drop_results(self, record: JobRecord) -> None:
        self.objects.delete(record.result_key)
        self.objects.delete(record.captions_key)

    def remove(self, job_id: str) -> None:
        record, _ = self._read(job_id)
        self._drop_results(record)
        self.objects.delete(self._key(job_id))
        self.index.drop(self.index.markers(record))  # after the record: a marker without one is only skipped

"""The per-owner indexes of jobs (`JobIndex`): empty markers beside the job records of
`storage.job_objects.JobObjects`, one set per owner (a key's name).

`jobs/owners/key-{owner}/{id}` lists the owner's jobs, so a listing reads only the records it lists;
`jobs/active/key-{owner}/{id}` its queued and running jobs, which its `max_concurrent` bounds across
every ingress. Both are written before the record; the owner's is removed after it, the active one
once the record is written finished; the sweep removes those left behind. See docs/ARCHITECTURE.md,
"Jobs".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from speech_service.errors import RateLimited, StoreUnavailable
from speech_service.storage.job_record import JobRecord, age_s
from speech_service.storage.objects import ObjectStore

logger = logging.getLogger(__name__)

_RECORD_RE = re.compile(r"^jobs/(job_[0-9a-f]{20})\.json$")
_MARKER_RE = re.compile(r"^jobs/(?:owners|active)/key-[^/]+/(job_[0-9a-f]{20})$")
# A job over its key's limit is refused for this long: jobs take seconds at the least.
_LIMIT_RETRY_AFTER_S = 5.0


def _owner_prefix(owner: str) -> str:
    return f"jobs/owners/key-{owner}/"  # "key-": a key may be named "." or ".."


def _active_prefix(owner: str) -> str:
    return f"jobs/active/key-{owner}/"


@dataclass(frozen=True)
class JobKeys:
    """One listing of `jobs/`: the records' ids (newest first) and each index marker's job id."""

    ids: list[str]
    markers: dict[str, str]

    @classmethod
    def of(cls, found: list[str]) -> JobKeys:
        return cls(sorted((m.group(1) for k in found if (m := _RECORD_RE.match(k))), reverse=True),
                   {k: m.group(1) for k in found if (m := _MARKER_RE.match(k))})


class JobIndex:
    """The markers of every owner's jobs, in the same `ObjectStore` as the records."""

    def __init__(self, objects: ObjectStore):
        self.objects = objects

    @staticmethod
    def markers(record: JobRecord) -> list[str]:
        """The index markers of a job: none without an owner (the service has no keys)."""
        if record.owner is None:
            return []
        return [_owner_prefix(record.owner) + record.id, _active_prefix(record.owner) + record.id]

    def drop(self, keys: list[str]) -> None:
        """Remove index markers; one left behind (the store failed) is the sweep's to remove."""
        for key in keys:
            try:
                self.objects.delete(key)
            except StoreUnavailable as exc:
                logger.warning("left the job marker %s behind: %s", key, exc.message)

    def owned(self, owner: str) -> list[str]:
        """The ids of `owner`'s jobs, newest first."""
        return sorted((key.rsplit("/", 1)[-1] for key in self.objects.list(_owner_prefix(owner))), reverse=True)

    @contextmanager
    def adding(self, record: JobRecord, max_active: int | None) -> Iterator[None]:
        """Write a new job's markers around the write of its record (the `with` body): before it, so a
        job is never missing from its owner's indexes, and removed again if it fails. 429 when the
        owner has `max_active` jobs queued or running already."""
        markers = self.markers(record)
        try:
            for key in markers:
                self.objects.put(key, b"")
            if record.owner is not None and max_active is not None:
                self._check_active(record.id, record.owner, max_active)
            yield
        except BaseException:
            self.drop(markers)
            raise

    def _check_active(self, job_id: str, owner: str, limit: int) -> None:
        """Counted after this job's own marker is written: of two submits at once, the later to list
        sees the other, so the key never has more than `limit` (one may be refused needlessly)."""
        others = [key for key in self.objects.list(_active_prefix(owner)) if not key.endswith(job_id)]
        if len(others) >= limit:
            raise RateLimited(f"The key '{owner}' has {len(others)} jobs queued or running, its limit of concurrent "
                              f"requests (max_concurrent: {limit}); retry when one has finished.",
                              code="concurrency_limit_exceeded", retry_after_s=_LIMIT_RETRY_AFTER_S)

    def settled(self, record: JobRecord) -> None:
        """A finished job no longer counts against its owner's limit."""
        if record.owner is not None:
            self.drop([_active_prefix(record.owner) + record.id])

    def tidy(self, keys: JobKeys, finished: set[str], grace_s: float) -> None:
        """The sweep's: remove the markers of jobs that are gone (older than `grace_s`: a job being
        created writes its markers first) and the active markers of `finished` jobs."""
        records = set(keys.ids)
        stale = [key for key, job_id in keys.markers.items()
                 if (job_id not in records and age_s(job_id) > grace_s)
                 or (job_id in finished and key.startswith("jobs/active/"))]
        self.drop(stale)

    def backfill(self, record: JobRecord, keys: JobKeys) -> None:
        """The sweep's: write the owner marker of a job stored before owners had an index."""
        if record.owner is not None and _owner_prefix(record.owner) + record.id not in keys.markers:
            self.objects.put(_owner_prefix(record.owner) + record.id, b"")

"""The audit trail: one entry per speech made, append-only; docs/ARCHITECTURE.md, "Audit".

    audit/{YYYY-MM-DD}/{HHMMSS}-{batch id}.jsonl    entries of one day from one batch, one JSON
                                                    object per line; written once, never changed

A batch id is its writer's (random, per process) and a sequence number: a batch written again after
a lost answer finds its own key taken (`PreconditionFailed`), which means it already landed. A
delivered job's entry is a batch of its own, `job-{job id}`, timed when the job finished: every
writer of it names the same key, so it lands once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel

from speech_service.storage.objects import ObjectStore, PreconditionFailed

PREFIX = "audit/"


class AuditEntry(BaseModel):
    time: datetime
    kind: Literal["speech", "stream", "job"]
    key: str | None  # the key's name; None when no keys are configured
    voice: str
    consent_id: str | None
    model: str
    format: str
    text_sha256: str
    output_sha256: str  # of the bytes sent (a stream: all of them; events: the audio they carry)
    request_id: str  # a job's: its id
    complete: bool = True  # False: a stream that broke off or whose client left
    speakers: list[str] = []  # "voice" or "voice:style" of each voice and take, when not only the voice's own clip


class AuditStore:
    def __init__(self, objects: ObjectStore):
        self.objects = objects

    def append(self, batch_id: str, entries: list[AuditEntry]) -> None:
        """Write `entries` (one object per day they fall on); a retry of a batch that landed is a no-op."""
        days: dict[date, list[AuditEntry]] = defaultdict(list)
        for entry in entries:
            days[entry.time.date()].append(entry)
        for day, of_day in sorted(days.items()):
            first = min(e.time for e in of_day)
            key = f"{PREFIX}{day.isoformat()}/{first:%H%M%S}-{batch_id}.jsonl"
            data = "".join(e.model_dump_json() + "\n" for e in of_day).encode()
            try:
                self.objects.put(key, data, if_none_match=True)
            except PreconditionFailed:
                continue  # written by an earlier try whose answer was lost

    def read(self, since: datetime, until: datetime, voice: str | None = None,
             limit: int = 1000) -> tuple[list[AuditEntry], bool]:
        """Entries with `since <= time < until` (of `voice`, when given), oldest first, at most
        `limit`; and whether more matched."""
        since, until = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
        found: list[AuditEntry] = []
        day = since.date()
        while day <= until.date():
            for key in self.objects.list(f"{PREFIX}{day.isoformat()}/"):
                if _first_time(key, day) >= until.replace(microsecond=0) + timedelta(seconds=1):
                    continue  # the batch began after the range ends
                try:
                    lines = self.objects.get(key).data.decode().splitlines()
                except KeyError:
                    continue
                for line in lines:
                    entry = AuditEntry.model_validate_json(line)
                    if since <= entry.time < until and voice in (None, entry.voice):
                        found.append(entry)
            day += timedelta(days=1)
        found.sort(key=lambda e: (e.time, e.request_id))
        return found[:limit], len(found) > limit


def _first_time(key: str, day: date) -> datetime:
    name = key.rsplit("/", 1)[-1]
    try:
        clock = datetime.strptime(name[:6], "%H%M%S").time()
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return datetime.combine(day, clock, tzinfo=timezone.utc)

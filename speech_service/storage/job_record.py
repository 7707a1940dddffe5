"""A job's stored record (`jobs/{id}.json`) and the keys of its results; `storage.jobs.JobStore`
reads and writes it."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from speech_service.schemas import Job, JobError, JobProgress, JobStatus, QualityReport, SpeechRequest
from speech_service.storage.audit import AuditEntry


def now() -> datetime:
    return datetime.now(timezone.utc)


ID_PREFIX = "job_"


def new_id() -> str:
    """Time-ordered, so a listing of keys is a listing by age: 12 hex digits of milliseconds, 8 random."""
    return f"{ID_PREFIX}{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def age_s(job_id: str) -> float:
    """Seconds since the job's id was made (its milliseconds)."""
    return time.time() - int(job_id[len(ID_PREFIX):len(ID_PREFIX) + 12], 16) / 1000


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
    owner: str | None = None  # the name of the key that made it (None: the service has no keys)
    quality: QualityReport | None = None  # the quality check's, once succeeded
    # A delivered job's audit entry, kept with the `succeeded` write until it is in the audit trail:
    # whoever finds it here (the runner, or any sweep) writes it, once (`AuditLog.write_job`).
    audit_due: AuditEntry | None = None

    @property
    def result_key(self) -> str:
        return f"jobs/{self.id}.{self.request.response_format}"

    @property
    def captions_key(self) -> str:
        return f"jobs/{self.id}.captions"

    def view(self) -> Job:
        body = self.request
        return Job(
            **self.model_dump(include={"id", "status", "progress", "error", "last_error", "attempts", "max_attempts",
                                       "created_at", "updated_at", "started_at", "finished_at", "expires_at"}),
            voice=body.voice, model=body.model, response_format=body.response_format, input_chars=len(body.input),
            audio_url=f"/v1/jobs/{self.id}/audio" if self.status == "succeeded" else None,
            captions_url=f"/v1/jobs/{self.id}/captions" if self.status == "succeeded" and body.timestamps else None,
            quality=self.quality,
        )

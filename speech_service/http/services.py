"""What the routes call, built once per app and kept on `app.state.services`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, UploadFile

from speech_service.config import ServiceSettings
from speech_service.errors import PayloadTooLarge
from speech_service.http.auth import KeyRing
from speech_service.models import ModelRegistry
from speech_service.service.audit import AuditLog
from speech_service.service.consent import ConsentDesk
from speech_service.service.jobs import JobRunner
from speech_service.service.live import LiveSessions
from speech_service.service.speech import Backends, SpeechService
from speech_service.storage.consent import ConsentStore
from speech_service.storage.jobs import JobStore
from speech_service.storage.voices import VoiceStore


@dataclass
class Services:
    settings: ServiceSettings
    store: VoiceStore
    backends: Backends
    speech: SpeechService
    jobs: JobStore
    runner: JobRunner
    keys: KeyRing
    consent: ConsentDesk
    models: ModelRegistry  # the speech service's own, for the catalog and voice routes
    audit: AuditLog  # the speech service's own, closed when the app stops
    live: LiveSessions  # this replica's open sockets

    @classmethod
    def build(cls, settings: ServiceSettings, backends: Backends, store: VoiceStore) -> Services:
        speech = SpeechService(settings, store, backends)
        jobs = JobStore(store.objects, settings.jobs)  # beside the voices: same bucket or directory
        consent = ConsentDesk(store, ConsentStore(store.objects), settings.consent, settings.limits)
        return cls(settings, store, backends, speech, jobs, JobRunner(jobs, speech, settings.jobs),
                   KeyRing(settings.keys()), consent, speech.models, speech.audit,
                   LiveSessions(settings.limits.max_sockets, settings.limits.max_live_pieces))


async def services(request: Request) -> Services:
    """The app's services (a FastAPI dependency; `async`, so it is not run in a thread)."""
    return request.app.state.services


async def read_upload(upload: UploadFile, limit: int, field: str = "file") -> bytes:
    """A form's file, at most `limit` bytes (413 naming the field); the body as a whole is bounded
    before this by `middleware.BodyLimit`."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The {field} is over the {limit} byte limit.", code="upload_too_large", param=field)
    return data

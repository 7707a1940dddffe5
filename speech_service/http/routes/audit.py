"""`GET /v1/audit`: who made which speech with which voice, read by voice and time range (`admin`)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends, Query

from speech_service.errors import BadRequest
from speech_service.http.auth import require
from speech_service.http.openapi import errors_for
from speech_service.http.services import Services, services
from speech_service.schemas import VOICE_NAME_PATTERN, AuditPage

router = APIRouter(prefix="/v1/audit", tags=["audit"])
DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=366)


@router.get("", response_model=AuditPage, dependencies=[Depends(require("admin"))],
            responses=errors_for(400, 403, 503))
async def read_audit(
    voice: str | None = Query(None, pattern=VOICE_NAME_PATTERN),
    since: datetime | None = Query(None, description="From this time (ISO 8601; default: `until` less 7 days)"),
    until: datetime | None = Query(None, description="Up to, not including, this time (default: now)"),
    limit: int = Query(1000, ge=1, le=10000),
    s: Services = Depends(services),
) -> AuditPage:
    until = _utc(until) if until else datetime.now(timezone.utc) + timedelta(seconds=1)
    since = _utc(since) if since else until - DEFAULT_RANGE
    if since >= until or until - since > MAX_RANGE:
        raise BadRequest(f"since must be before until, at most {MAX_RANGE.days} days apart.", code="invalid_range",
                         param="since")
    await asyncio.to_thread(s.audit.flush)  # this replica's queued entries first: a caller reads its own
    entries, truncated = await asyncio.to_thread(s.audit_store.read, since, until, voice, limit)
    return AuditPage(entries=entries, truncated=truncated)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)

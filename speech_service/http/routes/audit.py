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
# A date that exists (no year 0, no 31 April, 29 February in leap years only), then an optional time:
# the schema admits exactly what the route accepts ([0-9], not \d: that also matches other scripts' digits).
_YEAR = r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_LEAP_YEAR = r"([0-9][0-9](0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
ISO_8601 = (rf"^({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
            r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
            r"(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?)?$")
DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=366)


@router.get("", response_model=AuditPage, dependencies=[Depends(require("admin"))],
            responses=errors_for(400, 403, 503))  # 400: a query that is no time, voice or limit
async def read_audit(
    voice: str | None = Query(None, pattern=VOICE_NAME_PATTERN),
    since: str | None = Query(None, pattern=ISO_8601, description="From this time (ISO 8601; default: `until` "
                                                                  "less 7 days; at most 366 days before `until`)"),
    until: str | None = Query(None, pattern=ISO_8601, description="Up to, not including, this time (default: now)"),
    limit: int = Query(1000, ge=1, le=10000),
    s: Services = Depends(services),
) -> AuditPage:
    # Each day of the range is one listing of the store: a range is at most MAX_RANGE long, and no
    # entry is newer than now (a day of clock skew allowed).
    now = datetime.now(timezone.utc)
    end = min(_time(until, "until") if until else now + timedelta(seconds=1), now + timedelta(days=1))
    start = max(_time(since, "since") if since else _before(end, DEFAULT_RANGE), _before(end, MAX_RANGE))
    await asyncio.to_thread(s.audit.flush)  # this replica's queued entries first: a caller reads its own
    if start >= end:
        return AuditPage(entries=[], truncated=False, since=start, until=end)
    entries, truncated = await asyncio.to_thread(s.audit.store.read, start, end, voice, limit)
    return AuditPage(entries=entries, truncated=truncated, since=start, until=end)


def _before(at: datetime, span: timedelta) -> datetime:
    earliest = datetime.min.replace(tzinfo=timezone.utc) + timedelta(days=1)
    return at - span if at - earliest > span else earliest


def _time(written: str, param: str) -> datetime:
    """An ISO 8601 date or time; one without a zone is UTC."""
    try:
        at = datetime.fromisoformat(written)
    except ValueError:
        raise BadRequest(f"{param} is no time: {written!r} (ISO 8601, e.g. 2026-12-01T09:30:00Z).",
                         code="invalid_time", param=param) from None
    if at.tzinfo is None:
        return at.replace(tzinfo=timezone.utc)
    try:
        return at.astimezone(timezone.utc)
    except OverflowError:  # a zone's offset past year 1 or 9999: the earliest or latest time there is
        edge = datetime.min if at.year == 1 else datetime.max
        return edge.replace(tzinfo=timezone.utc)

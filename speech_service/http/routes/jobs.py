"""`/v1/jobs`: asynchronous speech (docs/ARCHITECTURE.md, "Jobs"). A job belongs to the key that
made it: a `speak` key sees only its own, and another's is 404 to it; `admin` sees every job. A
key's queued and running jobs count against its `max_concurrent`."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Query, Response

from speech_service.audio import encoding
from speech_service.http.auth import Caller, require
from speech_service.http.openapi import errors_for
from speech_service.http.services import Services, services
from speech_service.provenance.credentials import EMBEDDED
from speech_service.schemas import Job, JobCaptions, JobList, SpeechRequest
from speech_service.service import marking
from speech_service.text import captions

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
speaker = require("speak")


def _owner(caller: Caller) -> str | None:
    """The jobs a caller may see: None for all of them."""
    return None if caller.sees_all_jobs else caller.name


def _max_jobs(s: Services, caller: Caller) -> int | None:
    """The most jobs the caller's key may have queued or running at once (its `max_concurrent`)."""
    return next((key.max_concurrent for key in s.keys.keys if key.name == caller.name), None)


@router.post("", status_code=202, response_model=Job,
             responses=errors_for(400, 403, 404, 409, 413, 422, 429, 503))
async def create_job(body: SpeechRequest, response: Response, caller: Caller = Depends(speaker),
                     s: Services = Depends(services)) -> Job:
    record = await s.runner.submit(body, owner=caller.name, max_active=_max_jobs(s, caller))
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return record.view()


@router.get("", response_model=JobList, responses=errors_for(403, 422, 503))
async def list_jobs(limit: int = Query(20, ge=1, le=100),
                    after: str | None = Query(None, description="last_id of the previous page"),
                    caller: Caller = Depends(speaker), s: Services = Depends(services)) -> JobList:
    records, has_more = await asyncio.to_thread(s.jobs.list, limit, after, _owner(caller))
    data = [r.view() for r in records]
    return JobList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                   has_more=has_more)


@router.get("/{job_id}", response_model=Job, responses=errors_for(403, 404, 503))
async def get_job(job_id: str, caller: Caller = Depends(speaker), s: Services = Depends(services)) -> Job:
    return (await asyncio.to_thread(s.jobs.get, job_id, _owner(caller))).view()


_AUDIO = {media: {"schema": {"type": "string", "format": "binary"}} for media, _ in encoding.FORMATS.values()}


@router.get("/{job_id}/audio", response_class=Response, responses={
    200: {"content": _AUDIO, "description": "The job's speech, in the format it asked for, with its "
                                            "Content Credentials inside (wav, mp3, flac) or at "
                                            "`X-Content-Credentials`",
          "headers": {"X-Content-Credentials": {"schema": {"type": "string"},
                                                "description": "opus, aac, pcm: `/v1/provenance/{job id}`"}}},
    **errors_for(403, 404, 409, 503)})
async def get_job_audio(job_id: str, caller: Caller = Depends(speaker), s: Services = Depends(services)) -> Response:
    record, data = await asyncio.to_thread(s.jobs.result, job_id, _owner(caller))
    fmt = record.request.response_format
    headers = {} if fmt in EMBEDDED else marking.sidecar_headers(record.id)  # the runner kept it there
    return Response(data, media_type=encoding.FORMATS[fmt][0], headers=headers)


@router.get("/{job_id}/captions", response_model=JobCaptions, responses={
    200: {"content": {media.split(";")[0]: {"schema": {"type": "string"}} for media, _ in captions.FORMATS.values()},
          "description": "The job's words and their times: JSON, or WebVTT / SRT with one cue per word"},
    **errors_for(403, 404, 409, 422, 503)})
async def get_job_captions(job_id: str, format: Literal["json", "vtt", "srt"] = "json",
                           caller: Caller = Depends(speaker), s: Services = Depends(services)):
    words = await asyncio.to_thread(s.jobs.captions, job_id, _owner(caller))
    if format == "json":
        return JobCaptions(job_id=job_id, words=words)
    media_type, render = captions.FORMATS[format]
    return Response(render(words), media_type=media_type)


@router.delete("/{job_id}", response_model=Job,
               responses={204: {"description": "removed"}, **errors_for(403, 404, 503)})
async def delete_job(job_id: str, caller: Caller = Depends(speaker), s: Services = Depends(services)):
    cancelled = await asyncio.to_thread(s.jobs.cancel_or_remove, job_id, _owner(caller))
    return cancelled.view() if cancelled else Response(status_code=204)

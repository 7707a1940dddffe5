"""`/v1/voices/{name}/consent`: a voice's consent, attested or spoken (a challenge phrase read by
its speaker and heard by the Transcriber). Writing and reading it are `admin`'s."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi import Path as PathParam

from speech_service.errors import NotFound
from speech_service.http.auth import Caller, require
from speech_service.http.openapi import MODEL_ERRORS, errors_for
from speech_service.http.services import Services, read_upload, services
from speech_service.schemas import VOICE_NAME_PATTERN, ConsentList
from speech_service.storage.consent import Challenge, ConsentRecord

router = APIRouter(prefix="/v1/voices/{name}/consent", tags=["consent"])
VoiceName = PathParam(pattern=VOICE_NAME_PATTERN, description="A voice name: 1-64 letters, digits, '_' or '-'")


@router.post("/challenge", status_code=201, response_model=Challenge, dependencies=[Depends(require("admin"))],
             responses=errors_for(400, 403, 404, 503))
async def new_challenge(name: str = VoiceName, s: Services = Depends(services)) -> Challenge:
    """A random phrase for the voice's speaker to read aloud; answer it once with `POST .../consent`
    (`method=spoken`, `challenge_id`, the recording as `file`) before it expires. The first answer
    uses it up, heard or not: no other answer is taken (`409 challenge_used`)."""
    return await asyncio.to_thread(s.consent.challenge, name)


@router.post("", status_code=201, response_model=ConsentRecord, responses=errors_for(
    400, 403, 404, 409, 413, 422, *MODEL_ERRORS))
async def give_consent(
    name: str = VoiceName,
    method: Literal["attested", "spoken"] = Form(...),
    given_by: str = Form(..., description="Who consents: the person whose voice it is"),
    statement: str | None = Form(None, description="What they consent to; a default statement when unset"),
    challenge_id: str | None = Form(None),
    file: UploadFile | None = File(None, description="spoken: the recording of the challenge phrase"),
    caller: Caller = Depends(require("admin")),
    s: Services = Depends(services),
) -> ConsentRecord:
    recording = await read_upload(file, s.settings.limits.max_upload_bytes) if file is not None else None
    return await s.consent.give(name, s.backends.transcribe, method=method, given_by=given_by, statement=statement,
                                challenge_id=challenge_id or None, recording=recording, key=caller.name)


@router.get("", response_model=ConsentList, dependencies=[Depends(require("admin"))],
            responses=errors_for(400, 403, 404, 503))
async def read_consent(name: str = VoiceName, s: Services = Depends(services)) -> ConsentList:
    """Every consent recorded for the voice name (redacted to hashes once the voice was deleted)."""
    records = await asyncio.to_thread(s.consent.consents.of_voice, name)
    try:
        voice = await asyncio.to_thread(s.store.get, name)
    except NotFound:  # deleted: its records, redacted, are all there is
        if not records:
            raise
        voice = None
    return ConsentList(current=voice.consent.id if voice and voice.consent else None, records=records)

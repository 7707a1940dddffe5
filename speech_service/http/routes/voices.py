"""`/v1/voices`: create (clip, then transcribe once), read, correct, delete; a voice's takes
(`/v1/voices/{name}/styles`), each transcribed once too. Writing is `admin`'s.

A voice's answers carry its `ETag` (the version of its clips, transcripts, model and lexicons); a
replace, PATCH, DELETE or a take's write sent with `If-Match` happens only to a version it names,
else 412 `precondition_failed`."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import APIRouter, Depends, File, Form, Header, Response, UploadFile
from fastapi import Path as PathParam

from speech_service.http.auth import require
from speech_service.http.openapi import MODEL_ERRORS, errors_for
from speech_service.http.services import Services, read_upload, services
from speech_service.schemas import LANGUAGE_PATTERN, VOICE_NAME_PATTERN, VoiceCreated, VoiceList, VoicePatch
from speech_service.service import voices as voice_service
from speech_service.service.voices import register_voice
from speech_service.storage.voice_record import STYLE_RE
from speech_service.storage.voices import ANY_VERSION, VoiceRecord, version

router = APIRouter(prefix="/v1/voices", tags=["voices"])
VoiceName = PathParam(pattern=VOICE_NAME_PATTERN, description="A voice name: 1-64 letters, digits, '_' or '-'")
StyleName = PathParam(pattern=STYLE_RE.pattern, description="A style (take) name: 1-32 letters, digits, '_' or '-'")
WAV = {200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
             "description": "The clip, 24 kHz mono WAV"}}
Record = TypeVar("Record", bound=VoiceRecord)
ADMIN = [Depends(require("admin"))]
SPEAK = [Depends(require("speak"))]


# The version a voice's answer carries, as the OpenAPI document shows it.
ETAG = {"headers": {"ETag": {"description": "The voice's version (clip, transcript, model), for If-Match",
                             "schema": {"type": "string"}}}}


IF_MATCH = Header(None, description="Only if the voice is at one of these versions (its ETag; `*`: any); else 412")


async def expected_versions(if_match: str | None = IF_MATCH) -> frozenset[str] | None:
    """The entity-tags an `If-Match` names; a bare tag is taken as the quoted one it stands for."""
    if if_match is None:
        return None
    tags = [tag.strip() for tag in if_match.split(",") if tag.strip()]
    return frozenset(tag if tag == ANY_VERSION or tag.startswith(('"', "W/")) else f'"{tag}"' for tag in tags)


def tagged(record: Record, response: Response) -> Record:
    response.headers["ETag"] = version(record)
    return record


@router.post("", status_code=201, response_model=VoiceCreated, dependencies=ADMIN,
             responses={201: ETAG, **errors_for(400, 403, 409, 412, 413, 422, *MODEL_ERRORS)})
async def create_voice(
    response: Response,
    name: str = Form(..., pattern=VOICE_NAME_PATTERN),
    file: UploadFile = File(...),
    ref_text: str | None = Form(None),
    language: str | None = Form(None, pattern=LANGUAGE_PATTERN),
    overwrite: bool = Form(False),
    model: str | None = Form(None, description="the model it is spoken with when a request names none"),
    expected: frozenset[str] | None = Depends(expected_versions),
    s: Services = Depends(services),
) -> VoiceCreated:
    limits = s.settings.limits
    data = await read_upload(file, limits.max_upload_bytes)
    created = await register_voice(s.store, s.backends.transcribe, limits, name=name, data=data, ref_text=ref_text,
                                   language=language or None, overwrite=overwrite,
                                   model=s.models.canonical(model) if model else None, if_match=expected)
    return tagged(created, response)


@router.get("", response_model=VoiceList, dependencies=SPEAK, responses=errors_for(403, 503))
async def list_voices(s: Services = Depends(services)) -> VoiceList:
    return VoiceList(voices=await asyncio.to_thread(s.store.list))


@router.get("/{name}", response_model=VoiceRecord, dependencies=SPEAK,
            responses={200: ETAG, **errors_for(400, 403, 404, 503)})
async def get_voice(response: Response, name: str = VoiceName, s: Services = Depends(services)) -> VoiceRecord:
    return tagged(await asyncio.to_thread(s.store.get, name), response)


@router.get("/{name}/audio", response_class=Response, dependencies=ADMIN,
            responses={**WAV, **errors_for(400, 403, 404, 409, 503)})
async def get_voice_audio(name: str = VoiceName, s: Services = Depends(services)) -> Response:
    _, wav = await asyncio.to_thread(s.store.reference, name)
    return Response(wav, media_type="audio/wav")


@router.patch("/{name}", response_model=VoiceRecord, dependencies=ADMIN,
              responses={200: ETAG, **errors_for(400, 403, 404, 409, 412, 422, 503)})
async def patch_voice(patch: VoicePatch, response: Response, name: str = VoiceName,
                      expected: frozenset[str] | None = Depends(expected_versions),
                      s: Services = Depends(services)) -> VoiceRecord:
    patched = await asyncio.to_thread(voice_service.patch_voice, s.store, s.settings.limits, name, patch, s.models,
                                      expected)
    return tagged(patched, response)


@router.delete("/{name}", status_code=204, response_class=Response, dependencies=ADMIN,
               responses=errors_for(400, 403, 404, 409, 412, 503))
async def delete_voice(name: str = VoiceName, expected: frozenset[str] | None = Depends(expected_versions),
                       s: Services = Depends(services)) -> Response:
    """The clip, the transcript and the jobs made with the voice; its consent records keep only hashes."""
    await asyncio.to_thread(voice_service.delete_voice, s.store, s.jobs, s.consent.consents, name, expected)
    return Response(status_code=204)


@router.post("/{name}/styles", status_code=201, response_model=VoiceCreated, dependencies=ADMIN,
             responses={201: ETAG, **errors_for(400, 403, 404, 409, 412, 413, 422, *MODEL_ERRORS)})
async def add_style(
    response: Response,
    name: str = VoiceName,
    style: str = Form(..., pattern=STYLE_RE.pattern, description="the take's name, e.g. whisper"),
    file: UploadFile = File(...),
    ref_text: str | None = Form(None),
    language: str | None = Form(None, pattern=LANGUAGE_PATTERN, description="default: the voice's"),
    overwrite: bool = Form(False),
    expected: frozenset[str] | None = Depends(expected_versions),
    s: Services = Depends(services),
) -> VoiceCreated:
    """Another take of the voice, spoken with when a request names its style: the clip prepared and
    transcribed once, as a voice's own. The voice is written without consent (given for its clips)."""
    limits = s.settings.limits
    data = await read_upload(file, limits.max_upload_bytes)
    created = await voice_service.add_style(s.store, s.backends.transcribe, limits, name=name, style=style, data=data,
                                            ref_text=ref_text, language=language or None, overwrite=overwrite,
                                            if_match=expected)
    return tagged(created, response)


@router.delete("/{name}/styles/{style}", status_code=204, response_class=Response, dependencies=ADMIN,
               responses=errors_for(400, 403, 404, 409, 412, 503))
async def delete_style(name: str = VoiceName, style: str = StyleName,
                       expected: frozenset[str] | None = Depends(expected_versions),
                       s: Services = Depends(services)) -> Response:
    """The take and its clip; the voice's own clip (the default style) goes only with the voice."""
    await asyncio.to_thread(s.store.delete_take, name, style, if_match=expected)
    return Response(status_code=204)


@router.get("/{name}/styles/{style}/audio", response_class=Response, dependencies=ADMIN,
            responses={**WAV, **errors_for(400, 403, 404, 409, 503)})
async def get_style_audio(name: str = VoiceName, style: str = StyleName, s: Services = Depends(services)) -> Response:
    """The take's clip ('default': the voice's own)."""
    return Response(await asyncio.to_thread(s.store.take_clip, name, style), media_type="audio/wav")

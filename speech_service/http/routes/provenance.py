"""`/v1/provenance`: the sidecar manifests of streams and of opus, aac and pcm files, and
verification of any file's Content Credentials (docs/ARCHITECTURE.md, "Provenance")."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, File, Response, UploadFile
from fastapi import Path as PathParam
from starlette.convertors import Convertor, register_url_convertor

from speech_service.audio.uploads import sniff_container
from speech_service.http.auth import Caller, authenticated
from speech_service.http.openapi import errors_for
from speech_service.http.services import Services, read_upload, services
from speech_service.provenance.credentials import EMBEDDED, SIDECAR_MEDIA_TYPE, ContentCredentials, Verification
from speech_service.schemas import ProvenanceVerification, SpeechProvenance
from speech_service.storage.provenance import SIDECAR_ID


class SidecarId(Convertor):
    """A sidecar's id, never `verify`: so `/v1/provenance/verify` is only the POST route, and
    other methods on it are 405 with `Allow: POST`, as the contract says."""

    regex = SIDECAR_ID

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("sidecar_id", SidecarId())
router = APIRouter(prefix="/v1/provenance", tags=["provenance"])


@router.get("/{sidecar_id:sidecar_id}", response_class=Response, responses={
    200: {"content": {SIDECAR_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
          "description": "The C2PA manifest store bound to the bytes of that response or job"},
    **errors_for(404, 503)})
async def get_sidecar(sidecar_id: str = PathParam(description="the id in `X-Content-Credentials`"),
                      caller: Caller = Depends(authenticated), s: Services = Depends(services)) -> Response:
    """Readable by the key that made the speech and by admin keys; to any other key it is a 404, as
    if it were never made."""
    manifest = await s.speech.marker.sidecar(sidecar_id, owner=None if caller.can("admin") else caller.name)
    return Response(manifest, media_type=SIDECAR_MEDIA_TYPE)


@router.post("/verify", response_model=ProvenanceVerification, responses=errors_for(400, 413))
async def verify(file: UploadFile = File(..., description="The audio file as received"),
                 manifest: UploadFile | None = File(None, description="Its sidecar manifest (`application/c2pa`), "
                                                                      "when the file carries none inside"),
                 s: Services = Depends(services)) -> ProvenanceVerification:
    limit = s.settings.limits.max_upload_bytes
    data = await read_upload(file, limit)
    sidecar = await read_upload(manifest, limit, "manifest") if manifest is not None else None
    media_type, verified = await asyncio.to_thread(_inspect, s.speech.marker.credentials, data, sidecar)
    if verified is None:
        inside = "carries none inside" if media_type else "is not wav, mp3 or flac, the formats that carry them inside"
        return ProvenanceVerification(found=False, message=(
            f"No Content Credentials: the file {inside}. Streams and opus, aac or pcm files have a sidecar "
            "manifest (the response's X-Content-Credentials): send it as `manifest`."))
    return ProvenanceVerification(
        found=True, validation_state=verified.state, embedded=verified.embedded, failures=verified.failures,
        speech=SpeechProvenance(**verified.speech) if verified.speech else None, manifest=verified.manifest)


def _inspect(credentials: ContentCredentials, data: bytes,
             sidecar: bytes | None) -> tuple[str | None, Verification | None]:
    """The file's media type, when it can carry credentials inside, and what they say. Every parse
    of the uploaded bytes is here, in one worker thread, off the event loop."""
    media_type = EMBEDDED.get(sniff_container(data) or "")
    return media_type, credentials.verify(data, sidecar, media_type)

"""Content Credentials on the speech a request or job returns: embedded in whole wav, mp3 and flac
files, a stored sidecar for the rest and for streams (`provenance.credentials`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from speech_service.provenance.credentials import EMBEDDED, ContentCredentials, SpeechFacts
from speech_service.references import Reference
from speech_service.schemas import SpeechRequest
from speech_service.service.audit import AuditLog
from speech_service.storage.provenance import ProvenanceStore
from speech_service.storage.voices import sha256

logger = logging.getLogger(__name__)
SIDECAR_HEADER = "X-Content-Credentials"


@dataclass(frozen=True)
class Marked:
    data: bytes
    sidecar_id: str | None  # where its detached manifest is kept; None when it is inside `data`


def sidecar_headers(sidecar_id: str) -> dict[str, str]:
    """The sidecar's address, in a header of ours and as C2PA's `Link` to a remote manifest."""
    url = f"/v1/provenance/{sidecar_id}"
    return {SIDECAR_HEADER: url, "Link": f'<{url}>; rel="c2pa-manifest"'}


def facts(body: SpeechRequest, reference: Reference, request_id: str, key: str | None) -> SpeechFacts:
    return SpeechFacts(voice=body.voice, text_sha256=sha256(body.input.encode()), request_id=request_id, key=key,
                       model=body.model, consent_id=reference.consent_id)


class SpeechMarker:
    def __init__(self, credentials: ContentCredentials, sidecars: ProvenanceStore, audit: AuditLog):
        self.credentials, self.sidecars, self.audit = credentials, sidecars, audit

    def whole(self, data: bytes, fmt: str, facts: SpeechFacts, sidecar_id: str | None = None) -> Marked:
        """Blocking (1-10 ms of signing, a store write for a sidecar): call in a thread. A sidecar
        goes under `sidecar_id` when given (a job's id: its own, replacing an earlier attempt's)."""
        if fmt in EMBEDDED:
            return Marked(self.credentials.embed(data, fmt, facts), None)
        manifest = self.credentials.sidecar(data, facts)
        if sidecar_id is None:
            sidecar_id = self.sidecars.new_id(facts.request_id)
        else:
            self.sidecars.remove(sidecar_id)
        self.sidecars.put(sidecar_id, manifest)
        return Marked(data, sidecar_id)

    async def stream(self, chunks: AsyncIterator[bytes], facts: SpeechFacts,
                     fmt: str) -> tuple[AsyncIterator[bytes], str]:
        """`chunks` as they come, and the id their sidecar will have: it is signed over every byte
        and stored after the last chunk, before the response ends. The stream's audit entry is
        queued when it ends (marked incomplete when it broke off or its client left)."""
        sidecar_id = await asyncio.to_thread(self.sidecars.new_id, facts.request_id)
        return self._signed_after(chunks, facts, fmt, sidecar_id), sidecar_id

    async def _signed_after(self, chunks: AsyncIterator[bytes], facts: SpeechFacts, fmt: str,
                            sidecar_id: str) -> AsyncIterator[bytes]:
        sent, digest = bytearray(), hashlib.sha256()  # hashed as it passes: no pause at the end
        complete = False
        try:
            async for chunk in chunks:
                sent += chunk
                digest.update(chunk)
                yield chunk
            complete = True
        finally:
            self.audit.record(facts, "stream", fmt, digest.hexdigest(), complete)
        try:
            manifest = await asyncio.to_thread(self.credentials.sidecar, bytes(sent), facts)
            await asyncio.to_thread(self.sidecars.put, sidecar_id, manifest)
        except Exception:  # the audio is out; a missing sidecar reads as 404 provenance_not_found
            logger.exception("the sidecar manifest %s of a stream could not be kept", sidecar_id)

"""Content Credentials on the speech a request or job returns: embedded in whole wav, mp3 and flac
files, a stored sidecar for the rest and for streams (`provenance.credentials`).

A response's sidecar is signed and stored after the response has gone (it needs none of the
response's time); until it lands, `sidecar` waits for it: here for this replica's own, and by
asking the store again for a while for one another Ingress replica is storing."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

from speech_service.errors import NotFound
from speech_service.provenance.credentials import EMBEDDED, ContentCredentials, SpeechFacts
from speech_service.schemas import SpeechRequest
from speech_service.service.audit import AuditLog
from speech_service.storage.provenance import ProvenanceStore
from speech_service.storage.voices import sha256
from speech_service.text.script import Script

logger = logging.getLogger(__name__)
SIDECAR_HEADER = "X-Content-Credentials"
# A whole response up to this size (30 s of 16-bit speech) is hashed for its audit entry on the
# event loop (under 1 ms), cheaper than the hop to a thread.
_INLINE_HASH_BYTES = 1_500_000


@dataclass(frozen=True)
class Marked:
    data: bytes
    sidecar_id: str | None  # where its detached manifest is kept; None when it is inside `data`


def sidecar_headers(sidecar_id: str) -> dict[str, str]:
    """The sidecar's address, in a header of ours and as C2PA's `Link` to a remote manifest."""
    url = f"/v1/provenance/{sidecar_id}"
    return {SIDECAR_HEADER: url, "Link": f'<{url}>; rel="c2pa-manifest"'}


def facts(body: SpeechRequest, script: Script, request_id: str, key: str | None) -> SpeechFacts:
    """What the speech's credentials and audit entry say of it; `speakers` when other voices or takes
    than the voice's own clip spoke."""
    speakers = tuple(f"{r.voice}:{r.style}" if r.style else r.voice for r in script.references)
    directed = len(speakers) > 1 or script.references[0].style is not None
    return SpeechFacts(voice=body.voice, text_sha256=sha256(body.input.encode()), request_id=request_id, key=key,
                       model=body.model, consent_id=script.references[0].consent_id,
                       speakers=speakers if directed else ())


class SpeechMarker:
    def __init__(self, credentials: ContentCredentials, sidecars: ProvenanceStore, audit: AuditLog,
                 landing_wait_s: float = 2.0):
        self.credentials, self.sidecars, self.audit = credentials, sidecars, audit
        self.landing_wait_s = landing_wait_s  # how long `sidecar` waits for one still being stored
        # This replica's sidecars named in a response and not yet stored: done when stored or given up.
        self._landing: dict[str, asyncio.Future[None]] = {}
        self._keeping: set[asyncio.Task[None]] = set()

    def whole(self, data: bytes, fmt: str, facts: SpeechFacts, sidecar_id: str) -> Marked:
        """A job's speech, its sidecar stored before this returns, under `sidecar_id` (the job's
        own, replacing an earlier attempt's). Blocking: call in a thread."""
        if fmt in EMBEDDED:
            return Marked(self.credentials.embed(data, fmt, facts), None)
        manifest = self.credentials.sidecar(data, facts)
        self.sidecars.remove(sidecar_id)
        self.sidecars.put(sidecar_id, manifest, facts.key)
        return Marked(data, sidecar_id)

    def reserve(self, request_id: str, fmt: str | None = None) -> asyncio.Future[str] | None:
        """Start reserving the id a sidecar of `request_id` will have (`_reserve`: a claim in the store),
        while the speech is made; None for a whole response in `fmt` that carries its credentials
        inside (`fmt` None: a stream, which always has a sidecar). `response` or `stream` takes the
        reservation; a request that fails before either gives it back (`give_back`)."""
        if fmt in EMBEDDED:
            return None
        reserved = asyncio.ensure_future(self._reserve(request_id))
        reserved.add_done_callback(_retrieved)
        return reserved

    def give_back(self, reserved: asyncio.Future[str] | None) -> asyncio.Task[None]:
        """A request that failed before `response` or `stream` took its reservation: its id is
        released and its claim freed. The caller awaits it (shielded) before it answers, so a retry
        with the same X-Request-ID finds the id free, on any replica."""
        return self._background(self._give_back(reserved))

    async def _give_back(self, reserved: asyncio.Future[str] | None) -> None:
        if reserved is None:
            return
        await asyncio.wait({reserved})
        if not reserved.cancelled() and reserved.exception() is None:  # else nothing is held
            await self._free(reserved.result())

    async def response(self, data: bytes, fmt: str, facts: SpeechFacts,
                       reserved: Awaitable[str] | None = None) -> Marked:
        """A whole response: signed inside (wav, mp3, flac), or named a sidecar (the id `reserved`,
        or one reserved now) that is signed and stored once the response is out. Its audit entry is
        queued before this returns."""
        if fmt in EMBEDDED:
            marked, digest = await asyncio.to_thread(self._embedded, data, fmt, facts)
            self.audit.record(facts, "speech", fmt, digest)
            return Marked(marked, None)
        sidecar_id = await (reserved or self._reserve(facts.request_id))
        digest = sha256(data) if len(data) <= _INLINE_HASH_BYTES else await asyncio.to_thread(sha256, data)
        self.audit.record(facts, "speech", fmt, digest)
        self._land(sidecar_id, data, facts)
        return Marked(data, sidecar_id)

    async def stream(self, chunks: AsyncIterator[bytes], facts: SpeechFacts, fmt: str,
                     reserved: Awaitable[str] | None = None) -> tuple[AsyncIterator[bytes], str]:
        """`chunks` as they come, and the id their sidecar will have (`reserved`, or reserved now):
        it is signed over every byte once the last has gone. The stream's audit entry is queued
        when it ends (marked incomplete when it broke off or its client left)."""
        sidecar_id = await (reserved or self._reserve(facts.request_id))
        return self._signed_after(chunks, facts, fmt, sidecar_id), sidecar_id

    async def sidecar(self, sidecar_id: str, owner: str | None = None) -> bytes:
        """The sidecar kept under `sidecar_id`, with `owner` only one that key made (`ProvenanceStore.get`).
        One still landing is waited for, up to `landing_wait_s`: this replica's own until it is stored,
        any other by asking again."""
        deadline = time.monotonic() + self.landing_wait_s
        if (landing := self._landing.get(sidecar_id)) is not None:
            await asyncio.wait({landing}, timeout=self.landing_wait_s)
        pause = 0.05
        while True:
            try:
                return await asyncio.to_thread(self.sidecars.get, sidecar_id, owner)
            except NotFound:
                if time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause *= 2

    async def drain(self) -> None:
        """Wait for every sidecar still being signed or stored (before the replica goes)."""
        if self._keeping:
            await asyncio.wait(set(self._keeping), timeout=30)

    def _embedded(self, data: bytes, fmt: str, facts: SpeechFacts) -> tuple[bytes, str]:
        marked = self.credentials.embed(data, fmt, facts)
        return marked, sha256(marked)

    async def _reserve(self, request_id: str) -> str:
        """The id `claim` gives `request_id` (a store write), held from now until its sidecar is
        stored or given up. An id this replica is still landing is not asked for."""
        if request_id in self._landing:
            sidecar_id = self.sidecars.random_id()
        else:
            sidecar_id = await asyncio.to_thread(self.sidecars.claim, request_id)
        self._landing[sidecar_id] = asyncio.get_running_loop().create_future()
        return sidecar_id

    async def _free(self, sidecar_id: str) -> None:
        """An id named to no sidecar after all: released here, and its claim freed."""
        self._release(sidecar_id)
        try:
            await asyncio.to_thread(self.sidecars.unclaim, sidecar_id)
        except Exception:  # the claim stays until the sweep: a retry with this id gets a random one
            logger.exception("the claim on sidecar id %s could not be freed", sidecar_id)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """`work` as a task that `drain` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._keeping.add(task)
        task.add_done_callback(self._keeping.discard)
        return task

    def _release(self, sidecar_id: str) -> None:
        landing = self._landing.pop(sidecar_id, None)
        if landing is not None and not landing.done():
            landing.set_result(None)

    def _land(self, sidecar_id: str, data: bytes, facts: SpeechFacts) -> None:
        """Sign and store `data`'s sidecar in the background."""
        self._background(self._keep(sidecar_id, data, facts))

    async def _keep(self, sidecar_id: str, data: bytes, facts: SpeechFacts) -> None:
        try:
            manifest = await asyncio.to_thread(self.credentials.sidecar, data, facts)
            await asyncio.to_thread(self.sidecars.put, sidecar_id, manifest, facts.key)
        except Exception:  # the audio is out; a missing sidecar reads as 404 provenance_not_found
            logger.exception("the sidecar manifest %s could not be kept", sidecar_id)
        finally:
            self._release(sidecar_id)

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
            if not complete:  # broke off: no sidecar for a prefix
                self._background(self._free(sidecar_id))
        self._land(sidecar_id, bytes(sent), facts)


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()

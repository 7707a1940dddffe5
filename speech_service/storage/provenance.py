"""Sidecar manifests (`GET /v1/provenance/{id}`), kept for `provenance.sidecar_ttl_s`.

    provenance/{id}/{expires_at}.c2pa      one per id; the expiry (unix seconds) in the key, so a
                                           read or the sweep knows it without reading the manifest
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

from speech_service.errors import NotFound
from speech_service.storage.objects import ObjectStore

PREFIX = "provenance/"
SIDECAR_ID = r"(?!verify$)[A-Za-z0-9_-]{1,128}"  # key-safe; never `verify`, the route beside them
_ID = re.compile(SIDECAR_ID)
SWEEP_EVERY_S = 3600.0  # a read already refuses an expired sidecar: the sweep only frees the space


class ProvenanceStore:
    def __init__(self, objects: ObjectStore, ttl_s: float, clock: Callable[[], float] = time.time):
        self.objects, self.ttl_s, self.clock = objects, ttl_s, clock
        self._next_sweep = 0.0

    def new_id(self, request_id: str) -> str:
        """The id a request's sidecar will be kept under: the request's own, unless it is not
        key-safe or already names a sidecar (a client may send any `X-Request-ID`, another's too)."""
        if _ID.fullmatch(request_id) and not self._keys(request_id):
            return request_id
        return self.random_id()

    @staticmethod
    def random_id() -> str:
        return f"prov_{secrets.token_hex(12)}"

    def put(self, sidecar_id: str, manifest: bytes) -> None:
        key = f"{PREFIX}{sidecar_id}/{int(self.clock() + self.ttl_s)}.c2pa"
        self.objects.put(key, manifest, if_none_match=True)

    def get(self, sidecar_id: str) -> bytes:
        keys = self._keys(sidecar_id) if _ID.fullmatch(sidecar_id) else []
        for key in keys:
            if self._expired(key):
                self.objects.delete(key)
                continue
            try:
                return self.objects.get(key).data
            except KeyError:
                continue
        raise NotFound(f"No Content Credentials are kept under '{sidecar_id}' (never made, or older than "
                       f"{self.ttl_s:g} s).", code="provenance_not_found", param="sidecar_id")

    def remove(self, sidecar_id: str) -> None:
        for key in self._keys(sidecar_id):
            self.objects.delete(key)

    def sweep(self) -> int:
        """Remove expired sidecars, at most once per SWEEP_EVERY_S (it lists them all); returns how many."""
        if self.clock() < self._next_sweep:
            return 0
        self._next_sweep = self.clock() + SWEEP_EVERY_S
        expired = [key for key in self.objects.list(PREFIX) if self._expired(key)]
        for key in expired:
            self.objects.delete(key)
        return len(expired)

    def _keys(self, sidecar_id: str) -> list[str]:
        return self.objects.list(f"{PREFIX}{sidecar_id}/")

    def _expired(self, key: str) -> bool:
        try:
            return int(key.rsplit("/", 1)[-1].removesuffix(".c2pa")) <= self.clock()
        except ValueError:
            return True

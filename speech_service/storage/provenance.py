"""Sidecar manifests (`GET /v1/provenance/{id}`), kept for `provenance.sidecar_ttl_s`.

    provenance/{id}/{expires_at}-{owner}.c2pa
                                           one per id; the expiry (unix seconds) and the name of the
                                           key that made it in the key, so a read or the sweep knows
                                           them without reading the manifest; `{expires_at}.c2pa`
                                           when no key made it (a service without keys)
    provenance/{id}/claim                  a request's own id, taken by a conditional write before
                                           its sidecar exists (its expiry inside): one writer per id
                                           across Ingress replicas
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

from speech_service.errors import NotFound
from speech_service.storage import job_record
from speech_service.storage.objects import ObjectStore, PreconditionFailed

PREFIX = "provenance/"
SIDECAR_ID = r"(?!verify$)[A-Za-z0-9_-]{1,128}"  # key-safe; never `verify`, the route beside them
_ID = re.compile(SIDECAR_ID)
SWEEP_EVERY_S = 3600.0  # a read already refuses an expired sidecar: the sweep only frees the space
RANDOM_PREFIX = "prov_"
MINTED = (RANDOM_PREFIX, job_record.ID_PREFIX)  # the service's own ids: never taken from a request
CLAIM = "claim"


class ProvenanceStore:
    def __init__(self, objects: ObjectStore, ttl_s: float, clock: Callable[[], float] = time.time):
        self.objects, self.ttl_s, self.clock = objects, ttl_s, clock
        self._next_sweep = 0.0

    def claim(self, request_id: str) -> str:
        """The id a request's sidecar will be kept under: the request's own when it is key-safe, not
        one the service mints, and free (a client may send any `X-Request-ID`, another's too), taken
        here by a conditional write that only one writer wins; else a fresh random one."""
        # The listing finds sidecars stored before claims existed, and spares a write when taken.
        if _ID.fullmatch(request_id) and not request_id.startswith(MINTED) and not self._keys(request_id):
            try:
                self.objects.put(self._claim_key(request_id), str(self._expiry()).encode(), if_none_match=True)
                return request_id
            except PreconditionFailed:
                pass
        return self.random_id()

    def unclaim(self, sidecar_id: str) -> None:
        """Free a claimed id whose sidecar will never be stored (its request failed)."""
        if not sidecar_id.startswith(MINTED):  # the service's own ids are never claimed
            self.objects.delete(self._claim_key(sidecar_id))

    @staticmethod
    def random_id() -> str:
        return f"{RANDOM_PREFIX}{secrets.token_hex(12)}"

    def put(self, sidecar_id: str, manifest: bytes, owner: str | None = None) -> None:
        """Keep `manifest` under `sidecar_id`, readable by `owner` (a key's name) and by admins."""
        name = str(self._expiry()) if owner is None else f"{self._expiry()}-{owner}"
        self.objects.put(f"{PREFIX}{sidecar_id}/{name}.c2pa", manifest, if_none_match=True)

    def get(self, sidecar_id: str, owner: str | None = None) -> bytes:
        """The manifest kept under `sidecar_id`; with `owner`, only one that key made (another's is
        as unknown as one never made, so ids cannot be probed). `owner` None: any (an admin's read)."""
        keys = self._keys(sidecar_id) if _ID.fullmatch(sidecar_id) else []
        for key in (k for k in keys if k.endswith(".c2pa")):
            if self._expired(key):
                self.objects.delete(key)
                continue
            if owner is not None and _name(key)[1] != owner:
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
        """Remove expired sidecars and claims, at most once per SWEEP_EVERY_S (it lists them all);
        returns how many keys went. A claim goes with its id's sidecars, or, when its request never
        stored one, once the expiry it holds has passed."""
        if self.clock() < self._next_sweep:
            return 0
        self._next_sweep = self.clock() + SWEEP_EVERY_S
        by_id: dict[str, list[str]] = {}
        for key in self.objects.list(PREFIX):
            by_id.setdefault(key[len(PREFIX):].rsplit("/", 1)[0], []).append(key)
        expired = []
        for keys in by_id.values():
            claims = [key for key in keys if key.endswith(f"/{CLAIM}")]
            sidecars = [key for key in keys if key not in claims]
            gone = [key for key in sidecars if self._expired(key)]
            if sidecars:  # a claim goes with the last of its id's sidecars
                claims_go = len(gone) == len(sidecars)
            else:  # a request that never stored one
                claims_go = bool(claims) and self._claim_expired(claims[0])
            expired += gone + (claims if claims_go else [])
        for key in expired:
            self.objects.delete(key)
        return len(expired)

    def _keys(self, sidecar_id: str) -> list[str]:
        return self.objects.list(f"{PREFIX}{sidecar_id}/")

    def _claim_key(self, sidecar_id: str) -> str:
        return f"{PREFIX}{sidecar_id}/{CLAIM}"

    def _expiry(self) -> int:
        return int(self.clock() + self.ttl_s)

    def _expired(self, key: str) -> bool:
        try:
            return int(_name(key)[0]) <= self.clock()
        except ValueError:
            return True

    def _claim_expired(self, key: str) -> bool:
        try:
            return int(self.objects.get(key).data) <= self.clock()
        except KeyError:  # gone meanwhile
            return False
        except ValueError:
            return True


def _name(key: str) -> tuple[str, str | None]:
    """A sidecar's key read back: its expiry (digits) and its owner, None when no key made it."""
    expiry, _, owner = key.rsplit("/", 1)[-1].removesuffix(".c2pa").partition("-")
    return expiry, owner or None

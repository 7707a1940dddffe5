"""API keys: who is calling (`Caller`), what they may do (scopes), and how much (per-key limits).

A key has a name, scopes and optional limits (`config.ApiKey`). `admin` may do everything: voices,
everyone's jobs, operator endpoints. `speak` may speak, list voices, and see and cancel its own jobs;
another key's job is 404 to it, as if it did not exist. A key in the config may be the key itself
or `sha256:<hex>` of it, so the config need hold no secret: a presented key is hashed and compared
in constant time. No keys configured: the service is open and every caller is admin.

Limits count per key in this Ingress replica (`KeyLimits`, ASGI middleware, so a streamed response
holds its slot until its last byte): `requests_per_minute` (a token bucket, bursts up to the rate)
and `max_concurrent`. Over either: 429 with `Retry-After` and the limit named.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from speech_service.config import ApiKey
from speech_service.errors import Forbidden, RateLimited, Unauthorized
from speech_service.http.errors import service_error_response

SCOPES = ("admin", "speak")


@dataclass(frozen=True)
class Caller:
    name: str | None  # the key's name; None when no keys are configured
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def sees_all_jobs(self) -> bool:
        return "admin" in self.scopes


OPEN = Caller(None, frozenset({"admin"}))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured keys, kept as sha256 digests."""

    def __init__(self, keys: list[ApiKey]):
        self.keys = keys
        self._digests = [(bytes.fromhex(k.key.removeprefix("sha256:")) if k.key.startswith("sha256:")
                          else _digest(k.key), k) for k in keys]

    @property
    def open(self) -> bool:
        return not self.keys

    def find(self, authorization: str | None) -> ApiKey | None:
        """The key an `Authorization: Bearer <key>` header presents, if it is one of ours."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        digest = _digest(presented.strip())
        found = None
        for known, key in self._digests:  # every digest compared: the time says nothing of which matched
            if hmac.compare_digest(known, digest):
                found = key
        return found

    def caller(self, key: ApiKey | None) -> Caller:
        """The caller presenting `key` (what `find` returned); 401 for no key of ours."""
        if self.open:
            return OPEN
        if key is None:
            raise Unauthorized("Send a valid API key as 'Authorization: Bearer <key>'.", code="invalid_api_key")
        return Caller(key.name, frozenset(key.scopes))


# Where `KeyLimits` leaves the key it found in the request's scope state, so it is hashed once.
_FOUND_KEY = "api_key"


# The dependencies are `async def` though they never await: FastAPI runs a plain `def` dependency
# in its thread pool, one hop per dependency and request.
async def authenticated(request: Request) -> Caller:
    """The caller of a `/v1` route (a FastAPI dependency); 401 without a valid key."""
    keys = request.app.state.services.keys
    state = request.scope.get("state", {})
    key = state[_FOUND_KEY] if _FOUND_KEY in state else keys.find(request.headers.get("authorization"))
    caller = keys.caller(key)
    request.state.caller = caller
    return caller


def require(scope: str) -> Callable[..., Caller]:
    """A dependency that lets only callers with `scope` (or admin) through: 403 naming it otherwise."""

    async def check(caller: Caller = Depends(authenticated)) -> Caller:
        if not caller.can(scope):
            raise Forbidden(f"The key '{caller.name}' may not do this: it needs the '{scope}' scope "
                            f"(it has {', '.join(sorted(caller.scopes)) or 'none'}).", code="insufficient_scope")
        return caller

    return check


@dataclass
class _Usage:
    tokens: float
    updated: float
    running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class KeyLimits:
    """Per-key request rate and concurrency for `/v1/*` (see the module's docstring). Requests
    without a known key pass through: the route answers them 401."""

    def __init__(self, app: ASGIApp, keys: KeyRing, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.keys = keys
        self.clock = clock
        self._usage: dict[str, _Usage] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or self.keys.open:
            return await self.app(scope, receive, send)
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        key = self.keys.find(authorization)
        scope.setdefault("state", {})[_FOUND_KEY] = key
        if key is None or (key.requests_per_minute is None and key.max_concurrent is None):
            return await self.app(scope, receive, send)
        refusal = self._admit(key)
        if refusal is not None:
            return await service_error_response(refusal)(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            usage = self._usage[key.name]
            with usage.lock:
                usage.running -= 1

    def _admit(self, key: ApiKey) -> RateLimited | None:
        now = self.clock()
        rate = key.requests_per_minute
        usage = self._usage.setdefault(key.name, _Usage(tokens=rate or 0.0, updated=now))
        with usage.lock:
            if rate is not None:
                usage.tokens = min(rate, usage.tokens + (now - usage.updated) * rate / 60)
                usage.updated = now
                if usage.tokens < 1:
                    wait = (1 - usage.tokens) * 60 / rate
                    return RateLimited(f"The key '{key.name}' is over its limit of {rate:g} requests per minute; "
                                       f"retry in {math.ceil(wait)} s.", code="rate_limit_exceeded",
                                       retry_after_s=max(1.0, math.ceil(wait)))
            if key.max_concurrent is not None and usage.running >= key.max_concurrent:
                return RateLimited(f"The key '{key.name}' has {usage.running} requests running, its limit of "
                                   f"concurrent requests ({key.max_concurrent}); retry when one has finished.",
                                   code="concurrency_limit_exceeded", retry_after_s=1.0)
            if rate is not None:
                usage.tokens -= 1
            usage.running += 1
        return None


"""API keys: who is calling (`Caller`), what they may do (scopes), and how much (per-key limits).

A key has a name, scopes and optional limits (`config.ApiKey`). `admin` may do everything: voices,
everyone's jobs, operator endpoints. `speak` may speak, list voices, and see and cancel its own jobs;
another key's job is 404 to it, as if it did not exist. A key in the config may be the key itself
or `sha256:<hex>` of it, so the config need hold no secret: a presented key is hashed and compared
in constant time. No keys configured: the service is open and every caller is admin.

`KeyGate` (ASGI middleware) checks the key from the headers before any route reads a body, and
counts limits per Ingress replica (a streamed response holds its slot until its last byte): a key's
`requests_per_minute` (a token bucket, bursts up to the rate) and `max_concurrent` (a key's queued
and running jobs count against it too, in the store: `storage/jobs.py`), and for callers without a
key a rate per client address. Over either: 429 with `Retry-After` and the limit named.
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
from speech_service.errors import Forbidden, RateLimited, ServiceError, Unauthorized
from speech_service.http.errors import refusal_before_the_body

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
            raise no_key()
        return Caller(key.name, frozenset(key.scopes))


def no_key() -> Unauthorized:
    return Unauthorized("Send a valid API key as 'Authorization: Bearer <key>' (or 'xi-api-key: <key>').",
                        code="invalid_api_key")


def presented(authorization: str | None, xi_api_key: str | None) -> str | None:
    """The `Authorization` a request presents its key with: its own, else ElevenLabs' clients'
    `xi-api-key` header as a bearer key."""
    return authorization or (f"Bearer {xi_api_key}" if xi_api_key else None)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def anonymous_admin_refusal(keys: KeyRing, host: str, allowed: bool) -> str | None:
    """Why a service listening on `host` must not start, or None. With no keys every caller is admin:
    fine on loopback (a demo on this machine), not on an address the network reaches, unless the
    operator said so (`allow_anonymous_admin`)."""
    if not keys.open or allowed or host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    return (f"The service listens on {host} with no api_keys: every caller on the network would be admin "
            "(create and delete voices, read transcripts and the audit). Set api_keys in the application's "
            "args, or listen on 127.0.0.1 (http_options.host), or set allow_anonymous_admin: true if that is "
            "what you mean.")


# Where `KeyGate` leaves the key it found in the request's scope state, so it is hashed once.
_FOUND_KEY = "api_key"


# The dependencies are `async def` though they never await: FastAPI runs a plain `def` dependency
# in its thread pool, one hop per dependency and request.
async def authenticated(request: Request) -> Caller:
    """The caller of a `/v1` route (a FastAPI dependency); 401 without a valid key."""
    keys = request.app.state.services.keys
    state = request.scope.get("state", {})
    key = state[_FOUND_KEY] if _FOUND_KEY in state else keys.find(
        presented(request.headers.get("authorization"), request.headers.get("xi-api-key")))
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


class KeyGate:
    """Who may reach `/v1/*`, checked on the headers alone, before any route reads a body: a request
    with a missing or wrong key is 401 here (a caller with no key cannot make the service read a
    50 MB body first), except the paths `public` opens. Then the limits (see the module's
    docstring): a key's own, or for callers without one (the public paths, refusals)
    `anonymous_per_minute` per client address, which also bounds guessing keys."""

    MAX_ADDRESSES = 4096  # anonymous buckets kept; past it the older idle ones are dropped

    def __init__(self, app: ASGIApp, keys: KeyRing, anonymous_per_minute: float, public: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.keys = keys
        self.public = public
        self.anonymous_per_minute = anonymous_per_minute
        self.clock = clock
        self._usage: dict[str, _Usage] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Open mode (no keys) has no limits: loopback, or an operator who said so (see
        # `anonymous_admin_refusal`); keys are how a service gets them.
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or self.keys.open:
            return await self.app(scope, receive, send)
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in (b"authorization", b"xi-api-key")}
        key = self.keys.find(presented(headers.get(b"authorization"), headers.get(b"xi-api-key")))
        scope.setdefault("state", {})[_FOUND_KEY] = key
        refusal: ServiceError | None
        if key is None:
            address = (scope.get("client") or ("unknown",))[0]
            refusal = self._admit(f"address {address}", self.anonymous_per_minute, None,
                                  f"Callers without a key from {address} are")
            if refusal is None and scope["path"] not in self.public:
                refusal = no_key()
                self._release(f"address {address}")
        elif key.requests_per_minute is None and key.max_concurrent is None:
            return await self.app(scope, receive, send)
        else:
            refusal = self._admit(f"key {key.name}", key.requests_per_minute, key.max_concurrent,
                                  f"The key '{key.name}' is")
        if refusal is not None:
            return await refusal_before_the_body(scope, refusal)(scope, receive, send)
        who = f"address {address}" if key is None else f"key {key.name}"
        try:
            await self.app(scope, receive, send)
        finally:
            self._release(who)

    def _release(self, who: str) -> None:
        usage = self._usage[who]
        with usage.lock:
            usage.running -= 1

    def _admit(self, who: str, rate: float | None, max_concurrent: int | None, subject: str) -> ServiceError | None:
        now = self.clock()
        # A bucket holds at least one request: a rate under one a minute still lets one through.
        capacity = max(rate or 0.0, 1.0)
        if who not in self._usage and len(self._usage) >= self.MAX_ADDRESSES:
            self._forget_oldest()
        usage = self._usage.setdefault(who, _Usage(tokens=capacity, updated=now))
        with usage.lock:
            if rate is not None:
                usage.tokens = min(capacity, usage.tokens + (now - usage.updated) * rate / 60)
                usage.updated = now
                if usage.tokens < 1:
                    wait = (1 - usage.tokens) * 60 / rate
                    return RateLimited(f"{subject} over the limit of {rate:g} requests per minute; "
                                       f"retry in {math.ceil(wait)} s.", code="rate_limit_exceeded",
                                       retry_after_s=max(1.0, math.ceil(wait)))
            if max_concurrent is not None and usage.running >= max_concurrent:
                return RateLimited(f"{subject} running {usage.running} requests, the limit of concurrent "
                                   f"requests ({max_concurrent}); retry when one has finished.",
                                   code="concurrency_limit_exceeded", retry_after_s=1.0)
            if rate is not None:
                usage.tokens -= 1
            usage.running += 1
        return None

    def _forget_oldest(self) -> None:
        """Drops the older half of the idle anonymous buckets (bounded memory; a new address starts
        full, as the address it pushed out would have)."""
        idle = sorted((usage.updated, who) for who, usage in self._usage.items()
                      if who.startswith("address ") and not usage.running)
        for _, who in idle[:len(idle) // 2 + 1]:
            del self._usage[who]

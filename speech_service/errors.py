"""Typed errors. The class decides the HTTP status, OpenAI's error `type` and a machine-readable
`code` (mapped to HTTP once, in api.py); `param` names the request field at fault, if there is one."""

from __future__ import annotations

# OpenAI's error `type` by HTTP status, for classes that do not name their own.
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error",
          503: "service_unavailable", 504: "timeout_error"}


def error_type_for(status: int) -> str:
    default = "invalid_request_error" if status < 500 else "server_error"
    return _TYPES.get(status, default)


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"
    error_type: str | None = None  # None: derived from the status (see `type`)

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code:
            self.code = code
        self.retry_after_s = retry_after_s

    @property
    def type(self) -> str:
        return self.error_type or error_type_for(self.status_code)

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries (`Retry-After` in whole seconds, for 503s that pass)."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """A valid key without the scope the route needs."""

    status_code = 403
    code = "forbidden"


class RateLimited(ServiceError):
    """A key over its request rate or concurrency (`Retry-After` says when to come back)."""

    status_code = 429
    code = "rate_limited"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServiceError):
    status_code = 405
    code = "method_not_allowed"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class VersionMismatch(ServiceError):
    """An `If-Match` naming no current version of the resource: it changed since the caller read it."""

    status_code = 412
    code = "precondition_failed"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(ServiceError):
    status_code = 422
    code = "unprocessable"


class QualityCheckFailed(Unprocessable):
    """A segment failed the quality check on every attempt, and the request required it to pass."""

    code = "quality_check_failed"


class ModelUnavailable(ServiceError):
    """The model weights could not be loaded; the message says how to provide them."""

    status_code = 503
    code = "model_unavailable"


def refusal(exc: ServiceError) -> ServiceError:
    """`exc` to return from a replica as its answer, when it refuses the request rather than fails.

    A replica that raises makes Serve log "Request failed" with the traceback and count an error,
    which a clip-cache miss (`ReferenceMissing`, routine) or a request's own fault (a 4xx) is not.
    The caller raises a returned `ServiceError` as if it had crossed Ray (`deployments/ingress.py`).
    A replica's own failure (a 5xx) is raised again here, to be logged and counted."""
    if exc.status_code >= 500 and not isinstance(exc, ReferenceMissing):
        raise exc
    return exc


def unwrap(exc: BaseException) -> BaseException:
    """Return the exception raised inside a Ray replica, not Ray's wrapper around it."""
    # Only exceptions count: some Ray errors keep a non-exception `cause` (e.g. a death context).
    while isinstance(getattr(exc, "cause", None), BaseException) and exc.cause is not exc:
        exc = exc.cause
    return exc


class StoreUnavailable(ServiceError):
    """The voice/job store (a directory or an S3 bucket) cannot be reached; nothing was changed."""

    status_code = 503
    code = "store_unavailable"


class SynthesizerUnavailable(ServiceError):
    """The Synthesizer replica died during the request (and during its one retry)."""

    status_code = 503
    code = "synthesizer_unavailable"


class StreamInterrupted(SynthesizerUnavailable):
    """A streamed response's Synthesizer went away after audio was sent: what was sent is a prefix.
    Raw audio streams end without their last chunk (the client's HTTP library reports an incomplete
    body); SSE streams end with an `error` event instead of `speech.audio.done`."""

    code = "stream_interrupted"


class TranscriberUnavailable(ServiceError):
    """The Transcriber replica died during the request (and during its one retry)."""

    status_code = 503
    code = "transcriber_unavailable"


class Overloaded(ServiceError):
    """A model deployment's queue (`max_queued_requests`) is full."""

    status_code = 503
    code = "overloaded"


class ReplicaStopping(ServiceError):
    """Serve is stopping the Ingress replica that holds a live socket (scale-down, redeploy, shutdown)."""

    status_code = 503
    code = "replica_stopping"


class CapacityUnavailable(ServiceError):
    """A model deployment's replica cannot be placed on any node; the message names what it needs."""

    status_code = 503
    code = "capacity_unavailable"


class RequestTimeout(ServiceError):
    """The model did not answer (or send its first audio) within `limits.request_timeout_s`."""

    status_code = 504
    code = "request_timeout"


class ReferenceMissing(ServiceError):
    """A Synthesizer replica does not hold the clip a request names; the caller sends it again with
    the clip (`SpeechService.send`). Never meant for a client: reaching one would be our bug."""

    status_code = 500
    code = "reference_missing"

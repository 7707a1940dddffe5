"""Typed errors. Each carries the HTTP status and machine-readable code it maps to (once, in api.py)."""


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(ServiceError):
    status_code = 422
    code = "unprocessable"


class ModelUnavailable(ServiceError):
    """The model weights could not be loaded; the message says how to provide them."""

    status_code = 503
    code = "model_unavailable"


def unwrap(exc: BaseException) -> BaseException:
    """Return the exception raised inside a Ray replica, not Ray's wrapper around it."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:
        exc = exc.cause
    return exc


class StoreUnavailable(ServiceError):
    """The voice/job store (a directory or an S3 bucket) cannot be reached; nothing was changed."""

    status_code = 503
    code = "store_unavailable"

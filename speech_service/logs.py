"""Request ids and log setup.

Every request has an id: the caller's `X-Request-ID` when it is a plain token of at most 128
characters, else one we make. It is kept in a context variable for the request's task (and the
threads it hands work to), returned in `X-Request-ID`, appended to error messages and added to every
log record of ours. Behind Ray Serve the proxy takes or makes the same id and carries it through
deployment handles into the model replicas, where Serve's log format prints it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from typing import TextIO

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
NO_REQUEST = "-"

_current = contextvars.ContextVar("request_id", default=NO_REQUEST)

# Our loggers; inside Serve replicas they are routed to Serve's replica log files.
OUR_LOGGERS = ("speech_service", "deployments")
SERVE_LOGGER = "ray.serve"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> bool:
    return value is not None and REQUEST_ID_RE.fullmatch(value) is not None


def current_request_id() -> str:
    return _current.get()


def with_request_id(message: str) -> str:
    """An error message ending with the request's id, so a report can be found in the logs."""
    return f"{message} (request id: {current_request_id()})"


def bind_request_id(request_id: str) -> contextvars.Token:
    return _current.set(request_id)


def reset_request_id(token: contextvars.Token) -> None:
    _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (Serve's own filter may have set it already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = _current.get()
        return True


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Outside Serve: our loggers print to `stream` (stderr) with the request id in every line."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    _attach([handler], level)


def route_to_serve_logs() -> None:
    """Inside a Serve replica: our loggers write through Serve's replica handlers, so each line lands
    in the replica's log file in Serve's format, with the request id Serve carries."""
    serve_logger = logging.getLogger(SERVE_LOGGER)
    handlers = list(serve_logger.handlers)
    for handler in handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    _attach(handlers, serve_logger.level or logging.INFO)


def _attach(handlers: list[logging.Handler], level: int) -> None:
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = list(handlers)
        logger.setLevel(level)
        logger.propagate = False

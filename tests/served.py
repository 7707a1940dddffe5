"""The real app served over HTTP on a loopback port (uvicorn in a thread), for clients that need a
socket: the browser and the command-line client."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from speech_service.config import ServiceSettings
from speech_service.http.app import create_app

from conftest import free_port


@contextlib.contextmanager
def served_app(store: Path | dict, backends, **settings) -> Iterator[str]:
    """Serve `create_app` over `backends` with its store in `store` (a directory, or the `store`
    settings); yield the base URL."""
    store = store if isinstance(store, dict) else {"path": str(store)}
    settings = ServiceSettings.model_validate({"store": store, **settings})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, backends), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def without_request_id(message: str) -> str:
    """An API error message without the request id it may end with (it differs per request)."""
    return re.sub(r"\s*\(request id: [^)]*\)$", "", message)

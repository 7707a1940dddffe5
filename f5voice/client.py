"""The service's HTTP API as `f5voice` calls it (httpx), and its errors as exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

EXIT_USAGE = 2  # bad arguments, bad --url
EXIT_REFUSED = 3  # the API refused the request (HTTP 4xx)
EXIT_FAILED = 4  # the service failed or could not be reached
EXIT_JOB_FAILED = 5  # a job ended failed or cancelled
EXIT_UNVERIFIED = 6  # `verify`: the file's Content Credentials are missing, untrusted or broken
JOB_POLL_S = 0.5
DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def refused_or_failed(response: httpx.Response) -> CliError:
    """The API's own words for a non-2xx response, and the exit code its status class maps to."""
    code, message = f"http_{response.status_code}", response.reason_phrase
    try:
        error = response.json()["error"]
        code, message = error.get("code") or code, error.get("message") or message
    except (ValueError, KeyError, TypeError):
        pass
    detail = f"{code}, HTTP {response.status_code}"
    request_id = response.headers.get("x-request-id")
    if request_id and request_id not in message:
        detail += f", request {request_id}"
    return CliError(f"{message} [{detail}]", EXIT_REFUSED if response.status_code < 500 else EXIT_FAILED)


class Api:
    """The service's HTTP API; every failure becomes a CliError."""

    def __init__(self, url: str, api_key: str | None, timeout: float):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        # `timeout` bounds each wait (connect, each read), not the whole response: a long text streams.
        self.http = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=10))
        self.stream_headers: httpx.Headers = httpx.Headers()  # of the last stream opened

    @contextmanager
    def failures(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise CliError(f"{self.url} did not answer in time ({type(exc).__name__}).", EXIT_FAILED) from None
        except httpx.RemoteProtocolError as exc:  # a stream the service broke off: its audio is a prefix
            raise CliError(f"{self.url} broke off the response part-way ({exc}); retry.", EXIT_FAILED) from None
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.url}: {exc or type(exc).__name__}", EXIT_FAILED) from None

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.failures():
            response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise refused_or_failed(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Iterator[bytes]]:
        """The response body as it arrives; errors before the first byte keep their status code."""
        with self.failures(), self.http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
                raise refused_or_failed(response)
            self.stream_headers = response.headers
            yield response.iter_bytes()

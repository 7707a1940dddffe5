"""The service's own metrics, defined once, through `ray.serve.metrics`.

Ray exports them in Prometheus format from each node's metrics agent with a `ray_` prefix (e.g.
`ray_speech_requests_total`), beside Serve's built-ins, and adds the `deployment`, `replica` and
`application` tags itself. Each metric is created on first use in the process that records it (a
replica), so those tags are right; outside Ray recording costs nearly nothing and goes nowhere.
"""

from __future__ import annotations

import time
from functools import cache

from ray.serve.metrics import Counter, Histogram

_SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300]
_RATIOS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10]
_BATCH_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]


@cache
def requests() -> Counter:
    return Counter("speech_requests", "HTTP requests answered, by route template, method and status",
                   tag_keys=("route", "method", "status"))


@cache
def audio_seconds() -> Counter:
    return Counter("speech_audio_seconds", "Seconds of speech produced", tag_keys=("stream",))


@cache
def real_time_factor() -> Histogram:
    return Histogram("speech_real_time_factor",
                     "Seconds spent making speech per second of speech (below 1 is faster than real time)",
                     boundaries=_RATIOS, tag_keys=("stream",))


@cache
def time_to_first_audio() -> Histogram:
    return Histogram("speech_time_to_first_audio_seconds",
                     "From the request to its first audio (the whole audio when not streamed)",
                     boundaries=_SECONDS, tag_keys=("stream",))


@cache
def queue_wait() -> Histogram:
    return Histogram("speech_queue_wait_seconds",
                     "From the ingress handing a request to the Synthesizer until a replica starts on it "
                     "(router queue, cold start, busy replicas)", boundaries=_SECONDS)


@cache
def batch_size() -> Histogram:
    return Histogram("speech_batch_size", "Requests (or segments) sampled together in one model call",
                     boundaries=_BATCH_SIZES)


@cache
def cold_starts() -> Counter:
    return Counter("speech_cold_starts", "Model replicas started (weights loaded and warmed up)")


@cache
def cold_start_duration() -> Histogram:
    return Histogram("speech_cold_start_seconds", "From a model replica's process start to its model being ready",
                     boundaries=_SECONDS)


@cache
def transcriptions() -> Counter:
    return Counter("speech_transcriptions", "Reference clips transcribed by Whisper, by outcome",
                   tag_keys=("outcome",))


def record_request(route: str, method: str, status: int) -> None:
    requests().inc(1, tags={"route": route, "method": method, "status": str(status)})


def record_speech(audio_s: float, elapsed_s: float, *, stream: bool) -> None:
    """A finished synthesis: `audio_s` of speech made in `elapsed_s` (from the request's start)."""
    tags = {"stream": str(stream).lower()}
    audio_seconds().inc(audio_s, tags=tags)
    if audio_s > 0:
        real_time_factor().observe(elapsed_s / audio_s, tags=tags)


def record_first_audio(started: float, *, stream: bool) -> None:
    time_to_first_audio().observe(time.monotonic() - started, tags={"stream": str(stream).lower()})


def record_queue_wait(dispatched_at: float | None) -> None:
    """`dispatched_at` is the wall-clock time (time.time()) the ingress made the call."""
    if dispatched_at is not None:
        queue_wait().observe(max(0.0, time.time() - dispatched_at))


def record_cold_start(seconds: float) -> None:
    """Serve tags it with the deployment and replica."""
    cold_starts().inc(1)
    cold_start_duration().observe(seconds)

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


# name -> (kind, description, boundaries, tag keys)
_DEFINITIONS: dict[str, tuple[type, str, list[float] | None, tuple[str, ...]]] = {
    "speech_requests": (Counter, "HTTP requests answered, by route template, method and status", None,
                        ("route", "method", "status")),
    "speech_audio_seconds": (Counter, "Seconds of speech produced", None, ("stream",)),
    "speech_real_time_factor": (Histogram, "Seconds spent making speech per second of speech (below 1 is "
                                "faster than real time)", _RATIOS, ("stream",)),
    "speech_time_to_first_audio_seconds": (Histogram, "From the request to its first audio (the whole audio "
                                           "when not streamed)", _SECONDS, ("stream",)),
    "speech_queue_wait_seconds": (Histogram, "From the ingress handing a request to the Synthesizer until a "
                                  "replica starts on it (router queue, cold start, busy replicas)", _SECONDS, ()),
    "speech_batch_size": (Histogram, "Requests (or segments) sampled together in one model call", _BATCH_SIZES, ()),
    "speech_cold_starts": (Counter, "Model replicas started (weights loaded and warmed up)", None, ()),
    "speech_cold_start_seconds": (Histogram, "From a model replica's process start to its model being ready",
                                  _SECONDS, ()),
    "speech_model_loads": (Counter, "Models loaded by a Synthesizer replica, by model and outcome", None,
                           ("model", "outcome")),
    "speech_model_load_seconds": (Histogram, "Time to load one model (fetch, weights, warm-up)", _SECONDS, ("model",)),
    "speech_model_evictions": (Counter, "Models unloaded to make room for another, by model", None, ("model",)),
    "speech_model_requests": (Counter, "Synthesizer calls, by the model they were made with", None, ("model",)),
    "speech_transcriptions": (Counter, "Reference clips transcribed by Whisper, by outcome", None, ("outcome",)),
    "speech_quality_checks": (Counter, "Segments quality-checked, by outcome (passed or failed, after retries)",
                              None, ("outcome",)),
    "speech_quality_retries": (Counter, "Segments made again because the quality check failed", None, ()),
    "speech_listen_seconds": (Histogram, "Transcriber time spent hearing one segment made (captions and the "
                              "quality check)", _SECONDS, ()),
}


@cache
def _metric(name: str) -> Counter | Histogram:
    kind, description, boundaries, tag_keys = _DEFINITIONS[name]
    options = {"boundaries": boundaries} if boundaries else {}
    return kind(name, description, tag_keys=tag_keys, **options)


def record_request(route: str, method: str, status: int) -> None:
    _metric("speech_requests").inc(1, tags={"route": route, "method": method, "status": str(status)})


def record_speech(audio_s: float, elapsed_s: float, *, stream: bool) -> None:
    """A finished synthesis: `audio_s` of speech made in `elapsed_s` (from the request's start)."""
    tags = {"stream": str(stream).lower()}
    _metric("speech_audio_seconds").inc(audio_s, tags=tags)
    if audio_s > 0:
        _metric("speech_real_time_factor").observe(elapsed_s / audio_s, tags=tags)


def record_first_audio(started: float, *, stream: bool) -> None:
    tags = {"stream": str(stream).lower()}
    _metric("speech_time_to_first_audio_seconds").observe(time.monotonic() - started, tags=tags)


def record_queue_wait(dispatched_at: float | None) -> None:
    """`dispatched_at` is the wall-clock time (time.time()) the ingress made the call."""
    if dispatched_at is not None:
        _metric("speech_queue_wait_seconds").observe(max(0.0, time.time() - dispatched_at))


def record_cold_start(seconds: float) -> None:
    """Serve tags it with the deployment and replica."""
    _metric("speech_cold_starts").inc(1)
    _metric("speech_cold_start_seconds").observe(seconds)


def record_batch_size(size: int) -> None:
    """One model call of `size` segments."""
    _metric("speech_batch_size").observe(size)


def record_model_load(model: str, seconds: float, ok: bool) -> None:
    _metric("speech_model_loads").inc(1, tags={"model": model, "outcome": "ok" if ok else "failed"})
    if ok:
        _metric("speech_model_load_seconds").observe(seconds, tags={"model": model})


def record_model_eviction(model: str) -> None:
    _metric("speech_model_evictions").inc(1, tags={"model": model})


def record_model_request(model: str) -> None:
    _metric("speech_model_requests").inc(1, tags={"model": model})


def record_transcription(outcome: str) -> None:
    _metric("speech_transcriptions").inc(1, tags={"outcome": outcome})


def record_quality_check(passed: bool) -> None:
    _metric("speech_quality_checks").inc(1, tags={"outcome": "passed" if passed else "failed"})


def record_quality_retry() -> None:
    _metric("speech_quality_retries").inc(1)


def record_listen(seconds: float) -> None:
    _metric("speech_listen_seconds").observe(seconds)

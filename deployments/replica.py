"""What the model deployments share: the CPUs Ray gave this replica, and where its cold start goes."""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve.exceptions import RayServeException

from speech_service import coldstart, metrics
from speech_service.config import StoreSettings
from speech_service.devices import cpu_threads


def assigned_cpus() -> float | None:
    return ray.get_runtime_context().get_assigned_resources().get("CPU")


def threads(configured: int | None) -> int:
    """`cpu_threads` from the config, else this replica's CPUs rounded up."""
    return cpu_threads(configured, assigned_cpus())


def cold_start_clock(deployment: str) -> coldstart.ColdStartClock:
    try:
        replica = serve.get_replica_context().replica_tag
    except RayServeException:  # constructed outside Serve
        replica = ""
    return coldstart.ColdStartClock(deployment, replica)


def report_cold_start(clock: coldstart.ColdStartClock, store: dict[str, Any] | None) -> None:
    """Log the finished start and, when the app gave us its store, keep it for `/v1/status`."""
    record = clock.record()
    metrics.record_cold_start(record["total_s"])
    if store is not None:
        coldstart.save(coldstart.open_status_store(StoreSettings.model_validate(store)), record)


def replica_hooks(deployment: str, store: dict[str, Any] | None) -> dict[str, Any]:
    """What a replica class takes from its deployment: its cold-start clock (the worker's start ends
    now, so call this first), the thread count rule, and where its cold start is reported."""
    return {"clock": cold_start_clock(deployment), "threads": threads,
            "on_cold_start": lambda clock: report_cold_start(clock, store)}

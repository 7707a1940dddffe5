"""Cold-start records: how long each phase of a model replica's start took.

A replica times its phases with `ColdStartClock` and, once ready, writes the record to the object
store under `status/cold_start/<deployment>.json` (the last start wins). `GET /v1/status` reads
those keys, so reporting a start never wakes or calls a replica.

Phases: `worker_start` (the replica's process start to its constructor: Ray's worker boot and the
deployment's own light imports), then what the deployment times itself (`imports`, `fetch`,
`weights`, `warm_up`), and `other` for what lies between them (Serve's own replica set-up).
A process Ray had started before it was needed would show its idle time in `worker_start`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speech_service.config import StoreSettings
from speech_service.storage.objects import ObjectStore, open_object_store

logger = logging.getLogger(__name__)
PREFIX = "status/cold_start/"


def process_start_time() -> float:
    """When this process started (epoch seconds).

    On Linux: its start in clock ticks after boot (/proc/self/stat) against the uptime to the
    hundredth (/proc/uptime). psutil adds the start to the boot time /proc/stat gives in whole
    seconds, which can make a process up to a second older than it is."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


class ColdStartClock:
    """Times the phases of one replica's start; `phase(name)` blocks of the same name add up."""

    def __init__(self, deployment: str, replica: str = "", process_started: float | None = None):
        self.deployment = deployment
        self.replica = replica
        self.process_started = process_started if process_started is not None else process_start_time()
        self.constructed = time.time()
        self.phases: dict[str, float] = {"worker_start": self.constructed - self.process_started}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def record(self) -> dict[str, Any]:
        """The finished record; call when the replica is ready to serve."""
        ready = time.time()
        total = ready - self.process_started
        phases = {name: round(seconds, 3) for name, seconds in self.phases.items()}
        phases["other"] = round(max(total - sum(self.phases.values()), 0.0), 3)
        record = {"deployment": self.deployment, "replica": self.replica,
                  "process_started_at": _iso(self.process_started), "ready_at": _iso(ready),
                  "total_s": round(total, 3), "phases": phases}
        logger.info("%s cold start %.2f s: %s", self.deployment, total,
                    ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
        return record


def open_status_store(store: StoreSettings) -> ObjectStore:
    """The object store beside the voices (local or S3), where cold-start records live."""
    return open_object_store(store)


def save(objects: ObjectStore, record: dict[str, Any]) -> None:
    """Write `record`; a store that cannot take it costs the report, never the replica."""
    try:
        objects.put(f"{PREFIX}{record['deployment']}.json", json.dumps(record).encode())
    except Exception as exc:
        logger.warning("could not store the cold-start record of %s: %s", record["deployment"], exc)


def last_cold_starts(objects: ObjectStore) -> dict[str, dict[str, Any]]:
    """The last cold start of each deployment that has recorded one."""
    records = {}
    try:
        for key in objects.list(PREFIX):
            record = json.loads(objects.get(key).data)
            records[record["deployment"]] = record
    except Exception as exc:  # status must answer even when the store does not
        logger.warning("could not read cold-start records: %s", exc)
    return records

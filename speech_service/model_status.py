"""Which models each Synthesizer replica holds, for `GET /v1/status`: the replica writes its record
to the object store whenever a model is loaded or unloaded (`status/models/<replica>.json`), and the
Ingress reads the records of the replicas Serve reports running, so status never wakes a replica."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from speech_service.storage.objects import ObjectStore

logger = logging.getLogger(__name__)
PREFIX = "status/models/"
# A record of a replica Serve does not report running is deleted once it is this old: younger, it may
# be a replica still starting (its record is written when its first model loads, before it runs).
STALE_AFTER = timedelta(minutes=10)


def save(objects: ObjectStore, replica: str, held: list[str], models: dict[str, Any]) -> None:
    """`held`: names, least recently used first; `models`: `EngineCache.stats()` (less the request
    counts, which would be stale by the next request: those are metrics). A store that cannot take
    it costs the report, never the replica."""
    models = {name: {k: v for k, v in stats.items() if k != "requests"} for name, stats in models.items()}
    record = {"replica": replica, "held": held, "models": models,
              "updated_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
    try:
        objects.put(f"{PREFIX}{replica}.json", json.dumps(record).encode())
    except Exception as exc:
        logger.warning("could not store which models replica %s holds: %s", replica, exc)


def held_models(objects: ObjectStore, running: set[str] | None) -> dict[str, dict[str, Any]]:
    """The records of the replicas in `running` (None: every record), by replica. Records that a
    replica killed without its shutdown left behind are deleted once `STALE_AFTER` old."""
    records, now = {}, datetime.now(timezone.utc)
    try:
        for key in objects.list(PREFIX):
            replica = key.removeprefix(PREFIX).removesuffix(".json")
            record = json.loads(objects.get(key).data)
            if running is None or replica in running:
                records[replica] = record
            elif now - datetime.fromisoformat(record["updated_at"]) > STALE_AFTER:
                objects.delete(key)
    except Exception as exc:  # status must answer even when the store does not
        logger.warning("could not read which models the replicas hold: %s", exc)
    return records

"""Whether a handle call waits on a replica that is gone: `LostReplicas.holds`, asked while it waits.

A node cut off the network resets no connection: a gRPC handle call to a replica there waits
without an error (Ray's gRPC keepalive is minutes long) until `limits.request_timeout_s`. Ray's
health checks do declare the node dead, and its actors with it, so `ModelCalls` asks every few
seconds whether its call is on a lost replica and, if so, sends the call again. A streamed call
names its replica once sent, so the answer is exact: that replica's actor is dead. A unary gRPC call
names its replica only when it answers, so for it the answer is "a node died since the call began":
a call that was on a surviving replica is then sent again too (a rare, bounded cost: only calls in
flight when a node is lost). Actor-call handles (`RAY_SERVE_USE_GRPC_BY_DEFAULT=0`) need none of
this: Ray fails their calls itself. See docs/ARCHITECTURE.md, "Losing a node".

Serve 2.60 has no public way to ask which replica took a call, nor Ray a dashboard-free public way to
ask one actor's state: this module reads Serve's private `_replica_result._actor_id` and Ray's
`ray._private.state.actors`, the one place that does; both degrade to "not lost" if they change.
Dead nodes come from the public `ray.nodes()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

logger = logging.getLogger("ray.serve")


def replica_actor_id(response: Any) -> str | None:
    """The actor id (hex) of the replica a handle call (`DeploymentResponse` or its generator) went
    to, once Serve says; None before."""
    actor_id = getattr(getattr(response, "_replica_result", None), "_actor_id", None)
    try:
        return actor_id.hex() if actor_id is not None else None
    except Exception:  # noqa: BLE001 - not an ActorID: nothing to say
        return None


def actor_state(actor_id: str) -> str | None:
    """Ray's state of an actor: ALIVE, RESTARTING, DEAD, ... (None if Ray does not know it)."""
    from ray._private import state

    return (state.actors(actor_id=actor_id) or {}).get("State")


def dead_node_ids() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if not node.get("Alive")}


class _Looks:
    """Runs `look()` in a background thread at most every `period_s` per key."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str, look: Callable[[], None]) -> None:
        with self._lock:
            if time.monotonic() - self._last.get(key, float("-inf")) < self.period_s:
                return
            self._last[key] = time.monotonic()
        threading.Thread(target=self._run, args=(look,), name="lost-replicas", daemon=True).start()

    @staticmethod
    def _run(look: Callable[[], None]) -> None:
        try:
            look()
        except Exception as exc:  # noqa: BLE001 - the GCS may be busy: look again later
            logger.warning("could not read the cluster's state: %s", exc)


class LostReplicas:
    """`holds(response, since)`: whether the call `response`, waiting since `since` (monotonic),
    is on a replica that is gone, as of the last look. Asking never blocks: looks run in threads."""

    def __init__(self, period_s: float = 1.0, state_of: Callable[[str], str | None] = actor_state,
                 dead_nodes: Callable[[], set[str]] = dead_node_ids):
        self.state_of, self.dead_nodes = state_of, dead_nodes
        self._looks = _Looks(period_s)
        self._dead_actors: set[str] = set()
        self._node_deaths: dict[str, float] = {}  # node id -> when first seen dead
        self._known_dead: set[str] | None = None  # the dead nodes at the first look, not new deaths
        self._looks.due("nodes", self._look_nodes)

    def holds(self, response: Any, since: float) -> bool:
        actor_id = replica_actor_id(response)
        if actor_id is not None:
            self._looks.due(actor_id, lambda: self._look_actor(actor_id))
            return actor_id in self._dead_actors
        self._looks.due("nodes", self._look_nodes)
        return any(seen >= since for seen in self._node_deaths.values())

    def _look_actor(self, actor_id: str) -> None:
        if self.state_of(actor_id) == "DEAD":
            self._dead_actors.add(actor_id)

    def _look_nodes(self) -> None:
        dead, now = self.dead_nodes(), time.monotonic()
        if self._known_dead is None:
            self._known_dead = dead
        for node in dead - self._known_dead:
            self._node_deaths.setdefault(node, now)

"""What Serve and the cluster say about the model deployments, read without calling any replica:
replica states for `/v1/status`, whether a deployment's replica can be placed at all, and whether
an Ingress replica is being stopped (for its live sockets)."""

from __future__ import annotations

import threading
from typing import Any

import ray
from ray import serve

# Serve's own deployment message once a replica has waited long to be scheduled.
_UNSCHEDULED = "to be scheduled"
# `serve.status()` is not safe in two threads at once: parsing an autoscaling config registers its
# policy's module for pickling by value and unregisters it, process-wide, and the second thread's
# unregister raises. The Ingress asks from its thread pool (capacity checks, `/v1/status`).
_status_lock = threading.Lock()


def serve_status() -> Any:
    """`serve.status()`, one thread at a time (see `_status_lock`)."""
    with _status_lock:
        return serve.status()


def deployment_configs(app_name: str) -> dict[str, dict[str, Any]]:
    """Each deployment's `ray_actor_options` and `user_config`, as the controller holds them.

    Private on purpose, and only here: Serve's public `serve.status()` gives states but no
    deployment config, and the public REST API needs the dashboard, which a cluster may not run.
    """
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"].get(app_name) or {}
    return {name: {"ray_actor_options": (d.get("deployment_config") or {}).get("ray_actor_options") or {},
                   "user_config": (d.get("deployment_config") or {}).get("user_config") or {}}
            for name, d in app.get("deployments", {}).items()}


def http_host() -> str:
    """The address Serve's HTTP data plane listens on (`http_options.host`), from the same private
    read as `deployment_configs`: a builder's args do not carry it."""
    from ray.serve.context import _get_global_client

    return (_get_global_client().get_serve_details().get("http_options") or {}).get("host") or "0.0.0.0"


def running_replicas(app_name: str, deployment: str) -> set[str]:
    """The ids of `deployment`'s running replicas (the same private read as `deployment_configs`)."""
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"].get(app_name) or {}
    replicas = (app.get("deployments", {}).get(deployment) or {}).get("replicas") or []
    return {r["replica_id"] for r in replicas if str(r.get("state")).endswith("RUNNING")}


def replica_stopping(app_name: str, deployment: str, replica_id: str) -> bool:
    """Whether Serve is stopping this replica (or no longer runs it), from the same private read as
    `deployment_configs`: Serve tells a replica's code nothing before it shuts its HTTP server, and
    with it every open socket, 2 s into a stop; a live socket must close with the protocol's error
    before that (docs/ARCHITECTURE.md, "Live text in")."""
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"].get(app_name) or {}
    if str(app.get("status")).endswith("DELETING"):  # its deployments are no longer listed
        return True
    if deployment not in app.get("deployments", {}):
        return False  # no verdict (a controller that is recovering lists nothing yet)
    replicas = app["deployments"][deployment].get("replicas") or []
    state = next((str(r.get("state")) for r in replicas if r.get("replica_id") == replica_id), None)
    return state is None or state.endswith("STOPPING")


def replica_demand(ray_actor_options: dict[str, Any]) -> dict[str, float]:
    """The resources one replica asks Ray for, in Ray's resource names."""
    demand = {"CPU": float(ray_actor_options.get("num_cpus", 1) or 0),
              "GPU": float(ray_actor_options.get("num_gpus", 0) or 0)}
    if ray_actor_options.get("memory"):
        demand["memory"] = float(ray_actor_options["memory"])
    for name, amount in (ray_actor_options.get("resources") or {}).items():
        demand[name] = float(amount)
    if ray_actor_options.get("accelerator_type"):
        demand[f"accelerator_type:{ray_actor_options['accelerator_type']}"] = 0.001
    return {name: amount for name, amount in demand.items() if amount > 0}


def unmet_demand(demand: dict[str, float], nodes: list[dict[str, float]]) -> dict[str, float]:
    """The part of `demand` that no node offers in total (empty when some node could host it).
    Amounts in use do not count: a replica that holds them may be loading, not stuck."""
    if any(all(node.get(name, 0.0) >= amount for name, amount in demand.items()) for node in nodes):
        return {}
    missing = {name: amount for name, amount in demand.items()
               if not any(node.get(name, 0.0) >= amount for node in nodes)}
    return missing or demand  # each part exists somewhere, but never all on one node


def placement_problem(deployment: str, status: Any, ray_actor_options: dict[str, Any]) -> str | None:
    """Why `deployment`'s replicas cannot run, or None. `status` is its `serve.status()` entry."""
    if status is not None and status.replica_states.get("RUNNING", 0) > 0:
        return None
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    missing = unmet_demand(replica_demand(ray_actor_options), nodes)
    if missing:
        return f"{deployment} waits for a node: no node offers {missing}"
    if status is not None and _UNSCHEDULED in (status.message or ""):
        return f"{deployment} waits for resources: {status.message}"
    return None


def deployment_status(app_name: str) -> dict[str, Any]:
    """Replica states (Serve's public status), configured models and placement problems."""
    app = serve_status().applications.get(app_name)
    configs = deployment_configs(app_name)
    deployments = {}
    for name, d in (app.deployments if app else {}).items():
        config = configs.get(name, {})
        user_config = config.get("user_config") or {}
        deployments[name] = {
            "status": str(d.status.value if hasattr(d.status, "value") else d.status),
            "replicas": {str(getattr(state, "value", state)): n for state, n in d.replica_states.items() if n},
            "model": user_config.get("model_name") or user_config.get("model"),
            "waiting_for": placement_problem(name, d, config.get("ray_actor_options") or {}),
        }
    return {"application": app_name, "app_status": str(getattr(app.status, "value", app.status)) if app else None,
            "deployments": deployments}


def capacity_problem(app_name: str, deployment: str) -> str | None:
    """Why `deployment` of `app_name` has no replica that can serve, or None if nothing blocks it."""
    app = serve_status().applications.get(app_name)
    status = app.deployments.get(deployment) if app else None
    options = deployment_configs(app_name).get(deployment, {}).get("ray_actor_options") or {}
    return placement_problem(deployment, status, options)

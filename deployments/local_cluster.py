"""A Ray cluster of this process's own with the application deployed as `serve run` deploys it.

For the tests and the benchmarks, which start Serve from Python. `serve run` and `serve deploy` call
Serve's private `serve_start` and then deploy the config; there is no public equivalent that takes a
whole config file's `http_options` and applications, so `apply` is the one place that calls it.
"""

from __future__ import annotations

import os
import time

from deployments.ray_env import apply_ray_env


def deploy(config: dict, *, num_cpus: int, num_gpus: int, address: str | None = None,
           timeout_s: float = 300, **init_options) -> str:
    """Start a local Ray cluster with `num_cpus` and `num_gpus` logical resources and `init_options`
    for `ray.init` (or connect to the running cluster at `address`), deploy `config` and return the
    base URL once the application is running."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file written into the user's HOME
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    apply_ray_env()  # the data plane `make serve` runs with (config/ray.env)
    if address:
        ray.init(address=address, namespace="serve", log_to_driver=False)
    else:
        # "local": a cluster of our own, even when another one is up on this machine
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, namespace="serve",
                 include_dashboard=False, log_to_driver=False, **init_options)
    apply(config)
    return wait_until_running(config, timeout_s)


def wait_until_running(config: dict, timeout_s: float = 300) -> str:
    """The base URL once `config`'s first application is running (a failed deploy raises)."""
    from ray import serve

    name = config["applications"][0]["name"]
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        app = serve.status().applications.get(name)
        if app and app.status == "RUNNING":
            return f"http://127.0.0.1:{config['http_options']['port']}"
        if app and app.status == "DEPLOY_FAILED":
            raise RuntimeError(app.message)
        time.sleep(0.5)
    raise TimeoutError("the application did not start")


def apply(config: dict) -> None:
    """What `serve deploy FILE` does: the whole config, validated, applied by the controller (which
    is started first if this cluster has none)."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    serve_start(http_options=config["http_options"]).deploy_apps(ServeDeploySchema.model_validate(config))


def shutdown() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()

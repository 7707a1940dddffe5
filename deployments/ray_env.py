"""The environment Ray is started with (config/ray.env): Serve's data plane, HAProxy and gRPC.

Ray reads these flags when its processes start, so they belong to the process that starts Ray, not
to the application config. `make` exports them; code that starts a Ray cluster of its own (the tests,
the benchmarks, through `local_cluster.deploy`) calls `apply_ray_env()` first. See
docs/ARCHITECTURE.md, "Data plane"."""

from __future__ import annotations

import os
from pathlib import Path

RAY_ENV = Path(__file__).resolve().parents[1] / "config" / "ray.env"


def read_ray_env(path: Path = RAY_ENV) -> dict[str, str]:
    """The KEY=VALUE lines of `path`; blank lines and # comments are skipped."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}: not a KEY=VALUE line: {line!r}")
            env[key.strip()] = value.strip()
    return env


def apply_ray_env(path: Path = RAY_ENV) -> None:
    """Set the file's variables in this process (and so in the Ray it starts), except those already set."""
    for key, value in read_ray_env(path).items():
        os.environ.setdefault(key, value)

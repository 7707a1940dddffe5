"""`python -m deployments.run CONFIG`: `serve run CONFIG` that stops cleanly on SIGTERM too.

`serve run` shuts down on Ctrl-C (SIGINT to the terminal's whole process group) but not on SIGTERM,
which `kill`, process supervisors and container runtimes send: it dies at once and leaves Ray's
processes behind, HAProxy among them, still bound to the service's port, so the next start never
becomes healthy. This launcher runs `serve run` in a process group of its own, with Serve's data
plane (`config/ray.env`), and on SIGTERM or SIGINT (or when the process that started it exits)
does what Ctrl-C does: SIGINT to that group. GNU make, sent SIGTERM itself, waits for its recipe
without passing the signal on: signal the process group (as a terminal and systemd do) or run this
module directly under a supervisor. It
then waits up to `--grace` seconds, kills whatever of the service is still alive (the group, and
every process that was in its tree) and exits, so no process or port is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from deployments.ray_env import apply_ray_env


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(child: subprocess.Popen, grace_s: float) -> None:
    """Ctrl-C's shutdown for `child`'s process group; then nothing of it survives `grace_s`."""
    tree = _tree(psutil.Process(child.pid))  # before it unravels: orphans leave the tree
    seen = {p.pid: p for p in tree}
    try:
        os.killpg(child.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        for p in _tree(psutil.Process(child.pid)) if child.poll() is None else []:
            seen.setdefault(p.pid, p)  # started while shutting down
        alive = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if child.poll() is not None and not alive:
            return
        time.sleep(0.2)
    for p in seen.values():  # past the grace: end what is left
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.run", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a Serve config file, e.g. config/serve.yaml")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds a stop may take before what is left is killed (default 60)")
    args = parser.parse_args(argv)
    apply_ray_env()  # Serve's data plane, as `make` exports it
    serve = Path(sys.executable).with_name("serve")
    child = subprocess.Popen([str(serve), "run", args.config], start_new_session=True)
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    while child.poll() is None and not stopping:
        if os.getppid() != parent:  # what started us is gone (a shell that was sent SIGTERM): stop too
            stopping.append("its parent exited")
        time.sleep(0.2)
    if stopping:
        why = stopping[0] if isinstance(stopping[0], str) else signal.Signals(stopping[0]).name
        print(f"{why}: stopping the service", file=sys.stderr, flush=True)
        stop(child, args.grace)
        return 0
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())

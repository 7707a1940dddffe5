"""Hosts of the test's own on one machine: Linux network namespaces joined by veth pairs to a bridge,
each with its own address, loopback and ports, so a Ray head and its workers talk over a real
network that a test can cut. Root is needed (`ip netns`); the test skips without it.

A process started from `Host.popen` runs in its host's namespace; `Host.call` runs a function on a
thread that has entered the namespace (sockets it opens, threads and processes it starts are
there too), which is how the test, a process in the machine's own namespace, reaches the hosts.
`Network.close` kills every process in the namespaces and deletes them, whatever state they are in.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
PREFIX = "f5t"  # namespace names: f5t<pid>-<host>, so a later run can find and remove a dead run's


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def available() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)  # root without CAP_SYS_ADMIN (some containers) cannot
        ip("netns", "del", probe)
    except FileNotFoundError:
        return "`ip` (iproute2) is not installed"
    except subprocess.CalledProcessError as exc:
        return f"network namespaces cannot be made here: {exc.stderr.strip()}"
    return None


def remove_stale() -> None:
    """Namespaces left by a test process that no longer exists (killed before its clean-up)."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0]
        if name.startswith(PREFIX) and "-" in name:
            pid = name[len(PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _destroy(name)


def _destroy(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Host:
    def __init__(self, network: Network, name: str, address: str):
        self.network, self.name, self.address = network, name, address
        self.netns = f"{network.prefix}-{name}"
        self._threads = ThreadPoolExecutor(8, thread_name_prefix=self.netns, initializer=self._enter)

    def _enter(self) -> None:
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.netns}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)` on a thread inside this host's namespace."""
        return self._threads.submit(fn, *args, **kwargs).result()

    def popen(self, args: list[str], log: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """A process in this host's namespace (its own session, so its group can be signalled)."""
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *args], stdout=open(log, "ab"),
                                stderr=subprocess.STDOUT, env=env, start_new_session=True, **kwargs)

    def cut(self) -> None:
        """Take the host off the network: its link down, as when its cable or its machine is gone."""
        ip("-n", self.netns, "link", "set", "eth0", "down")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


class Network:
    """A bridge in the namespace of the first host (the head), 10.77.0.0/24; every other host joins
    it by a veth pair. `add` hosts, then `close` (or use it as a context manager)."""

    def __init__(self):
        remove_stale()
        self.prefix = f"{PREFIX}{os.getpid()}"
        self.hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    def add(self, name: str) -> Host:
        with self._lock:
            host = Host(self, name, f"10.77.0.{len(self.hosts) + 1}")
            ip("netns", "add", host.netns)
            self.hosts[name] = host
            ip("-n", host.netns, "link", "set", "lo", "up")
            if len(self.hosts) == 1:  # the bridge's home
                ip("-n", host.netns, "link", "add", "br0", "type", "bridge")
                ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "br0")
                ip("-n", host.netns, "link", "set", "br0", "up")
                return host
            bridge = next(iter(self.hosts.values()))
            port = f"v-{name}"[:15]
            ip("-n", host.netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", bridge.netns)
            ip("-n", bridge.netns, "link", "set", port, "master", "br0", "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.netns, "link", "set", "eth0", "up")
            return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
            _destroy(host.netns)
        self.hosts.clear()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""A clean stop: SIGTERM (what `kill`, a supervisor or a container runtime sends) to the service
started as `make demo` starts it leaves no process and no bound port, and the next start is healthy."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import yaml

from deployments.profiles import load_profile
from speech_service.provenance.development import write_signer

from conftest import REPO, TINY_DIT

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]
PORT = 8000  # the service's own port, which HAProxy held after a SIGTERM
STOP_BOUND_S = 90


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def config_file(offline_models, tmp_path_factory):
    if not port_free(PORT):
        pytest.skip(f"port {PORT} is in use on this machine")
    folder = tmp_path_factory.mktemp("stop")
    config = load_profile("offline")
    app = config["applications"][0]
    app["args"]["store"] = {"kind": "local", "path": str(folder / "store")}
    # The profile's development signer, as `make offline-models` writes it (the models likewise).
    write_signer(folder / "signer")
    app["args"]["provenance"].update({kind: str(folder / "signer" / name) for kind, name in (
        ("certificate_chain", "chain.pem"), ("private_key", "key.pem"), ("trust_anchors", "ca.pem"))})
    for d in app["deployments"]:
        if d["name"] == "Synthesizer":
            d["user_config"].update(checkpoint=str(offline_models["checkpoint"]),
                                    vocoder=str(offline_models["vocoder"]), architecture_overrides=TINY_DIT)
        if d["name"] == "Transcriber":
            d["user_config"]["model"] = str(offline_models["whisper"])
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, folder


def start(config_file, under_a_parent: bool = False) -> subprocess.Popen:
    """The launcher `make demo` runs; `under_a_parent`: as `make` runs it, a shell's child."""
    path, folder = config_file
    env = {**os.environ, "HOME": str(folder), "RAY_USAGE_STATS_ENABLED": "0"}  # Ray's token file goes here
    command = [sys.executable, "-m", "deployments.run", str(path)]
    if under_a_parent:  # the shell waits for it and does not exec it, as make does not
        command = ["sh", "-c", " ".join(command) + "; true"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited while starting"
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("the service did not become healthy")


def service_processes(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def sigterm_leaves_nothing(process: subprocess.Popen) -> float:
    """SIGTERM to `process`; the seconds until none of its tree is alive and the port is free."""
    tree = service_processes(psutil.Process(process.pid))
    assert any("haproxy" in " ".join(p.cmdline()).lower() for p in tree if p.is_running()), \
        "HAProxy is not in the service's tree: the test would not see it left behind"
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(STOP_BOUND_S)

    def alive():
        return [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    while time.monotonic() - stopped_at < STOP_BOUND_S and (alive() or not port_free(PORT)):
        time.sleep(0.5)
    took = time.monotonic() - stopped_at
    assert not alive() and port_free(PORT), (alive(), took)
    return took


def test_sigterm_stops_everything_and_the_next_start_is_healthy(config_file):
    took = sigterm_leaves_nothing(start(config_file))
    second = start(config_file, under_a_parent=True)  # healthy again: nothing of the first holds the port
    try:
        assert httpx.get(f"http://127.0.0.1:{PORT}/v1/status", timeout=30).status_code == 200
    finally:  # SIGTERM to the parent alone (`kill <make's pid>`) stops the service too
        took_under_a_parent = sigterm_leaves_nothing(second)
    print(f"stopped in {took:.1f} s, and in {took_under_a_parent:.1f} s through its parent")

"""A Ray cluster of three hosts that loses one: the head (Ingress, Serve's controller, HAProxy) and two
GPU workers (one logical GPU each, one Synthesizer replica each) in network namespaces of the test's
own (`hosts.py`), formed with `ray start` and Ray's token authentication, with config/serve.cluster.yaml
deployed by `serve deploy`. Voices and jobs live in SeaweedFS on a fourth host.

With a job, two streams and a steady trickle of requests under way, one worker's link goes down.
Then the S3 server is stopped and started again under a running job. What is measured is written to
`build/failover.json` (and shown with `-s`)."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf
import yaml

from deployments.profiles import load_profile
from deployments.ray_env import read_ray_env

import hosts
from conftest import REPO, SHORT_TEXT, SeaweedFS, add_voice, deployments, use_tiny_models

UNAVAILABLE = hosts.available()
pytestmark = [pytest.mark.ray, pytest.mark.own_ray,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))]

BIN = Path(sys.executable).parent
# Ray's node health checks, tuned down from 3 s x 5 misses (and a 30 s gRPC timeout: 40-85 s to drop
# a node whose link is down) to 1 s x 3, so a lost node is dropped within about 5 s.
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
          "RAY_health_check_failure_threshold": "3"}
STORY = " ".join(2 * [
    "The morning train left the station at seven.", "Passengers read newspapers and drank coffee.",
    "Outside the window, fields of wheat moved in the wind.", "A small dog barked at the passing cars.",
    "The conductor walked slowly down the aisle.", "He checked every ticket with care.",
    "Later that day, the rain began to fall.", "The passengers watched the drops race down the glass.",
    "At noon the train stopped at a quiet village.", "Nobody got off, and two children got on.",
    "They carried a basket of apples for their grandmother.", "The train moved on toward the hills.",
])
JOB = {"voice": "dana", "input": STORY, "response_format": "pcm", "seed": 11, "nfe_step": 8}
TIMEOUT = httpx.Timeout(120, connect=5)


class RayHosts:
    """A head and workers started with `ray start --block` in their namespaces."""

    def __init__(self, network: hosts.Network, work: Path, temp: Path):
        self.network, self.work, self.temp = network, work, temp
        self.env = {**os.environ, **read_ray_env(), **HEALTH, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.head = network.add("head")

    def start_head(self) -> None:
        self.head.popen([str(BIN / "ray"), "start", "--head", "--block", f"--node-ip-address={self.head.address}",
                         "--port=6379", "--num-cpus=4", "--num-gpus=0", '--resources={"cpu_pool": 100}',
                         f"--temp-dir={self.temp / 'head'}", "--disable-usage-stats"],
                        log=self.work / "head.log", env=self.env)

    def start_worker(self, host: hosts.Host) -> None:
        host.popen([str(BIN / "ray"), "start", "--block", f"--address={self.head.address}:6379",
                    f"--node-ip-address={host.address}", "--num-cpus=2", "--num-gpus=1",
                    f"--temp-dir={self.temp / host.name}", "--disable-usage-stats"],
                   log=self.work / f"{host.name}.log", env=self.env)

    def on_head(self, *args: str, timeout: float = 120) -> str:
        """A Ray CLI command run on the head."""
        done = subprocess.run(["ip", "netns", "exec", self.head.netns, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = self.on_head(str(BIN / "ray"), "status", timeout=30)
                active = status.split("Active:", 1)[1].split("Pending:", 1)[0]
                if active.count("node_") >= count:
                    return
            except (AssertionError, IndexError, subprocess.TimeoutExpired):
                pass
            assert time.monotonic() < deadline, f"{count} Ray nodes did not come up; see {self.work}"
            time.sleep(2)


def cluster_config(server: SeaweedFS, bucket: str, offline_models: dict, store_vars: dict) -> dict:
    """The cluster profile on the tiny models: two Synthesizer replicas (one per worker GPU), short
    job leases so a runner that lost the store is replaced quickly."""
    config = load_profile("cluster")
    config["http_options"] = {"host": "0.0.0.0", "port": 8000}
    app = config["applications"][0]
    app["args"]["store"].update(bucket=bucket, endpoint_url=server.endpoint, region="us-east-1")
    app["args"]["limits"].update(request_timeout_s=120, capacity_wait_s=60)
    app["args"]["allow_anonymous_admin"] = True  # 0.0.0.0 of hosts on a network of the test's own
    app["args"]["jobs"] = {"lease_s": 6, "sweep_interval_s": 2, "retry_delay_s": 1, "max_attempts": 5}
    app["runtime_env"] = {"env_vars": store_vars}
    d = deployments(config)
    for deployment in d.values():
        deployment["ray_actor_options"]["num_cpus"] = 0.5
    use_tiny_models(config, offline_models)
    d["Synthesizer"]["autoscaling_config"].update(min_replicas=2, max_replicas=2)
    d["Synthesizer"]["ray_actor_options"]["num_cpus"] = 1
    return config


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, offline_models):
    work = tmp_path_factory.mktemp("hosts")
    ray_temp = Path(tempfile.mkdtemp(prefix="f5ray-"))  # Ray's files: Unix socket paths are limited to 107 bytes
    try:
        with hosts.Network() as network:  # on exit every process of the hosts is gone, before their files are
            ray_hosts = RayHosts(network, work, ray_temp)
            workers = [network.add("w1"), network.add("w2")]
            store_host = network.add("store")
            server = SeaweedFS(work / "seaweedfs", ip=store_host.address)
            store_host.call(server.start)
            bucket = store_host.call(server.create_bucket)
            ray_hosts.start_head()
            for worker in workers:
                ray_hosts.start_worker(worker)
            ray_hosts.wait_for_nodes(3)

            store_vars = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                          "AWS_DEFAULT_REGION": "us-east-1"}
            config_file = work / "serve.yaml"
            config_file.write_text(yaml.safe_dump(cluster_config(server, bucket, offline_models, store_vars)))
            ray_hosts.on_head(str(BIN / "serve"), "deploy", str(config_file))
            url = f"http://{ray_hosts.head.address}:8000"
            ray_hosts.head.call(wait_until_ready, url, work)
            yield {"ray": ray_hosts, "workers": workers, "store": store_host, "server": server, "url": url}
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


def wait_until_ready(url: str, work: Path, timeout_s: float = 300) -> None:
    """Until both Synthesizer replicas run (the application is RUNNING only then)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=10) as http:
        while True:
            try:
                status = http.get("/v1/status").json()
                if status["app_status"] == "RUNNING":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, f"the application did not start; see {work}"
            time.sleep(2)


def running_synthesizers(http: httpx.Client) -> int:
    return http.get("/v1/status").json()["deployments"]["Synthesizer"]["replicas"].get("RUNNING", 0)


def read_sse(http: httpx.Client, body: dict) -> dict:
    """A streamed request's outcome: the audio bytes received and how it ended."""
    received, last, started = bytearray(), None, time.monotonic()
    try:
        with http.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "sse"}) as r:
            if r.status_code != 200:
                return {"status": r.status_code, "end": "refused", "bytes": 0}
            for line in r.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    if event["type"] == "speech.audio.delta":
                        received += base64.b64decode(event["audio"])
                    last = event
    except httpx.HTTPError as exc:
        return {"status": 200, "end": f"transport: {type(exc).__name__}", "bytes": len(received)}
    return {"status": 200, "end": last["type"] if last else None, "bytes": len(received),
            "code": last.get("error", {}).get("code") if last else None, "seconds": time.monotonic() - started}


class Prober:
    """Small speech requests, one after another, each logged with when it was sent and how it ended."""

    def __init__(self, url: str):
        self.url, self.results, self.stop = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=TIMEOUT) as http:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    status = http.post("/v1/audio/speech", json={"voice": "dana", "input": "Still here.",
                                                                 "response_format": "pcm"}).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.results.append((sent, time.monotonic(), status))
                time.sleep(0.3)


class JobWatcher:
    """A job's record, read every 0.25 s until it ends: (when, segments done) each time."""

    def __init__(self, url: str, job_id: str):
        self.url, self.job_id, self.progress, self.job = url, job_id, [], None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        with httpx.Client(base_url=self.url, timeout=TIMEOUT) as http:
            while True:
                try:
                    job = http.get(f"/v1/jobs/{self.job_id}").json()
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.25)  # the store may be down: its reads answer 503 in the meantime
                    continue
                if "status" in job:
                    self.progress.append((time.monotonic(), job["progress"]["segments_done"]))
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        self.job = job
                        return
                time.sleep(0.25)

    def wait_for_segments(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.progress or self.progress[-1][1] < count:
            assert self.thread.is_alive() and time.monotonic() < deadline, f"job {self.job_id}: no segment"
            time.sleep(0.1)

    def result(self, timeout_s: float) -> dict:
        self.thread.join(timeout_s)
        assert self.job is not None, f"job {self.job_id} did not end within {timeout_s:g} s: {self.progress[-1:]}"
        return self.job

    def next_segment_after(self, moment: float) -> float | None:
        """Seconds from `moment` until a segment after those done by then was reported."""
        done = max([d for t, d in self.progress if t <= moment], default=0)
        return next((t - moment for t, d in self.progress if t > moment and d > done), None)


def test_losing_a_worker_and_the_store(cluster, short_wav):
    report: dict = {}
    cluster["ray"].head.call(failover, cluster, short_wav, report)
    print(json.dumps(report, indent=2))


def write_report(report: dict) -> None:
    out = REPO / "build" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def failover(cluster: dict, short_wav: Path, report: dict) -> None:
    """The scenario, run on a thread of the head host (so its sockets are on the cluster's network)."""
    url, lost = cluster["url"], cluster["workers"][0]
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        voice = add_voice(http, "dana", short_wav, SHORT_TEXT)
        assert running_synthesizers(http) == 2

        watcher = JobWatcher(url, http.post("/v1/jobs", json=JOB).json()["id"])
        streams: list[dict] = []
        stream_threads = [threading.Thread(target=lambda: streams.append(read_sse(http, {**JOB, "seed": 3})),
                                           daemon=True) for _ in range(2)]
        for thread in stream_threads:
            thread.start()
        prober = Prober(url)
        probe_thread = threading.Thread(target=prober.run, daemon=True)
        probe_thread.start()
        watcher.wait_for_segments(1)

        lost.cut()
        cut_at = time.monotonic()
        detected_at = None
        while detected_at is None:  # Serve knows the replica is gone
            if running_synthesizers(http) < 2:
                detected_at = time.monotonic()
            assert time.monotonic() - cut_at < 120, "Serve never noticed the lost worker"
            time.sleep(0.25)
        job = watcher.result(300)
        for thread in stream_threads:
            thread.join(300)
        while sum(sent > detected_at for sent, _, _ in prober.results) < 10:  # new requests, after the loss
            assert probe_thread.is_alive() and time.monotonic() - detected_at < 300
            time.sleep(0.5)
        prober.stop.set()
        probe_thread.join(150)
        report["worker_loss"] = {
            "detected_after_s": round(detected_at - cut_at, 2),
            "next_segment_after_s": round(watcher.next_segment_after(cut_at) or -1, 2),
            "job": job["id"], "job_status": job["status"], "job_attempts": job["attempts"],
            "job_segments": job["progress"]["segments_total"], "streams": streams,
            "probes": len(prober.results),
            "probes_failed": [(round(s - cut_at, 2), status) for s, _, status in prober.results if status != 200],
            "slowest_probe_after_detection_s": round(max(end - sent for sent, end, _ in prober.results
                                                          if sent > detected_at), 2),
        }
        write_report(report)

        # The job: succeeded, every segment, as long as the same request spoken whole.
        assert job["status"] == "succeeded", job
        assert job["progress"]["segments_done"] == job["progress"]["segments_total"] > 1
        result = http.get(f"/v1/jobs/{job['id']}/audio")
        whole = http.post("/v1/audio/speech", json=JOB)
        assert result.status_code == whole.status_code == 200
        assert len(result.content) == len(whole.content)
        # The streams: each whole (it was on the other worker) or ended with an error event.
        assert len(streams) == 2
        for stream in streams:
            assert stream["end"] in ("speech.audio.done", "error"), stream
            if stream["end"] == "error":
                assert stream["code"] == "stream_interrupted"
        # Requests: none accepted after the loss was detected failed, and new ones succeed.
        failed_after = [r for r in prober.results if r[0] > detected_at + 1 and r[2] != 200]
        assert not failed_after, failed_after
        assert any(r[0] > detected_at and r[2] == 200 for r in prober.results)
        # Records: the voice and the job are whole.
        assert http.get("/v1/voices/dana").json()["sha256"] == voice["sha256"]
        audio, rate = sf.read(io.BytesIO(http.get("/v1/voices/dana/audio").content))
        assert rate == 24000 and len(audio) > rate

        # The store stopped and started again under a running job.
        watcher = JobWatcher(url, http.post("/v1/jobs", json={**JOB, "seed": 12}).json()["id"])
        watcher.wait_for_segments(1)
        store, server = cluster["store"], cluster["server"]
        stopped_at = time.monotonic()
        store.call(server.stop)
        time.sleep(8)  # longer than the job's lease: its runner loses it
        store.call(server.start)
        restarted_at = time.monotonic()
        job = watcher.result(300)
        report["store_restart"] = {"down_s": round(restarted_at - stopped_at, 2), "status": job["status"],
                                   "attempts": job["attempts"], "error": job.get("error"),
                                   "ended_after_restart_s": round(time.monotonic() - restarted_at, 2)}
        assert job["status"] in ("succeeded", "failed"), job
        if job["status"] == "failed":
            assert job["error"]["code"] and job["error"]["message"]
        else:
            assert http.get(f"/v1/jobs/{job['id']}/audio").status_code == 200
        write_report(report)
        listed = {j["id"]: j["status"] for j in http.get("/v1/jobs").json()["data"]}
        assert listed == {report["worker_loss"]["job"]: "succeeded", job["id"]: job["status"]}, listed

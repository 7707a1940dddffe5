"""Shared fixtures: offline models (generated once per session) and speech made with espeak-ng."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from deployments import local_cluster
from speech_service import audio
from speech_service.config import SynthesizerSettings, TranscriberSettings
from speech_service.offline_models import TINY_DIT, prepare

# ~25 s when spoken by espeak-ng at its default rate, with sentence pauses to clip at.
LONG_TEXT = (
    "The morning train left the station at seven. Passengers read newspapers and drank coffee. "
    "Outside the window, fields of wheat moved in the wind. A small dog barked at the passing cars. "
    "The conductor walked slowly down the aisle, checking every ticket with care. Later that day, "
    "the rain began to fall over the quiet hills, and everyone went home to their warm kitchens "
    "to cook dinner and talk about the long journey."
)
SHORT_TEXT = "The quick brown fox jumps over the lazy dog."


def espeak(text: str, path: Path, *extra: str) -> Path:
    """Speak `text` into a WAV file with espeak-ng."""
    subprocess.run(["espeak-ng", *extra, "-w", str(path), text], check=True)
    return path


def convert(src: Path, dst: Path) -> Path:
    """Transcode with ffmpeg (the container follows `dst`'s suffix)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), str(dst)], check=True)
    return dst


def decode_file(path: Path) -> np.ndarray:
    return audio.decode(path.read_bytes(), max_seconds=600)


@pytest.fixture(scope="session")
def offline_models(tmp_path_factory) -> dict[str, Path]:
    return prepare(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def synth_settings(offline_models) -> SynthesizerSettings:
    return SynthesizerSettings(
        model_name="f5-tiny",
        architecture_overrides=TINY_DIT,
        checkpoint=str(offline_models["checkpoint"]),
        vocoder=str(offline_models["vocoder"]),
        device="auto",
        defaults={"nfe_step": 8},
    )


@pytest.fixture(scope="session")
def whisper_settings(offline_models) -> TranscriberSettings:
    return TranscriberSettings(model=str(offline_models["whisper"]), device="cpu")


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def long_wav(speech_dir) -> Path:
    return espeak(LONG_TEXT, speech_dir / "long.wav")


@pytest.fixture(scope="session")
def short_wav(speech_dir) -> Path:
    return espeak(SHORT_TEXT, speech_dir / "short.wav")


REPO = Path(__file__).resolve().parents[1]


def add_voice(client, name: str, wav: Path, ref_text: str) -> dict:
    """Register a voice over HTTP with its transcript (so no Transcriber call); its record."""
    with open(wav, "rb") as f:
        r = client.post("/v1/voices", data={"name": name, "ref_text": ref_text},
                        files={"file": (wav.name, f, "audio/wav")})
    assert r.status_code == 201, r.text
    return r.json()


def server_timing(response) -> dict[str, float]:
    """A response's `Server-Timing` header as {name: milliseconds}."""
    entries = (entry.strip().split(";dur=") for entry in response.headers["server-timing"].split(","))
    return {name: float(ms) for name, ms in entries}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(store: Path, port: int) -> dict:
    """config/serve.yaml as shipped, on a loopback port and a temporary store, with CPU needs scaled
    down to a test machine. GPU requests and autoscaling bounds are kept."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "serve.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"]["store"]["path"] = str(store)
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.5
    return config


def deployments(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def use_tiny_models(config: dict, offline_models: dict, **synthesizer) -> dict[str, dict]:
    """Point the config's Synthesizer and Transcriber at the offline models (tiny F5 and Vocos, Whisper
    base on the CPU); `synthesizer` overrides further Synthesizer user_config fields. Returns the
    deployments by name, for further changes."""
    d = deployments(config)
    d["Synthesizer"]["user_config"].update({
        "model_name": "f5-tiny", "architecture_overrides": TINY_DIT, "checkpoint": str(offline_models["checkpoint"]),
        "vocoder": str(offline_models["vocoder"]), "defaults": {"nfe_step": 4}, **synthesizer})
    d["Transcriber"]["user_config"].update(model=str(offline_models["whisper"]), device="cpu")
    return d


def start_serve(config: dict, num_gpus: int = 1, address: str | None = None, **init_options) -> str:
    """Deploy `config` the way `serve run` does on a local Ray cluster with `num_gpus` logical GPUs
    (or on the running cluster at `address`); the base URL once the application is running."""
    return local_cluster.deploy(config, num_cpus=8, num_gpus=num_gpus, address=address, **init_options)


def stop_serve() -> None:
    local_cluster.shutdown()


class SeaweedFS:
    """A real S3 server: SeaweedFS's `weed server -s3` on loopback, with its data in `directory`.
    `stop()` and `start()` may be called mid-test to take S3 away and bring it back (same data)."""

    def __init__(self, directory: Path):
        self.directory = directory
        # Every port explicit: the defaults (and port + 10000 for gRPC) collide between servers.
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        import sys
        import time

        import boto3

        weed = Path(sys.executable).parent / "weed"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(weed), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.directory}",
             "-master.volumeSizeLimitMB=64", "-volume.max=0", *(f"-{k}={v}" for k, v in self.ports.items())],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "weed.log", "ab"))
        client = boto3.client("s3", **self.client_kwargs())
        deadline = time.time() + timeout
        while True:
            try:
                client.list_buckets()
                return
            except Exception:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("SeaweedFS did not start") from None
                time.sleep(0.3)

    def stop(self, grace_s: float = 5) -> None:
        """SIGTERM, then SIGKILL after `grace_s` (weed's own graceful stop takes ~25 s; its data is
        on disk by then either way)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client_kwargs(self) -> dict:
        return {"endpoint_url": self.endpoint, "aws_access_key_id": "test", "aws_secret_access_key": "test",
                "region_name": "us-east-1"}

    def create_bucket(self) -> str:
        """A new, empty bucket with a unique name."""
        import uuid

        import boto3

        name = f"test-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", **self.client_kwargs()).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS S3 server for the session (tests that stop it start their own)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server) -> str:
    return s3_server.endpoint


@pytest.fixture(scope="session")
def s3_vars(s3_server) -> dict[str, str]:
    """boto3's standard environment variables for the test server (for this process or a replica's)."""
    return {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_env(s3_endpoint, s3_vars, monkeypatch):
    """boto3 pointed at the test server through its standard environment variables."""
    for key, value in s3_vars.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint

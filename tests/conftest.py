"""Shared fixtures: offline models (generated once per session) and speech made with espeak-ng."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import warnings
from pathlib import Path

# Each pytest-xdist worker's native thread pools (torch, OpenMP, CTranslate2) get its share of the
# cores, not all of them: oversubscribed pools spin against each other (a tenth of `make test-fast`).
# Set before numpy or torch is imported; xdist names the worker count before conftest is loaded.
if _workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from deployments import local_cluster
from speech_service.audio import uploads
from speech_service.config import SynthesizerSettings, TranscriberSettings
from speech_service.storage.objects import ObjectStore
from speech_service.weights.offline import TINY_DIT, prepare

# ~25 s when spoken by espeak-ng at its default rate, with sentence pauses to clip at.
LONG_TEXT = (
    "The morning train left the station at seven. Passengers read newspapers and drank coffee. "
    "Outside the window, fields of wheat moved in the wind. A small dog barked at the passing cars. "
    "The conductor walked slowly down the aisle, checking every ticket with care. Later that day, "
    "the rain began to fall over the quiet hills, and everyone went home to their warm kitchens "
    "to cook dinner and talk about the long journey."
)
SHORT_TEXT = "The quick brown fox jumps over the lazy dog."


class PassThroughStore(ObjectStore):
    """An object store passing every call to `inner`: a test overrides the call it counts or holds."""

    def __init__(self, inner: ObjectStore):
        self.inner = inner

    def get(self, key):
        return self.inner.get(key)

    def put(self, key, data, **conditions):
        return self.inner.put(key, data, **conditions)

    def delete(self, key):
        self.inner.delete(key)

    def list(self, prefix):
        return self.inner.list(prefix)


def tiered(values, fast) -> list:
    """`parametrize` values of a matrix: those (or whose first item) in `fast` run in the fast tier,
    the others are marked slow; `make test` runs them all."""
    rows = [v if isinstance(v, tuple) else (v,) for v in values]
    return [pytest.param(*row, marks=[] if row[0] in fast else [pytest.mark.slow]) for row in rows]


def espeak(text: str, path: Path, *extra: str) -> Path:
    """Speak `text` into a WAV file with espeak-ng."""
    subprocess.run(["espeak-ng", *extra, "-w", str(path), text], check=True)
    return path


def convert(src: Path, dst: Path, *options: str) -> Path:
    """Transcode with ffmpeg (the container follows `dst`'s suffix; `options` pick a codec)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *options, str(dst)], check=True)
    return dst


def decode_file(path: Path) -> np.ndarray:
    return uploads.decode(path.read_bytes(), max_seconds=600)


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
_S3_FIXTURES = {"s3_server", "s3_endpoint", "s3_vars", "s3_env"}


def pytest_sessionstart(session):
    """In each process that runs tests, the f5-tts modules (and so einx) before any test module
    imports torch: einx imported after torch loads torch._dynamo, which no test needs
    (speech_service.synthesis.f5_modules). xdist's controller runs no test and skips it."""
    if not session.config.pluginmanager.has_plugin("dsession"):
        from speech_service.synthesis import f5_modules  # noqa: F401


def pytest_collection_modifyitems(items):
    """Mark the tests that use the S3 server (by fixture, or by an "s3" store parameter); run the
    modules with a Ray of their own (`own_ray`) last, so the shared cluster starts once."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if _S3_FIXTURES & set(item.fixturenames) or "s3" in params.values():
            item.add_marker(pytest.mark.s3)
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)  # stable: file order otherwise


# -- the models, loaded once per session --------------------------------------------------------
@pytest.fixture(scope="session")
def engine(synth_settings):
    from speech_service.synthesis.engine import SynthesisEngine

    return SynthesisEngine.load(synth_settings)


@pytest.fixture(scope="session")
def whisper(whisper_settings):
    from speech_service.transcription.whisper import WhisperBackend

    return WhisperBackend(whisper_settings)


class CountingSynthesizer:
    """The Synthesizer's replica class, called in process as its deployment calls it; counts the
    calls and the clips they carried."""

    def __init__(self, replica):
        self.replica, self.calls, self.clips_sent = replica, 0, 0
        self.plans = []  # every plan made, for tests that look at a job's segments

    def _count(self, reference) -> None:
        self.calls += 1
        self.clips_sent += reference.wav is not None

    def synthesize(self, reference, text, options):
        self._count(reference)
        return self.replica.synthesize(reference, text, options)

    def synthesize_stream(self, reference, text, options):
        self._count(reference)
        return self.replica.synthesize_stream(reference, text, options)

    def plan(self, reference, text, options, streaming=False):
        self._count(reference)
        plan = self.replica.plan(reference, text, options, streaming)
        self.plans.append(plan)
        return plan

    def synthesize_segment(self, reference, plan, index):
        self._count(reference)
        return self.replica.synthesize_segment(reference, plan, index)


class ThreadedTranscriber:
    """The Transcriber's replica class; its blocking call runs in a thread, as Serve runs a replica's
    sync method."""

    def __init__(self, replica):
        self.replica, self.calls, self.listened = replica, 0, 0

    def transcribe(self, audio, language):
        self.calls += 1
        return asyncio.to_thread(self.replica.transcribe, audio, language)

    def listen(self, clips, language):
        self.listened += len(clips)
        return asyncio.to_thread(self.replica.listen, clips, language)


class InProcessBackends:
    """The service's model side without Ray: `ModelBackends` and its call policy over the replica
    classes the deployments wrap (`SynthesisReplica`, `TranscriptionReplica`), on the session's
    engine and Whisper."""

    def __init__(self, engine, whisper, synth_settings, whisper_settings, limits=None):
        from speech_service.config import LimitSettings
        from speech_service.service.model_calls import ModelBackends, ModelCalls
        from speech_service.synthesis.replica import SynthesisReplica
        from speech_service.transcription.replica import TranscriptionReplica

        self.engine = engine
        self.synthesis = SynthesisReplica(loader=lambda settings, spec, clock: engine)
        self.synthesis.reconfigure(synth_settings)
        self.transcription = TranscriptionReplica(loader=lambda settings, clock: whisper)
        self.transcription.reconfigure(whisper_settings)
        self.synthesizer = CountingSynthesizer(self.synthesis)
        self.transcriber = ThreadedTranscriber(self.transcription)
        self.backends = ModelBackends(self.synthesizer, self.transcriber, ModelCalls(limits or LimitSettings()))

    def __getattr__(self, name):  # synthesize, stream, transcribe, status
        return getattr(self.backends, name)

    @property
    def transcriptions(self) -> int:
        return self.transcriber.calls

    @property
    def syntheses(self) -> int:
        return self.synthesizer.calls

    @property
    def clips_sent(self) -> int:
        return self.synthesizer.clips_sent


@pytest.fixture(scope="module")
def backends(engine, whisper, synth_settings, whisper_settings):
    return InProcessBackends(engine, whisper, synth_settings, whisper_settings)


@pytest.fixture
def dies_after_first_piece(backends, monkeypatch):
    """The Synthesizer's streams break off after their first piece, as when its node is lost."""
    real = backends.synthesizer.synthesize_stream

    async def first_then_gone(reference, text, options):
        async for piece in real(reference, text, options):
            yield piece
            raise ConnectionError("the replica's node went away")

    monkeypatch.setattr(backends.synthesizer, "synthesize_stream", first_then_gone)


def engine_stream(engine, clip, ref_text: str, text: str, options):
    """A stream's pieces as the Synthesizer replica makes them, straight from the engine: its
    streaming plan, each segment sampled alone, cross-faded."""
    from speech_service.audio.seams import cross_fade
    from speech_service.synthesis.engine import cross_fade_samples

    items = engine.items(clip, ref_text, text, options, streaming=True)
    return cross_fade((engine.synthesize_batch([item])[0] for item in items), cross_fade_samples(items))


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
    """A port for a server a test starts: free now, and below Linux's ephemeral range (32768 and
    up), so no outgoing connection (of this or a parallel test worker) can take it before the
    server binds it."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32768)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32767")


def serve_config(store: Path, app_name: str = "tts") -> dict:
    """config/serve.yaml as shipped, on the shared cluster's loopback port and a temporary store,
    with CPU needs scaled down to a test machine. GPU requests and autoscaling bounds are kept.
    A module that counts replicas names its application: this driver's handles to an earlier
    module's deployment of the same name would report their requests to it."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "serve.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": SHARED_CLUSTER.port}
    app = config["applications"][0]
    app["name"] = app_name
    app["args"]["store"]["path"] = str(store)
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.5
        # A stopping replica looks for its last request every 0.2 s, not 2: each module's teardown
        # and each redeploy waits for its replicas.
        deployment["graceful_shutdown_wait_loop_s"] = 0.2
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
    # Two threads, not the one of its 0.5 CPU: each quality check hears seconds of noise.
    d["Transcriber"]["user_config"].update(model=str(offline_models["whisper"]), device="cpu", cpu_threads=2)
    return d


class SharedCluster:
    """One local Ray cluster with Serve for the Ray tier's modules (starting Ray and Serve and
    stopping them costs about 15 s on 2 cores): started by the first `start_serve`, each module's
    applications deleted by its `stop_serve`, shut down before a module marked `own_ray` and at the
    end of the session. Two logical GPUs, so a module may run two Synthesizer replicas."""

    def __init__(self):
        self.port, self.metrics_port = free_port(), free_port()
        self.up = False

    def deploy(self, config: dict) -> str:
        if self.up:
            local_cluster.apply(config)
            return local_cluster.wait_until_running(config)
        import ray

        try:
            return local_cluster.deploy(config, num_cpus=8, num_gpus=2, _metrics_export_port=self.metrics_port)
        finally:
            self.up = ray.is_initialized()

    def clear(self, timeout_s: float = 60) -> None:
        """Delete every application, waiting for their replicas to stop; Ray and Serve stay up. If
        they do not stop in time, the cluster goes (the next module starts a fresh one)."""
        from ray import serve

        for name in serve.status().applications:
            serve.delete(name, _blocking=False)
        deadline = time.monotonic() + timeout_s
        while serve.status().applications:
            if time.monotonic() > deadline:
                left = list(serve.status().applications)
                warnings.warn(f"applications not deleted in {timeout_s:g} s: {left}", stacklevel=2)
                return self.close()
            time.sleep(0.2)

    def close(self) -> None:
        if self.up:
            local_cluster.shutdown()
            self.up = False


SHARED_CLUSTER = SharedCluster()


def start_serve(config: dict, address: str | None = None) -> str:
    """Deploy `config` the way `serve run` does, on the shared local cluster (or on the running
    cluster at `address`); the base URL once the application is running."""
    if address is None:
        return SHARED_CLUSTER.deploy(config)
    return local_cluster.deploy(config, num_cpus=8, num_gpus=0, address=address)


def stop_serve() -> None:
    """The module's applications gone; a cluster of the module's own (`address`) shut down."""
    if SHARED_CLUSTER.up:
        SHARED_CLUSTER.clear()
    else:
        local_cluster.shutdown()


@pytest.fixture(scope="module", autouse=True)
def _ray_to_itself(request):
    """A module marked `own_ray` starts its own Ray (or processes that need the machine): the shared
    cluster goes first."""
    if request.node.get_closest_marker("own_ray"):
        SHARED_CLUSTER.close()


@pytest.fixture(scope="session", autouse=True)
def _shared_cluster_closed():
    yield
    SHARED_CLUSTER.close()


class SeaweedFS:
    """A real S3 server: SeaweedFS's `weed server -s3` on loopback, with its data in `directory`.
    `stop()` and `start()` may be called mid-test to take S3 away and bring it back (same data)."""

    def __init__(self, directory: Path, ip: str = "127.0.0.1"):
        self.directory, self.ip = directory, ip
        # Every port explicit: the defaults (and port + 10000 for gRPC) collide between servers.
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort")}
        self.endpoint = f"http://{ip}:{self.ports['s3.port']}"
        self.process: subprocess.Popen | None = None
        self.started_once = False

    def start(self, timeout: float = 60) -> None:
        """Start the server; a first start whose port was taken meanwhile tries fresh ports (a
        restart keeps its ports: the service under test knows the endpoint)."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError:
                if self.started_once or attempt == 2:
                    raise
                import shutil

                shutil.rmtree(self.directory, ignore_errors=True)  # a first start holds no data yet
                self.ports = {name: free_port() for name in self.ports}
                self.endpoint = f"http://{self.ip}:{self.ports['s3.port']}"

    def _start(self, timeout: float) -> None:
        import sys

        import boto3

        weed = Path(sys.executable).parent / "weed"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(weed), "server", "-s3", f"-ip={self.ip}", f"-ip.bind={self.ip}", f"-dir={self.directory}",
             # A restarted master waits out raft's election timeout (10 s by default) before it leads.
             "-master.volumeSizeLimitMB=64", "-volume.max=0", "-master.electionTimeout=1s",
             *(f"-{k}={v}" for k, v in self.ports.items())],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "weed.log", "ab"))
        client = boto3.client("s3", **self.client_kwargs())
        deadline = time.time() + timeout
        while True:
            try:
                client.list_buckets()
                self.started_once = True
                return
            except Exception:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("SeaweedFS did not start") from None
                time.sleep(0.3)

    def stop(self, grace_s: float = 1) -> None:
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


@pytest.fixture(params=["local", "s3"])
def store_config(request, tmp_path) -> dict:
    """The `store` settings of a test, once per store kind: a directory under tmp_path, or a fresh
    bucket (keys under a prefix) on the test S3 server, reached through boto3's own credential chain."""
    if request.param == "local":
        return {"path": str(tmp_path / "store")}
    server = request.getfixturevalue("s3_server")
    request.getfixturevalue("s3_env")
    return {"kind": "s3", "bucket": server.create_bucket(), "prefix": "svc", "endpoint_url": server.endpoint}


@pytest.fixture
def object_store(store_config):
    """The `ObjectStore` of `store_config`."""
    from speech_service.config import StoreSettings
    from speech_service.storage.objects import open_object_store

    return open_object_store(StoreSettings.model_validate(store_config))


@pytest.fixture
def s3_env(s3_endpoint, s3_vars, monkeypatch):
    """boto3 pointed at the test server through its standard environment variables."""
    for key, value in s3_vars.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


@pytest.fixture(scope="session")
def signer(tmp_path_factory):
    """A development signer: its CA, chain and key, as `make offline-models` writes them."""
    from speech_service.provenance.development import write_signer

    directory = tmp_path_factory.mktemp("signer")
    write_signer(directory)
    return directory


@pytest.fixture(scope="session")
def trusted(signer):
    """A C2PA reader's context that trusts the test CA, and only it."""
    import c2pa

    return c2pa.Context.from_dict({"verify": {"verify_trust": True},
                                   "trust": {"trust_anchors": (signer / "ca.pem").read_text()}})

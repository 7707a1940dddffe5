"""The tiny checkpoint and vocoder mirrored to a real S3 server (SeaweedFS) with the mirror command;
config/serve.yaml deployed with the Synthesizer's `checkpoint`/`vocoder` on s3:// and an empty
`cache_dir`, two replicas on one node: both start from the mirror, which is downloaded once."""

import io
import os
import subprocess
import sys
import time

import httpx
import pytest
import soundfile as sf
from ray import serve

from speech_service.weights.source import pulled_record

from conftest import SHORT_TEXT, serve_config, start_serve, stop_serve, use_tiny_models

pytestmark = pytest.mark.ray

APP = "tts"
BUCKET = "mirrored-weights"


@pytest.fixture(scope="module")
def mirrored(s3_server, s3_vars, offline_models) -> dict[str, str]:
    import boto3

    boto3.client("s3", **s3_server.client_kwargs()).create_bucket(Bucket=BUCKET)
    for source, prefix in [(offline_models["checkpoint"], "f5-tiny"), (offline_models["vocoder"], "vocos-tiny")]:
        subprocess.run([sys.executable, "-m", "speech_service.weights.mirror", "mirror", str(source),
                        f"s3://{BUCKET}/{prefix}"], check=True, env={**os.environ, **s3_vars}, timeout=120)
    return {"checkpoint": f"s3://{BUCKET}/f5-tiny/{offline_models['checkpoint'].name}",
            "vocoder": f"s3://{BUCKET}/vocos-tiny"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("node-cache")


@pytest.fixture(scope="module")
def base_url(mirrored, s3_vars, cache_dir, offline_models, tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("mirror-store"))
    # boto3 in the replicas finds the S3 server the way it would on a cluster: its environment.
    config["applications"][0]["runtime_env"] = {"env_vars": s3_vars}
    d = use_tiny_models(config, offline_models, checkpoint=mirrored["checkpoint"], vocoder=mirrored["vocoder"],
                        cache_dir=str(cache_dir))
    d["Synthesizer"]["autoscaling_config"].update(min_replicas=2, initial_replicas=2, max_replicas=2)
    assert not any(cache_dir.iterdir())
    yield start_serve(config)
    stop_serve()


def replica_infos(expected: int, timeout: float = 60) -> dict[str, dict]:
    """`info()` of each Synthesizer replica, asking until `expected` distinct replicas answered."""
    handle = serve.get_deployment_handle("Synthesizer", app_name=APP)
    seen: dict[str, dict] = {}
    deadline = time.time() + timeout
    while len(seen) < expected and time.time() < deadline:
        info = handle.info.remote().result(timeout_s=30)
        seen[info["replica"]] = info
    return seen


def test_two_replicas_start_from_the_mirror_downloaded_once(base_url, mirrored, cache_dir, short_wav):
    status = serve.status().applications[APP].deployments["Synthesizer"]
    assert status.replica_states.get("RUNNING", 0) == 2

    infos = replica_infos(2)
    assert len(infos) == 2
    for info in infos.values():
        assert info["model"] == "F5TTS_v1_Base" and info["load_error"] is None
    assert len({info["node_id"] for info in infos.values()}) == 1

    with httpx.Client(base_url=base_url, timeout=300) as http, open(short_wav, "rb") as f:
        r = http.post("/v1/voices", data={"name": "bob", "ref_text": SHORT_TEXT},
                      files={"file": ("short.wav", f, "audio/wav")})
        assert r.status_code == 201, r.text
        for _ in range(2):  # routed to either replica
            r = http.post("/v1/audio/speech", json={"model": "f5-tts", "voice": "bob", "input": "Hello there.",
                                                    "response_format": "wav", "seed": 1})
            assert r.status_code == 200, r.text
            samples, rate = sf.read(io.BytesIO(r.content))
            assert rate == 24000 and len(samples) > 0.3 * rate

    for source in mirrored.values():
        downloads = pulled_record(str(cache_dir), source)["downloads"]
        assert len(downloads) == 1, downloads

"""Two Ray nodes on one machine (`ray.cluster_utils.Cluster`): a CPU-only head carrying `cpu_pool`, as
cluster.yaml's head does, and a worker with one logical GPU. config/serve.cluster.yaml deployed on it,
with voices in S3 (SeaweedFS) and the weights from the S3 mirror: a voice uploaded through the
ingress is spoken by the Synthesizer on the GPU node, and no CPU deployment is placed there."""

import io
import os

import boto3
import httpx
import pytest
import soundfile as sf
from ray import serve
from ray.util.state import list_actors

from deployments.profiles import load_profile
from speech_service.weights.mirror import mirror

from conftest import SHORT_TEXT, add_voice, deployments, free_port, start_serve, stop_serve, use_tiny_models

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]

APP = "tts"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file written into the user's HOME
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The dashboard serves the state API that `list_actors` reads.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "num_gpus": 0, "resources": {"cpu_pool": 100}, "include_dashboard": True,
        "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster, gpu_node.node_id
    cluster.shutdown()


@pytest.fixture(scope="module")
def voice_bucket(s3_server) -> str:
    return s3_server.create_bucket()


@pytest.fixture(scope="module")
def base_url(cluster, s3_server, s3_vars, voice_bucket, offline_models, tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_vars.items():
            env.setenv(key, value)
        weights = s3_server.create_bucket()
        mirror(str(offline_models["checkpoint"]), f"s3://{weights}/f5-tiny")
        mirror(str(offline_models["vocoder"]), f"s3://{weights}/vocos-tiny")

    config = load_profile("cluster")
    config["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    app = config["applications"][0]
    app["args"]["store"].update(bucket=voice_bucket, endpoint_url=s3_server.endpoint,
                                region="us-east-1")
    app["runtime_env"] = {"env_vars": s3_vars}  # S3 credentials, as an instance role would give
    d = deployments(config)
    for deployment in d.values():
        deployment["ray_actor_options"]["num_cpus"] = 0.5
    use_tiny_models(config, offline_models, checkpoint=f"s3://{weights}/f5-tiny/{offline_models['checkpoint'].name}",
                    vocoder=f"s3://{weights}/vocos-tiny", cache_dir=str(tmp_path_factory.mktemp("gpu-node-cache")))
    d["Transcriber"]["autoscaling_config"].update(min_replicas=1, initial_replicas=1)  # to see where it lands
    yield start_serve(config, address=cluster[0].address)
    stop_serve()


def test_voice_is_spoken_on_the_gpu_node_and_cpu_deployments_stay_off_it(cluster, base_url, s3_server,
                                                                         voice_bucket, short_wav):
    _, gpu_node = cluster
    with httpx.Client(base_url=base_url, timeout=300) as http:
        add_voice(http, "carol", short_wav, SHORT_TEXT)
        r = http.post("/v1/audio/speech", json={"model": "f5-tts", "voice": "carol", "input": "Hello there.",
                                                "response_format": "wav"})
        assert r.status_code == 200, r.text
        samples, rate = sf.read(io.BytesIO(r.content))
        assert rate == 24000 and len(samples) > 0.3 * rate

    info = serve.get_deployment_handle("Synthesizer", app_name=APP).info.remote().result(timeout_s=60)
    assert info["node_id"] == gpu_node and info["model"] == "F5TTS_v1_Base"  # the registry's name
    voices = boto3.client("s3", **s3_server.client_kwargs()).list_objects_v2(Bucket=voice_bucket)
    assert any(o["Key"].startswith("tts/voices/carol/") for o in voices.get("Contents", []))  # shared, in S3

    replicas = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
        if actor.class_name.startswith(f"ServeReplica:{APP}:"):
            replicas.setdefault(actor.class_name.rsplit(":", 1)[1], []).append(actor.node_id)
    assert replicas.keys() == {"Ingress", "Synthesizer", "Transcriber"}, replicas
    assert replicas["Synthesizer"] == [gpu_node]
    for name in ("Ingress", "Transcriber"):
        assert replicas[name] and gpu_node not in replicas[name], (name, replicas)

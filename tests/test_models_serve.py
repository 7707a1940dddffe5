"""Many models through Ray Serve: the registry's tiny F5 DiT and E2 UNet-Transformer loaded on
demand by Synthesizer replicas that hold one model each, Serve's router sending each request to a
replica where its model is warm, and a model that cannot load answered 503 by name."""

import concurrent.futures

import httpx
import pytest

from deployments import local_cluster
from speech_service.weights.offline import TINY_DIT, TINY_UNETT

from conftest import SHORT_TEXT, add_voice, deployments, serve_config, start_serve, stop_serve

pytestmark = pytest.mark.ray
MODELS = ("f5-tiny", "e2-tiny")


def registry(offline_models) -> list[dict]:
    vocoder = str(offline_models["vocoder"])
    return [
        {"name": "f5-tiny", "architecture_overrides": TINY_DIT, "checkpoint": str(offline_models["checkpoint"]),
         "vocoder": vocoder},
        {"name": "e2-tiny", "architecture": "E2TTS_Base", "architecture_overrides": TINY_UNETT,
         "checkpoint": str(offline_models["e2_checkpoint"]), "vocoder": vocoder},
        {"name": "broken", "checkpoint": "models/nowhere/model.safetensors", "vocoder": vocoder},
    ]


def config_with(tmp_path, offline_models, replicas: int, num_cpus: float) -> dict:
    config = serve_config(tmp_path / "store")
    config["applications"][0]["args"]["models"] = registry(offline_models)
    d = deployments(config)
    # A fixed replica count (the decorator's autoscaling would apply if the config named none).
    d["Synthesizer"]["autoscaling_config"] = {"min_replicas": replicas, "max_replicas": replicas}
    d["Synthesizer"]["ray_actor_options"] = {"num_cpus": num_cpus, "num_gpus": 0}
    d["Synthesizer"]["user_config"] = {"device": "cpu", "cpu_threads": 1, "defaults": {"nfe_step": 2},
                                       "max_models": 1, "preload": []}
    d["Transcriber"]["user_config"].update(model=str(offline_models["whisper"]), device="cpu")
    return config



@pytest.fixture(scope="module")
def cluster(tmp_path_factory, offline_models, short_wav):
    tmp = tmp_path_factory.mktemp("models-serve")
    url = start_serve(config_with(tmp, offline_models, replicas=1, num_cpus=0.5))
    with httpx.Client(base_url=url, timeout=120) as client:
        add_voice(client, "alice", short_wav, SHORT_TEXT)
        yield client, tmp
    stop_serve()


def speak(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/v1/audio/speech", json={"voice": "alice", "input": "Hello there.", "model": model,
                                               "response_format": "pcm", "seed": 1})


def replicas(http: httpx.Client) -> dict[str, dict]:
    return http.get("/v1/status").json()["synthesizer_replicas"]


def totals(records: dict[str, dict], field: str) -> dict[str, int]:
    return {m: sum(r["models"][m][field] for r in records.values()) for m in MODELS}


def test_one_replica_holding_one_model_loads_and_evicts_as_requests_alternate(cluster):
    http, _ = cluster
    made = {}
    for model in MODELS * 2:
        r = speak(http, model)
        assert r.status_code == 200, r.text
        made.setdefault(model, r.content)
        assert r.content == made[model]  # the same model and seed: the same speech after a reload
    assert made["f5-tiny"] != made["e2-tiny"]
    (record,) = replicas(http).values()
    assert record["held"] == ["e2-tiny"]
    assert totals({"one": record}, "loads") == {"f5-tiny": 2, "e2-tiny": 2}
    assert totals({"one": record}, "evictions") == {"f5-tiny": 2, "e2-tiny": 1}


def test_two_replicas_holding_one_model_each_load_each_model_once(cluster, offline_models):
    http, tmp = cluster
    # New actor options: Serve replaces the replica with two fresh ones (no model held, no counts).
    local_cluster.apply(config_with(tmp, offline_models, replicas=2, num_cpus=0.4))
    wait_for_replicas(http, 2)
    # First, each replica holds one of the models. A replica that started just now may not be known
    # to the Ingress's router yet, so these first requests can meet on one replica.
    for _ in range(10):
        records = replicas(http)
        held = [m for r in records.values() for m in r["held"]]
        if len(records) == 2 and sorted(held) == sorted(MODELS):
            break
        for model in MODELS:
            if model not in held:
                assert speak(http, model).status_code == 200
    else:
        pytest.fail(f"the replicas never held one model each: {records}")
    before = {field: totals(records, field) for field in ("loads", "evictions")}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda m: speak(http, m), MODELS * 6))
    assert [a.status_code for a in answers] == [200] * 12
    records = replicas(http)
    assert sorted(r["held"][0] for r in records.values()) == sorted(MODELS)
    # Routed to where each model was warm: the mixed stream loaded and unloaded nothing.
    assert {field: totals(records, field) for field in ("loads", "evictions")} == before

    r = speak(http, "broken")
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "model_unavailable" and "'broken'" in error["message"]
    for model in MODELS:  # the replica that tried stays up, and both models still speak
        assert speak(http, model).status_code == 200


def wait_for_replicas(http: httpx.Client, n: int, timeout_s: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = http.get("/v1/status").json()["deployments"]["Synthesizer"]
        if state["replicas"] == {"RUNNING": n} and state["status"] == "HEALTHY":
            return
        time.sleep(1)
    from ray import serve

    app = serve.status().applications["tts"]
    raise TimeoutError(f"the Synthesizer did not settle on {n} running replicas: {state}; {app.status} {app.message} "
                       f"{app.deployments['Synthesizer']}")

"""The production profile on a machine where the weights cannot be fetched: the service still
starts and answers, and the model endpoints say how to provide weights."""

import httpx
import pytest

from conftest import SHORT_TEXT, deployments, serve_config, start_serve, stop_serve

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    config = serve_config(tmp_path_factory.mktemp("store"))
    cache = str(tmp_path_factory.mktemp("empty-cache"))
    for d in deployments(config).values():
        if "user_config" in d:
            d["user_config"]["cache_dir"] = cache
    # The hub is out of reach, whatever network the test machine has.
    config["applications"][0]["runtime_env"] = {"env_vars": {"HF_HUB_OFFLINE": "1"}}
    with httpx.Client(base_url=start_serve(config), timeout=300) as client:
        yield client
    stop_serve()


def test_service_starts_and_explains_missing_weights(http, short_wav):
    assert http.get("/healthz").status_code == 200
    status = http.get("/v1/status").json()
    assert status["deployments"]["Synthesizer"]["model"] == "F5TTS_v1_Base"

    r = http.post("/v1/audio/speech", json={"voice": "nobody", "input": "Hi."})
    assert r.status_code == 404  # checked before any model is woken

    with open(short_wav, "rb") as f:  # a transcript came with it: no Whisper needed
        r = http.post("/v1/voices", data={"name": "alice", "ref_text": SHORT_TEXT}, files={"file": f})
    assert r.status_code == 201, r.text

    r = http.post("/v1/audio/speech", json={"voice": "alice", "input": "Hello there."})
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "model_unavailable"
    assert "checkpoint" in error["message"] and "config/serve.yaml" in error["message"]

    with open(short_wav, "rb") as f:
        r = http.post("/v1/voices", data={"name": "bob"}, files={"file": f})
    assert r.status_code == 503 and "Whisper" in r.json()["error"]["message"]
    assert http.get("/v1/voices/bob").status_code == 404  # nothing half-written

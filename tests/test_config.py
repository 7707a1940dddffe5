"""The shipped configuration files: valid for Ray, and saying what the product promises."""

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.ray_env import read_ray_env
from deployments.synthesizer import Synthesizer
from deployments.transcriber import Transcriber
from speech_service.config import ServiceSettings, SynthesizerSettings, TranscriberSettings

from conftest import REPO, deployments

PROFILES = ["serve.yaml", "serve.offline.yaml", "serve.offline-s3.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_validate_as_serve_configs_and_settings(profile):
    config = load(profile)
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    assert app["import_path"] == "serve_app:build"
    ServiceSettings.model_validate(app["args"])
    d = deployments(config)
    SynthesizerSettings.model_validate(d["Synthesizer"]["user_config"])
    TranscriberSettings.model_validate(d["Transcriber"]["user_config"])
    for name in ("Synthesizer", "Transcriber"):
        scaling = d[name]["autoscaling_config"]
        # Serve resets a deployment to `initial_replicas` on every config change; it must be absent
        # so a user_config change reconfigures the warm replica instead of stopping it.
        assert scaling["min_replicas"] == 0 and "initial_replicas" not in scaling
        # A request waiting at zero replicas starts one only at its handle's next periodic report
        # (Ray 2.60's immediate report carries queue samples taken before the request): keep it short.
        assert scaling["metrics_interval_s"] <= 1
        assert scaling.get("look_back_period_s", 30) > scaling["metrics_interval_s"]
        assert d[name]["max_queued_requests"] > 0 and d[name]["backpressure_config"]["retry_after_s"] > 0
    assert d["Ingress"]["autoscaling_config"]["min_replicas"] >= 1


def test_production_profile_asks_for_a_gpu_and_the_real_models():
    d = deployments(load("serve.yaml"))
    assert d["Synthesizer"]["ray_actor_options"]["num_gpus"] == 1
    synth = SynthesizerSettings.model_validate(d["Synthesizer"]["user_config"])
    assert synth.architecture == "F5TTS_v1_Base" and synth.checkpoint.startswith("hf://SWivid/F5-TTS/")
    assert synth.device == "auto"
    assert TranscriberSettings.model_validate(d["Transcriber"]["user_config"]).model == "large-v3-turbo"


def test_decorators_agree_with_the_production_profile():
    """`serve.run(serve_app.build({}))` without the YAML keeps the same GPU and scaling shape."""
    assert Synthesizer.ray_actor_options["num_gpus"] == 1
    d = deployments(load("serve.yaml"))
    for deployment in (Synthesizer, Transcriber):
        options = deployment._deployment_config.autoscaling_config
        shipped = d[deployment.name]["autoscaling_config"]
        for key in ("min_replicas", "max_replicas", "target_ongoing_requests", "metrics_interval_s"):
            assert getattr(options, key) == shipped[key], (deployment.name, key)
        assert "initial_replicas" not in options.model_fields_set


def test_cluster_yaml_passes_the_launchers_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert "GPU" not in head.get("resources", {})
    assert workers and all(w["min_workers"] == 0 for w in workers)
    assert any(w["node_config"]["InstanceType"].startswith(("g", "p")) for w in workers)


def test_every_launcher_starts_ray_with_the_data_plane_of_ray_env():
    env = read_ray_env()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "1"
    # The longest non-streamed speech must fit one gRPC message between replicas: 96 KB per second
    # of float32 audio, at one second per character (far slower than any voice).
    longest = ServiceSettings().limits.max_input_chars * 24_000 * 4
    assert int(env["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) >= longest
    assert "include config/ray.env" in (REPO / "Makefile").read_text()
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all(". config/ray.env" in c for c in starts)

"""The shipped configuration files: valid for Ray, and saying what the product promises."""

import pytest
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from deployments.profiles import deployment_options, load_profile, merged, profile_names, write_profile
from deployments.ray_env import read_ray_env
from deployments.synthesizer import Synthesizer
from deployments.transcriber import Transcriber
from speech_service.config import ServiceSettings, SynthesizerSettings, TranscriberSettings

from conftest import REPO, deployments

PROFILES = ["production", "offline", "offline-s3", "cluster"]


def load(name: str) -> dict:
    return load_profile(name)


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


@pytest.mark.parametrize("profile", PROFILES)
def test_jobs_leave_room_for_interactive_speech_and_can_still_scale_the_synthesizer_out(profile):
    config = load(profile)
    jobs = ServiceSettings.model_validate(config["applications"][0]["args"]).jobs
    synthesizer = deployments(config)["Synthesizer"]
    scaling = AutoscalingConfig.model_validate(synthesizer["autoscaling_config"])  # with Serve's defaults
    # Each running job has one Synthesizer call under way. Their number stays under what one
    # Ingress replica may have running and queued at a Synthesizer replica (room is left for
    # interactive speech), and reaches the autoscaling target of every replica it may scale to.
    assert jobs.max_running < synthesizer["max_ongoing_requests"] + synthesizer["max_queued_requests"]
    assert jobs.max_running >= scaling.target_ongoing_requests * scaling.max_replicas


def test_production_profile_asks_for_a_gpu_and_the_real_models():
    config = load("production")
    d = deployments(config)
    gpus = {name: d[name]["ray_actor_options"]["num_gpus"] for name in ("Synthesizer", "Transcriber")}
    assert gpus["Synthesizer"] + gpus["Transcriber"] == 1  # both on one GPU, Whisper off the CPU
    assert gpus["Synthesizer"] > 0.5  # and never two Synthesizers on one
    synth = SynthesizerSettings.model_validate(d["Synthesizer"]["user_config"])
    (model,) = ServiceSettings.model_validate(config["applications"][0]["args"]).models
    assert model.architecture == "F5TTS_v1_Base" and model.checkpoint.startswith("hf://SWivid/F5-TTS/")
    assert synth.device == "auto"
    assert TranscriberSettings.model_validate(d["Transcriber"]["user_config"]).model == "large-v3-turbo"


def test_decorators_agree_with_the_production_profile():
    """`serve.run(serve_app.build({}))` without the YAML keeps the same GPU and scaling shape."""
    assert Synthesizer.ray_actor_options["num_gpus"] == 0.75
    d = deployments(load("production"))
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


def test_profiles_state_only_what_they_change():
    """Each profile file is a change to config/serve.yaml, not a copy of it: nothing in it repeats
    the production value."""
    production = load_profile("production")

    def repeats(change, base, path=""):
        if isinstance(change, dict) and isinstance(base, dict):
            for key, value in change.items():
                if key in base:
                    yield from repeats(value, base[key], f"{path}/{key}")
        elif isinstance(change, list) and isinstance(base, list):
            names = {e.get("name"): e for e in base if isinstance(e, dict)}
            for entry in change:
                if isinstance(entry, dict) and entry.get("name") in names:
                    rest = {k: v for k, v in entry.items() if k != "name"}
                    yield from repeats(rest, names[entry["name"]], f"{path}/{entry['name']}")
        elif change == base:
            yield path

    for name in profile_names():
        change = yaml.safe_load((REPO / "config" / "profiles" / f"{name}.yaml").read_text())
        base = load_profile(change.pop("extends")) if "extends" in change else production
        assert not list(repeats(change, base)), name


def test_merging_rules():
    base = {"a": {"b": 1, "c": 2}, "deployments": [{"name": "X", "n": 1, "m": {"k": 1}}, {"name": "Y", "n": 2}],
            "tags": [1, 2]}
    change = {"a": {"c": None, "d": 4}, "deployments": [{"name": "X", "m": {"j": 2}}, {"name": "Z"}], "tags": [3]}
    assert merged(base, change) == {
        "a": {"b": 1, "d": 4}, "tags": [3],
        "deployments": [{"name": "X", "n": 1, "m": {"k": 1, "j": 2}}, {"name": "Y", "n": 2}, {"name": "Z"}]}
    assert base["a"] == {"b": 1, "c": 2}  # the base is left as it was


def test_written_profiles_are_the_merged_ones(tmp_path):
    for name in profile_names():
        written = yaml.safe_load(write_profile(name, tmp_path / f"serve.{name}.yaml").read_text())
        assert written == load_profile(name)
        ServeDeploySchema.model_validate(written)


def test_the_decorators_take_the_production_profile_options():
    assert deployment_options("Synthesizer")["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.75}
    assert Transcriber._deployment_config.max_ongoing_requests == deployments(load("production"))["Transcriber"][
        "max_ongoing_requests"]


@pytest.mark.parametrize("profile", PROFILES)
def test_sockets_are_never_cut_by_serve_and_leave_the_ingress_room_for_http(profile):
    """A live socket is one long request to Serve: `http_options.request_timeout_s` would cancel it
    mid-conversation (our `limits.request_timeout_s` bounds each model call instead), and each open
    socket holds one of its Ingress replica's `max_ongoing_requests` slots for its whole life."""
    config = load(profile)
    assert ServeDeploySchema.model_validate(config).http_options.request_timeout_s is None
    assert "request_timeout_s" not in (config.get("http_options") or {})
    limits = ServiceSettings.model_validate(config["applications"][0]["args"]).limits
    ingress = deployments(config)["Ingress"]
    target = AutoscalingConfig.model_validate(ingress["autoscaling_config"]).target_ongoing_requests
    http_slots = ingress["max_ongoing_requests"] - limits.max_sockets
    assert 0 < limits.max_sockets and http_slots >= max(target, ingress["max_ongoing_requests"] / 4)
    # The sockets' pieces, all at once, leave room in one Synthesizer replica's queue for HTTP speech.
    synthesizer = deployments(config)["Synthesizer"]
    assert limits.max_live_pieces <= (synthesizer["max_ongoing_requests"] + synthesizer["max_queued_requests"]) / 2

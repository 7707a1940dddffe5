"""The cluster profile: config/serve.yaml plus placement, the S3 store and mirrored weights, and a
cluster.yaml whose head alone carries the resource the CPU deployments ask for."""

import copy

import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.profiles import load_profile
from speech_service.config import ServiceSettings, SynthesizerSettings, TranscriberSettings

from conftest import REPO, deployments

CPU_POOL = "cpu_pool"


def load(path: str) -> dict:
    profile = path.removeprefix("config/")
    if profile == "serve.yaml":
        return load_profile("production")
    if profile.startswith("serve."):
        return load_profile(profile.removeprefix("serve.").removesuffix(".yaml"))
    return yaml.safe_load((REPO / path).read_text())


def test_cluster_profile_is_the_production_profile_plus_placement_store_and_mirror():
    single, cluster = load("config/serve.yaml"), load("config/serve.cluster.yaml")
    ServeDeploySchema.model_validate(cluster)
    args = cluster["applications"][0]["args"]
    assert ServiceSettings.model_validate(args).store.kind == "s3"
    d = deployments(cluster)
    SynthesizerSettings.model_validate(d["Synthesizer"]["user_config"])
    (model,) = ServiceSettings.model_validate(args).models
    assert model.checkpoint.startswith("s3://") and model.vocoder.startswith("s3://")
    TranscriberSettings.model_validate(d["Transcriber"]["user_config"])

    expected = copy.deepcopy(single)  # every other setting stays as the single-machine profile has it
    expected["applications"][0]["args"]["store"] = args["store"]
    # Waits long enough for the autoscaler to boot a GPU node (a scale-up from zero is not refused).
    for field in ("request_timeout_s", "capacity_wait_s"):
        expected["applications"][0]["args"]["limits"][field] = args["limits"][field]
    expected["applications"][0]["args"]["models"] = args["models"]  # the weights: from the mirror
    e = deployments(expected)
    for name in ("Ingress", "Transcriber"):
        e[name]["ray_actor_options"]["resources"] = {CPU_POOL: 1}
    e["Transcriber"]["ray_actor_options"]["num_gpus"] = 0  # on the CPU head, not a GPU's share
    assert cluster == expected, ("config/profiles/cluster.yaml changes more than placement, store and weights")


def test_cpu_deployments_ask_for_the_resource_only_the_cpu_head_has():
    d = deployments(load("config/serve.cluster.yaml"))
    for name in ("Ingress", "Transcriber"):
        options = d[name]["ray_actor_options"]
        assert options["resources"][CPU_POOL] > 0 and not options.get("num_gpus")
    assert CPU_POOL not in d["Synthesizer"]["ray_actor_options"].get("resources", {})
    assert d["Synthesizer"]["ray_actor_options"]["num_gpus"] > 0.5  # one Synthesizer per GPU

    launcher = load("cluster.yaml")
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert types[head]["resources"][CPU_POOL] >= sum(
        d[name]["autoscaling_config"]["max_replicas"] * d[name]["ray_actor_options"]["resources"][CPU_POOL]
        for name in ("Ingress", "Transcriber"))
    assert all(CPU_POOL not in t.get("resources", {}) for name, t in types.items() if name != head)


def test_single_machine_profile_needs_no_custom_resource():
    for profile in ("config/serve.yaml", "config/serve.offline.yaml"):
        for d in deployments(load(profile)).values():
            assert not d["ray_actor_options"].get("resources"), (profile, d["name"])

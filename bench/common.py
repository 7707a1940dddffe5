"""Shared by the benchmarks: which machine the numbers come from, percentiles, result files, and
the offline profile deployed on a local Ray cluster of the benchmark's own."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def machine(device: str = "cpu") -> str:
    """A file-name-safe device tag, e.g. `cpu-2core-x86_64` or `cuda-nvidia-h100-80gb-hbm3`."""
    if device.startswith("cuda"):
        import torch

        return "cuda-" + torch.cuda.get_device_name().lower().replace(" ", "-")
    return f"cpu-{os.cpu_count()}core-{platform.machine()}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(percentile(values, 50), 4), "p95": round(percentile(values, 95), 4),
            "min": round(min(values), 4), "max": round(max(values), 4)}


def write_result(name: str, result: dict, markdown: str | None = None, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if markdown is not None:
        path.with_suffix(".md").write_text(markdown)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_config(models: dict[str, Path], store: Path, port: int, synth_threads: int | None) -> dict:
    """The offline profile with the given models, store and port; model replicas go back to
    zero a few seconds after their last request, so each cold start can be measured from zero."""
    from deployments.profiles import load_profile
    from speech_service.provenance.development import write_signer

    config = load_profile("offline")
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"]["store"] = {"kind": "local", "path": str(store)}
    signer = store.parent / "signer"  # the profile's development signer, beside the store
    write_signer(signer)
    app["args"]["provenance"].update(certificate_chain=str(signer / "chain.pem"), private_key=str(signer / "key.pem"),
                                     trust_anchors=str(signer / "ca.pem"))
    weights = {"f5-tiny": models["checkpoint"], "e2-tiny": models.get("e2_checkpoint")}
    for spec in app["args"]["models"]:  # the profile's registry, on the files `prepare` wrote
        if weights.get(spec["name"]):
            spec.update(checkpoint=str(weights[spec["name"]]), vocoder=str(models["vocoder"]))
    for d in app["deployments"]:
        if d["name"] == "Synthesizer" and synth_threads:
            d["user_config"]["cpu_threads"] = synth_threads
        if d["name"] == "Transcriber":
            d["user_config"]["model"] = str(models["whisper"])
        if d["name"] in ("Synthesizer", "Transcriber"):
            d["autoscaling_config"].update(upscale_delay_s=0, downscale_delay_s=2, downscale_to_zero_delay_s=10,
                                           look_back_period_s=2)
    return config


def start_service(config: dict) -> str:
    """A Ray cluster of our own with the application deployed as `serve run` would; its base URL."""
    from deployments import local_cluster

    return local_cluster.deploy(config, num_cpus=os.cpu_count(), num_gpus=0)


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve

    return serve.status().applications[app].deployments[deployment].replica_states.get("RUNNING", 0)


def stop_service() -> None:
    from deployments import local_cluster

    local_cluster.shutdown()


def run_measured(args, run, name: str, markdown, threads: int | None = None, warm: bool = False) -> Path:
    """`run(args)` (a coroutine function) against `args.url`, or with `args.offline` against the offline
    profile started here for it (`warm`: its model replicas kept up between levels, so no cold start is
    measured); the result written as `args.name` or `<machine>-<name>`."""
    import asyncio
    import tempfile

    if args.offline:
        from speech_service.weights.offline import prepare

        with tempfile.TemporaryDirectory() as tmp:
            config = offline_config(prepare(args.models_dir), Path(tmp) / "store", free_port(), threads)
            for d in config["applications"][0]["deployments"] if warm else []:
                if d["name"] != "Ingress":
                    d["autoscaling_config"].update(downscale_delay_s=600, downscale_to_zero_delay_s=600)
            args.url = start_service(config)
            try:
                result = asyncio.run(run(args))
            finally:
                stop_service()
        result["url"] = "offline profile (config/serve.offline.yaml) on this machine"
    else:
        result = asyncio.run(run(args))
    path = write_result(args.name or f"{machine()}-{name}", result, markdown(result))
    print(path.with_suffix(".md").read_text())
    return path

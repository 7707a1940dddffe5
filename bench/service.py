"""Cold start, memory at rest and per-request overhead of the service, offline profile (tiny models).

    python bench/service.py --runs 3 --overhead-runs 20 --threads 1

Deploys config/serve.offline.yaml on a local Ray cluster of its own, with model replicas that go
back to zero a few seconds after their last request, then:
(a) cold starts, each from zero replicas: an upload without a transcript (Transcriber from zero to
    a transcribed upload) and a streamed speech request (Synthesizer from zero to its first audio
    byte), with the phases each replica recorded (read from GET /v1/status) and the client's time
    outside them (before the replica's process starts, routing, the request's own work);
(b) the resident memory (RSS and USS) of both replicas at rest after serving;
(c) the median of a speech request through the service against `SynthesisEngine` called directly
    in this process, at concurrency 1 with the same number of torch threads, alternating.
Writes bench/results/<machine>-service.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO,
    free_port,
    machine,
    offline_config,
    running_replicas,
    start_service,
    stop_service,
    summary,
    write_result,
)
from deployments.ray_env import read_ray_env

APP = "tts"
REF_TEXT = "The quick brown fox jumps over the lazy dog."
SPEECH = "Good morning. This is a short test of the service."


def wait_until_idle(timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if running_replicas(APP, "Synthesizer") == 0 and running_replicas(APP, "Transcriber") == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("the model replicas did not go back to zero")


def upload(http: httpx.Client, wav: Path, name: str) -> float:
    start = time.perf_counter()
    with open(wav, "rb") as f:
        r = http.post("/v1/voices", data={"name": name, "overwrite": "true"},
                      files={"file": ("ref.wav", f, "audio/wav")})
    r.raise_for_status()
    assert r.json()["ref_text_source"] == "asr"
    return time.perf_counter() - start


def first_audio(http: httpx.Client, voice: str) -> tuple[float, float]:
    """Seconds to the first audio byte and to the end of a streamed speech response."""
    body = {"voice": voice, "input": SPEECH, "response_format": "pcm", "stream": True, "seed": 0}
    start = time.perf_counter()
    first = None
    with http.stream("POST", "/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


def cold_starts(http: httpx.Client, wav: Path, runs: int) -> list[dict]:
    results = []
    seen: set[str] = set()
    for run in range(runs):
        wait_until_idle()
        transcriber_s = upload(http, wav, f"bench{run}")  # the Transcriber starts from zero
        # Warm right after its cold start: a slow Synthesizer start could outlast the Transcriber's
        # short downscale_to_zero_delay_s and turn a later "warm" upload into another cold start.
        warm_upload_s = upload(http, wav, f"bench{run}")
        ttfa_s, total_s = first_audio(http, f"bench{run}")  # the Synthesizer starts from zero
        warm_ttfa_s, _ = first_audio(http, f"bench{run}")
        records = http.get("/v1/status").json()["cold_starts"]
        replicas = {name: rec["replica"] for name, rec in records.items()}
        assert not set(replicas.values()) & seen, "a record of an earlier start: the replica did not restart"
        seen |= set(replicas.values())
        # What the client waited beyond the replica's own start: the scale-up decision before the
        # process starts, routing, and the request's own work once the replica is ready.
        outside = {"Transcriber": transcriber_s, "Synthesizer": ttfa_s}
        outside = {name: round(seconds - records[name]["total_s"], 3)
                   for name, seconds in outside.items() if name in records}
        results.append({
            "transcriber_zero_to_transcribed_upload_s": round(transcriber_s, 3),
            "transcriber_warm_upload_s": round(warm_upload_s, 3),
            "synthesizer_zero_to_first_audio_s": round(ttfa_s, 3),
            "synthesizer_zero_to_last_audio_s": round(total_s, 3),
            "synthesizer_warm_first_audio_s": round(warm_ttfa_s, 3),
            "outside_replica_start_s": outside,
            "replica_records": records,
        })
        print(f"run {run}: transcriber {transcriber_s:.2f} s, synthesizer first audio {ttfa_s:.2f} s; phases "
              + "; ".join(f"{name} {rec['phases']}" for name, rec in records.items()), flush=True)
    return results


def memory_at_rest(http: httpx.Client, wav: Path, rest_s: float = 2.0) -> dict:
    import psutil
    from ray import serve

    upload(http, wav, "bench-rss")
    first_audio(http, "bench-rss")
    # The replicas that served, asked after serving: one asked before might be on its way to zero.
    pids = {"Synthesizer": serve.get_deployment_handle("Synthesizer", APP).info.remote().result()["pid"],
            "Transcriber": serve.get_deployment_handle("Transcriber", APP).stats.remote().result()["pid"]}
    time.sleep(rest_s)  # well inside the replicas' downscale delay
    memory = {}
    for name, pid in pids.items():
        info = psutil.Process(pid).memory_full_info()
        memory[name] = {"rss_gb": round(info.rss / 1e9, 3), "uss_gb": round(info.uss / 1e9, 3)}
    return memory


def overhead(http: httpx.Client, config: dict, threads: int, runs: int, nfe: int | None = None,
             fmt: str = "pcm") -> dict:
    """Service p50 against the engine in this process, same voice (its clip prepared once on both
    sides), text, seed and thread count; the service also encodes `fmt`, the engine nothing."""
    import io

    import soundfile as sf
    import torch
    from ray import serve

    from speech_service.audio.seams import join
    from speech_service.config import ServiceSettings, SynthesisOptions, SynthesizerSettings
    from speech_service.models import ModelRegistry
    from speech_service.references import Reference
    from speech_service.synthesis.engine import SynthesisEngine, cross_fade_samples

    deployments = config["applications"][0]["deployments"]
    user_config = next(d for d in deployments if d["name"] == "Synthesizer")["user_config"]
    settings = SynthesizerSettings.model_validate({**user_config, "cpu_threads": threads})
    models = ModelRegistry.of(ServiceSettings.model_validate(config["applications"][0]["args"]))
    spec = models.specs[models.default]  # what the service speaks the voice with
    engine = SynthesisEngine.load(settings, spec=settings.weights_of(spec, default=True))
    torch.set_num_threads(threads)
    voice = http.get("/v1/voices/bench-rss").json()
    reference, _ = sf.read(io.BytesIO(http.get("/v1/voices/bench-rss/audio").content), dtype="float32")
    clip = engine.prepare(reference)  # prepared once, as the service's replica keeps it
    nfe = nfe or user_config["defaults"]["nfe_step"]
    body = {"voice": "bench-rss", "input": SPEECH, "response_format": fmt, "seed": 0, "nfe_step": nfe}

    samples = []
    # Each side's model calls (the replica's from its Server-Timing header), seconds: the time
    # outside them is what each side adds, free of how fast either process happens to compute.
    service_model_s, engine_model_s = [], []

    def service() -> float:
        start = time.perf_counter()
        r = http.post("/v1/audio/speech", json=body)
        took = time.perf_counter() - start
        r.raise_for_status()
        service_model_s.append(server_timing_ms(r.headers["server-timing"])["model"] / 1000)
        return took

    def direct() -> float:
        """`engine.synthesize`, step by step, to time its model call as the replica times its own."""
        start = time.perf_counter()
        items = engine.items(clip, voice["ref_text"], SPEECH, SynthesisOptions(nfe_step=nfe, seed=0))
        model_start = time.perf_counter()
        waves = engine.synthesize_batch(items)
        engine_model_s.append(time.perf_counter() - model_start)
        samples.append(len(join(waves, cross_fade_samples(items))))
        return time.perf_counter() - start

    synthesizer = serve.get_deployment_handle("Synthesizer", APP)
    # its clip is cached there, prepared for the model the service speaks it with
    reference = Reference("bench-rss", voice["sha256"], voice["ref_text"], model=models.default)

    def handle() -> float:
        """The replica's side alone: the same synthesis through a handle call from here."""
        start = time.perf_counter()
        synthesizer.synthesize.remote(reference, SPEECH, SynthesisOptions(nfe_step=nfe, seed=0)).result()
        return time.perf_counter() - start

    service(), direct(), handle()  # warm-up, not counted
    del service_model_s[:], engine_model_s[:]
    service_s, engine_s, handle_s = [], [], []
    for i in range(runs):  # in turn, each first in turn, so a drift in the machine's speed cancels out
        order = [(service, service_s), (direct, engine_s), (handle, handle_s)]
        for run, times in order[i % 3:] + order[:i % 3]:
            times.append(run())
    paired = sorted(1000 * (a - b) for a, b in zip(service_s, engine_s, strict=True))
    ingress = sorted(1000 * (a - b) for a, b in zip(service_s, handle_s, strict=True))
    audio_s = samples[-1] / 24000
    service_outside = [1000 * (t - m) for t, m in zip(service_s, service_model_s, strict=True)]
    engine_outside = [1000 * (t - m) for t, m in zip(engine_s, engine_model_s, strict=True)]
    return {"threads": threads, "nfe_step": nfe, "format": fmt, "audio_s": round(audio_s, 3),
            "service_s": summary(service_s), "engine_s": summary(engine_s),
            "p50_difference_ms": round(1000 * (statistics.median(service_s) - statistics.median(engine_s)), 1),
            "paired_difference_p50_ms": round(statistics.median(paired), 1),
            "paired_difference_p50_ci95_ms": median_ci95(paired),
            # The same comparison outside the model calls: the replica's and this process's
            # compute speeds (which differ by a few per cent from one process to the next) drop out.
            "outside_model_p50_ms": {"service": round(statistics.median(service_outside), 1),
                                     "engine": round(statistics.median(engine_outside), 1)},
            "outside_model_difference_ms": round(statistics.median(service_outside)
                                                 - statistics.median(engine_outside), 1),
            "model_p50_s": {"service": round(statistics.median(service_model_s), 4),
                            "engine": round(statistics.median(engine_model_s), 4)},
            # HTTP, HAProxy or Serve's proxy, and the Ingress: service minus the handle call to the replica
            "http_and_ingress_p50_ms": round(statistics.median(ingress), 1),
            "replica_through_handle_s": summary(handle_s),
            "serve_floor_ms": serve_floor(http, runs=max(runs, 30))}


def server_timing_ms(header: str) -> dict[str, float]:
    entries = (entry.strip().split(";dur=") for entry in header.split(","))
    return {name: float(ms) for name, ms in entries}


def median_ci95(ordered: list[float]) -> list[float]:
    """A distribution-free 95 % confidence interval of the median of `ordered` (sorted): the order
    statistics the binomial(n, 1/2) places 1.96 standard deviations either side of the middle."""
    n = len(ordered)
    k = max(0, int(n / 2 - 1.96 * n ** 0.5 / 2))
    return [round(ordered[k], 1), round(ordered[n - 1 - k], 1)]


def serve_floor(http: httpx.Client, runs: int) -> dict:
    """What Ray Serve's two hops cost with no work behind them: an HTTP request to the Ingress
    (`/healthz`, through HAProxy or Serve's proxy), and a handle call to the Synthesizer replica (`info`)."""
    from ray import serve

    synthesizer = serve.get_deployment_handle("Synthesizer", APP)

    def p50_ms(call) -> float:
        took = []
        for _ in range(runs + 2):
            start = time.perf_counter()
            call()
            took.append(time.perf_counter() - start)
        return round(1000 * statistics.median(took[2:]), 1)

    return {"http_to_ingress": p50_ms(lambda: http.get("/healthz").raise_for_status()),
            "handle_to_synthesizer": p50_ms(lambda: synthesizer.info.remote().result())}


def outside(run: dict, deployment: str) -> str:
    seconds = run.get("outside_replica_start_s", {}).get(deployment)
    return "" if seconds is None else f"{seconds:.2f}"


def markdown(result: dict) -> str:
    ray_env = ", ".join(f"`{k}={v}`" for k, v in (result.get("ray_env") or {}).items() if v)
    lines = [f"# Service benchmark on {result['machine']}", "",
             f"Load average at start {result['load_average_at_start']}, at end {result['load_average_at_end']} "
             "(other work shared the machine).", "",
             "Offline profile (tiny F5 DiT, tiny Vocos, Whisper base); seconds measured by the client.", "",
             f"Ray started with: {ray_env or 'Serve defaults'}.", ""]
    if result["cold_starts"]:
        lines += ["| run | Transcriber: zero to transcribed upload | warm upload | Synthesizer: zero to first audio "
                  "| warm first audio | Synthesizer phases (replica's record) | Transcriber phases "
                  "| outside the replica's start: Transcriber / Synthesizer |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, run in enumerate(result["cold_starts"]):
        phases = {n: ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
                  for n, r in run["replica_records"].items()}
        lines.append(f"| {i} | {run['transcriber_zero_to_transcribed_upload_s']:.2f} | "
                     f"{run['transcriber_warm_upload_s']:.2f} | {run['synthesizer_zero_to_first_audio_s']:.2f} | "
                     f"{run['synthesizer_warm_first_audio_s']:.2f} | {phases.get('Synthesizer', '')} | "
                     f"{phases.get('Transcriber', '')} | {outside(run, 'Transcriber')} / "
                     f"{outside(run, 'Synthesizer')} |")
    lines += ["", "| replica | RSS at rest (GB) | USS (GB) |", "| --- | --- | --- |"]
    lines += [f"| {n} | {m['rss_gb']} | {m['uss_gb']} |" for n, m in result["memory_at_rest"].items()]
    for o in result["overheads"] if "overheads" in result else [result["overhead"]]:  # older files hold one
        lines += ["", f"Concurrency 1, {o['threads']} torch thread(s), NFE {o['nfe_step']}, {o['audio_s']} s of audio:",
                  "", "| path | p50 (s) | p95 (s) | n |", "| --- | --- | --- | --- |",
                  f"| service (HTTP, {o.get('format', 'pcm')}) | {o['service_s']['p50']} | {o['service_s']['p95']} "
                  f"| {o['service_s']['n']} |",
                  f"| engine, direct | {o['engine_s']['p50']} | {o['engine_s']['p95']} | {o['engine_s']['n']} |",
                  *([f"| Synthesizer replica through a handle call | {h['p50']} | {h['p95']} | {h['n']} |"]
                    if (h := o.get("replica_through_handle_s")) else []),
                  "", f"p50 difference: {o['p50_difference_ms']} ms; median of the paired differences: "
                  f"{o.get('paired_difference_p50_ms')} ms"
                  + (" (95 % interval {} to {} ms).".format(*o["paired_difference_p50_ci95_ms"])
                     if "paired_difference_p50_ci95_ms" in o else "."), ""]
        if outside_model := o.get("outside_model_p50_ms"):
            lines += [f"Outside the model calls (the replica's own, from its Server-Timing header; the "
                      f"engine's timed around its `synthesize_batch`), p50: service "
                      f"{outside_model['service']} ms, engine {outside_model['engine']} ms; difference "
                      f"{o['outside_model_difference_ms']} ms. The model calls themselves, p50: replica "
                      f"{o['model_p50_s']['service']} s, this process {o['model_p50_s']['engine']} s.", ""]
        if "http_and_ingress_p50_ms" in o:
            lines += [f"HTTP and the Ingress (service minus the handle call, paired median): "
                      f"{o['http_and_ingress_p50_ms']} ms.", ""]
        if floor := o.get("serve_floor_ms"):
            lines += [f"Ray Serve's hops with no work behind them (p50): HTTP to the Ingress (`/healthz`) "
                      f"{floor['http_to_ingress']} ms, a handle call to the Synthesizer replica "
                      f"{floor['handle_to_synthesizer']} ms.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--overhead-runs", type=int, default=20)
    parser.add_argument("--overhead-nfe", type=int, nargs="+", default=[None],
                        help="NFE steps of the overhead requests (default: the profile's); a small one "
                             "leaves less model time to blur the fixed cost")
    parser.add_argument("--overhead-format", default="pcm", help="response_format of the overhead requests "
                        "(the service encodes it, the engine returns samples)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, service and engine alike")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "offline")
    parser.add_argument("--name", help="result file name (default <machine>-service)")
    args = parser.parse_args()

    from speech_service.weights.offline import prepare

    models = prepare(args.models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "ref.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), REF_TEXT], check=True)
        config = offline_config(models, Path(tmp) / "store", free_port(), args.threads)
        base = start_service(config)
        try:
            with httpx.Client(base_url=base, timeout=300) as http:
                # Serve's data plane as Ray was started (config/ray.env unless overridden).
                ray_env = {key: os.environ.get(key) for key in read_ray_env()}
                result = {"machine": machine(), "ray_env": ray_env, "load_average_at_start": os.getloadavg(),
                          "cold_starts": cold_starts(http, wav, args.runs),
                          "memory_at_rest": memory_at_rest(http, wav),
                          "overheads": [overhead(http, config, args.threads, args.overhead_runs, nfe,
                                                 args.overhead_format)
                                        for nfe in args.overhead_nfe if args.overhead_runs > 0]}
        finally:
            stop_service()
    runs = result["cold_starts"]
    result["load_average_at_end"] = os.getloadavg()
    if runs:
        result["cold_start_summary_s"] = {
            key: summary([r[key] for r in runs])
            for key in ("transcriber_zero_to_transcribed_upload_s", "synthesizer_zero_to_first_audio_s")}
    path = write_result(args.name or f"{result['machine']}-service", result, markdown(result))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

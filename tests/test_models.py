"""Many models on one Synthesizer replica, in process: two tiny checkpoints of different
architectures (an F5 DiT and an E2 UNet-Transformer, every parameter random) from the registry,
loaded on demand, the least recently used unloaded, a model that cannot load refused by name."""

import asyncio
import gc
import time
import weakref

import numpy as np
import pytest
from fastapi.testclient import TestClient

from speech_service import audio
from speech_service.config import LimitSettings, ServiceSettings, SynthesisOptions, SynthesizerSettings
from speech_service.errors import ModelUnavailable
from speech_service.http.app import create_app
from speech_service.models import ModelRegistry, ModelSpec
from speech_service.references import Reference
from speech_service.service.model_calls import ModelBackends, ModelCalls
from speech_service.storage.voices import sha256
from speech_service.synthesis.engine import SynthesisEngine
from speech_service.synthesis.replica import SynthesisReplica, load_engine
from speech_service.transcription.replica import TranscriptionReplica
from speech_service.weights.offline import TINY_DIT, TINY_UNETT

from conftest import SHORT_TEXT, ThreadedTranscriber, add_voice, decode_file

TEXT = "The quick brown fox jumps over the lazy dog."
# Each test loads models (seconds each): in `make test`, not the minute loop. The registry's own
# rules (the last test) stay in it.
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def specs(offline_models) -> list[ModelSpec]:
    vocoder = str(offline_models["vocoder"])
    return [
        ModelSpec(name="f5-tiny", aliases=["f5"], architecture_overrides=TINY_DIT, vocoder=vocoder,
                  checkpoint=str(offline_models["checkpoint"])),
        ModelSpec(name="e2-tiny", architecture="E2TTS_Base", architecture_overrides=TINY_UNETT, vocoder=vocoder,
                  checkpoint=str(offline_models["e2_checkpoint"]), languages=["en"], defaults={"nfe_step": 6}),
        ModelSpec(name="broken", checkpoint="models/nowhere/model.safetensors", vocoder=vocoder),
    ]


@pytest.fixture(scope="module")
def settings(synth_settings) -> SynthesizerSettings:
    """The replica's own settings, without the older single-model weight fields."""
    return SynthesizerSettings(device="cpu", defaults={"nfe_step": 4}, cache_dir=synth_settings.cache_dir)


class CountingLoader:
    def __init__(self):
        self.loaded: list[str] = []

    def __call__(self, settings, spec, clock):
        self.loaded.append(spec.name)
        return load_engine(settings, spec, clock)


def replica(specs, settings, **changes) -> tuple[SynthesisReplica, CountingLoader]:
    loader = CountingLoader()
    r = SynthesisReplica(ModelRegistry(specs, "f5-tiny", ["tts-1"]), loader=loader)
    r.reconfigure(settings.model_copy(update={"preload": [], **changes}))
    return r, loader


@pytest.fixture(scope="module")
def voice(short_wav) -> Reference:
    wav = audio.encoding.to_wav_bytes(decode_file(short_wav))
    return Reference("alice", sha256(wav), SHORT_TEXT, wav)


def spoken(r: SynthesisReplica, voice: Reference, model: str, seed: int = 5) -> np.ndarray:
    from dataclasses import replace

    speech = asyncio.run(r.synthesize(replace(voice, model=model), TEXT, SynthesisOptions(seed=seed)))
    assert not isinstance(speech, Exception), speech
    return speech.wave


def solo(settings, spec, voice, seed: int = 5) -> np.ndarray:
    """The model alone, loaded by itself: what a request for it must equal."""
    engine = SynthesisEngine.load(settings.model_copy(update={"cpu_threads": 1}), None, spec)
    engine.defaults = spec.defaults.over(settings.defaults)
    return engine.synthesize(audio.read_wav_bytes(voice.wav), voice.ref_text, TEXT, SynthesisOptions(seed=seed))


@slow
def test_each_model_speaks_as_it_does_alone_and_the_two_differ(specs, settings, voice):
    r, loader = replica(specs, settings, max_models=2)
    f5, e2 = spoken(r, voice, "f5-tiny"), spoken(r, voice, "e2-tiny")
    assert loader.loaded == ["f5-tiny", "e2-tiny"] and r.models.held() == ["f5-tiny", "e2-tiny"]
    for wave, spec in ((f5, specs[0]), (e2, specs[1])):
        alone = solo(settings, spec, voice)
        assert len(wave) == len(alone) and np.abs(wave - alone).max() < 1 / 32767
    n = min(len(f5), len(e2))
    assert np.abs(f5[:n] - e2[:n]).mean() > 1e-3  # different models, different speech
    # The E2 model's own default (nfe_step 6) applied over the replica's (4); F5 keeps the replica's.
    engines = dict(r.models.held_engines())
    assert engines["e2-tiny"].resolve(None).nfe_step == 6 and engines["f5-tiny"].resolve(None).nfe_step == 4
    # Each model prepared the clip with its own front end: two caches, one clip each.
    assert engines["f5-tiny"].clips.prepared == 1 and engines["e2-tiny"].clips.prepared == 1


@slow
def test_one_model_at_a_time_loads_and_evicts_and_frees_the_old_one(specs, settings, voice):
    r, loader = replica(specs, settings, max_models=1)
    spoken(r, voice, "f5-tiny")
    first = weakref.ref(dict(r.models.held_engines())["f5-tiny"])
    for model in ("e2-tiny", "f5-tiny", "e2-tiny"):
        spoken(r, voice, model)
        assert r.models.held() == [model]
    assert loader.loaded == ["f5-tiny", "e2-tiny", "f5-tiny", "e2-tiny"]
    stats = r.models.stats()
    assert (stats["f5-tiny"]["loads"], stats["f5-tiny"]["evictions"]) == (2, 2)
    assert (stats["e2-tiny"]["loads"], stats["e2-tiny"]["evictions"]) == (2, 1)
    assert stats["f5-tiny"]["load_s"] > 0 and stats["e2-tiny"]["requests"] == 2
    gc.collect()
    assert first() is None  # nothing keeps an unloaded model's weights alive
    # A held model is not loaded again, and asking for it makes it the most recently used.
    r.reconfigure(settings.model_copy(update={"preload": [], "max_models": 2}))
    spoken(r, voice, "f5-tiny")
    spoken(r, voice, "e2-tiny")
    assert r.models.held() == ["f5-tiny", "e2-tiny"] and loader.loaded.count("e2-tiny") == 2
    r.reconfigure(settings.model_copy(update={"preload": [], "max_models": 1}))  # live: the LRU goes
    assert r.models.held() == ["e2-tiny"]


@slow
def test_a_model_that_cannot_load_is_refused_by_name_and_the_others_keep_working(specs, settings, voice):
    from dataclasses import replace

    failed: list[str] = []
    r = SynthesisReplica(ModelRegistry(specs, "f5-tiny", ["tts-1"]),
                         on_load=lambda name, seconds, ok: ok or failed.append(name))
    r.reconfigure(settings.model_copy(update={"preload": [], "max_models": 1}))
    spoken(r, voice, "f5-tiny")
    with pytest.raises(ModelUnavailable) as err:
        asyncio.run(r.synthesize(replace(voice, model="broken"), TEXT, SynthesisOptions()))
    assert "'broken'" in err.value.message and "checkpoint" in err.value.message
    # Its files are looked for before anything is unloaded: the model held stays, though the replica
    # holds at most one.
    assert r.models.held() == ["f5-tiny"] and r.models.stats()["f5-tiny"]["evictions"] == 0
    with pytest.raises(ModelUnavailable):  # refused at once within load_retry_s: no second load
        r.plan(replace(voice, model="broken"), TEXT, SynthesisOptions())
    assert failed == ["broken"]
    assert r.models.stats()["broken"]["load_error"] == err.value.message
    assert len(spoken(r, voice, "f5-tiny")) > 0 and r.models.stats()["f5-tiny"]["loads"] == 1
    r.reconfigure(settings.model_copy(update={"preload": [], "max_models": 1, "load_retry_s": 0}))
    with pytest.raises(ModelUnavailable):  # tried again once the wait is over
        r.plan(replace(voice, model="broken"), TEXT, SynthesisOptions())
    assert failed == ["broken", "broken"] and r.models.held() == ["f5-tiny"]


@slow
def test_one_model_call_holds_segments_of_one_model(specs, settings, voice):
    r, _ = replica(specs, settings, max_models=2)
    spoken(r, voice, "f5-tiny")
    spoken(r, voice, "e2-tiny")
    calls: list[str] = []
    for name, engine in r.models.held_engines():
        real = engine.synthesize_batch

        def recorded(items, name=name, real=real, engine=engine):
            own = {id(clip) for clip in engine.clips._clips.values()}  # the clips this model prepared
            assert all(id(item.clip) in own for item in items), f"another model's segment reached {name}"
            calls.append(name)
            return real(items)

        engine.synthesize_batch = recorded
    from dataclasses import replace

    async def together():
        return await asyncio.gather(*(r.synthesize(replace(voice, model=m), TEXT, SynthesisOptions(seed=i))
                                      for i, m in enumerate(["f5-tiny", "e2-tiny"] * 3)))

    waves = asyncio.run(together())
    assert all(len(w.wave) > 0 for w in waves)
    assert len(calls) < 6  # batched: fewer calls than requests, each of one model
    assert set(calls) == {"f5-tiny", "e2-tiny"}


@pytest.fixture(scope="module")
def http(specs, settings, whisper, whisper_settings, tmp_path_factory):
    """The app over the replica classes, with the registry in its settings."""
    synthesis, _ = replica(specs, settings, max_models=2)
    transcription = TranscriptionReplica(loader=lambda s, clock: whisper)
    transcription.reconfigure(whisper_settings)
    service = ServiceSettings(store={"path": str(tmp_path_factory.mktemp("store"))},
                              models=specs, accepted_models=["tts-1", "f5-tts"])
    backends = ModelBackends(synthesis, ThreadedTranscriber(transcription), ModelCalls(LimitSettings()))
    with TestClient(create_app(service, backends)) as client:
        yield client


def pcm(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<i2").astype(np.float32) / 32767


@slow
def test_requests_jobs_and_voices_pick_their_model(http, short_wav):
    add_voice(http, "alice", short_wav, SHORT_TEXT)
    body = {"voice": "alice", "input": TEXT, "response_format": "pcm", "seed": 3}
    f5 = pcm(http.post("/v1/audio/speech", json={**body, "model": "f5-tiny"}))
    e2 = pcm(http.post("/v1/audio/speech", json={**body, "model": "e2-tiny"}))
    assert np.array_equal(pcm(http.post("/v1/audio/speech", json={**body, "model": "tts-1"})), f5)  # the default
    assert np.array_equal(pcm(http.post("/v1/audio/speech", json={**body, "model": "f5"})), f5)  # an alias
    n = min(len(f5), len(e2))
    assert np.abs(f5[:n] - e2[:n]).mean() > 1e-3

    job = http.post("/v1/jobs", json={**body, "model": "e2-tiny"}).json()
    deadline = time.monotonic() + 120
    while (state := http.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state["status"] == "succeeded", state
    made = pcm(http.get(f"/v1/jobs/{job['id']}/audio"))
    assert len(made) == len(e2) and np.abs(made - e2).max() <= 1 / 32767

    # A voice spoken with E2 by default: generic names follow it, a named model still wins.
    r = http.patch("/v1/voices/alice", json={"model": "e2-tiny"})
    assert r.status_code == 200 and r.json()["model"] == "e2-tiny" and r.json()["ref_text"] == SHORT_TEXT
    assert np.array_equal(pcm(http.post("/v1/audio/speech", json={**body, "model": "tts-1"})), e2)
    assert np.array_equal(pcm(http.post("/v1/audio/speech", json={**body, "model": "f5-tiny"})), f5)
    assert http.patch("/v1/voices/alice", json={"model": None}).json()["model"] is None


@slow
def test_unknown_models_are_named_in_a_400(http, short_wav):
    add_voice(http, "bob", short_wav, SHORT_TEXT)
    r = http.post("/v1/audio/speech", json={"voice": "bob", "input": "Hi.", "model": "tts-9"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_model"
    assert "e2-tiny" in r.json()["error"]["message"]
    assert http.post("/v1/jobs", json={"voice": "bob", "input": "Hi.", "model": "nope"}).status_code == 400
    assert http.patch("/v1/voices/bob", json={"model": "nope"}).status_code == 400
    with open(short_wav, "rb") as f:
        r = http.post("/v1/voices", data={"name": "carol", "ref_text": SHORT_TEXT, "model": "nope"},
                      files={"file": f})
    assert r.status_code == 400 and http.get("/v1/voices/carol").status_code == 404
    broken = http.post("/v1/audio/speech", json={"voice": "bob", "input": "Hi.", "model": "broken"})
    assert broken.status_code == 503 and "'broken'" in broken.json()["error"]["message"]


@slow
def test_models_are_listed_with_their_languages(http):
    cards = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert list(cards) == ["f5-tiny", "e2-tiny", "broken", "f5", "tts-1", "f5-tts"]
    assert cards["e2-tiny"]["languages"] == ["en"] and cards["f5"]["alias_of"] == "f5-tiny"
    assert cards["tts-1"]["alias_of"] == "f5-tiny"
    status = http.get("/v1/status").json()
    assert status["models"]["f5-tiny"]["default"] and not status["models"]["e2-tiny"]["default"]


def test_the_registry_refuses_a_name_given_twice_and_an_unknown_default():
    with pytest.raises(ValueError, match="given twice"):
        ServiceSettings(models=[ModelSpec(name="a"), ModelSpec(name="b", aliases=["a"])])
    with pytest.raises(ValueError, match="default_model"):
        ServiceSettings(models=[ModelSpec(name="a")], default_model="b")


def test_status_shows_running_replicas_and_forgets_one_killed_long_ago(tmp_path):
    import json
    from datetime import datetime, timezone

    from speech_service import model_status
    from speech_service.storage.objects import LocalObjectStore

    objects = LocalObjectStore(tmp_path)
    stats = {"f5-tiny": {"loaded": True, "loads": 1, "requests": 7}}
    for replica in ["running", "starting"]:
        model_status.save(objects, replica, ["f5-tiny"], stats)
    killed = {"replica": "killed", "held": ["f5-tiny"], "models": {},
              "updated_at": (datetime.now(timezone.utc) - 2 * model_status.STALE_AFTER).isoformat()}
    objects.put(f"{model_status.PREFIX}killed.json", json.dumps(killed).encode())
    shown = model_status.held_models(objects, {"running"})
    assert list(shown) == ["running"] and shown["running"]["held"] == ["f5-tiny"]
    assert "requests" not in shown["running"]["models"]["f5-tiny"]  # stale by the next request: a metric
    # The killed replica's record is gone; the one still starting is kept until it runs.
    assert sorted(model_status.held_models(objects, None)) == ["running", "starting"]

"""Cold start: light imports, phase records that the status route reads, threads from config."""

import json
import subprocess
import sys
import time

import pytest

from speech_service import coldstart
from speech_service.devices import cpu_threads, resolve
from speech_service.storage.objects import LocalObjectStore
from speech_service.synthesis.engine import SynthesisEngine

from conftest import REPO


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` from the repository root."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.slow  # a fresh interpreter
def test_the_transcriber_imports_neither_torch_nor_f5():
    loaded = modules_after("import deployments.transcriber, speech_service.transcription.whisper")
    assert "faster_whisper" not in loaded  # imported when a replica loads, not with the module
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "f5_tts", "transformers")}
    assert "scipy.signal" not in loaded  # ~70 MB for one resampling call


@pytest.mark.slow  # a fresh interpreter
def test_the_engine_imports_f5_model_code_but_not_its_trainer():
    loaded = modules_after("from speech_service.synthesis import f5_modules\n"
                           "f5_modules.backbone_class('DiT'); f5_modules.submodule('cfm')")
    assert {"f5_tts.model.cfm", "f5_tts.model.backbones.dit", "f5_tts.model.utils"} <= loaded
    assert not {"f5_tts.model.trainer", "accelerate", "wandb", "transformers"} & loaded
    # Code that wants the whole package still gets it, trainer included.
    loaded = modules_after("from speech_service.synthesis import f5_modules\nf5_modules.submodule('cfm')\n"
                           "from f5_tts.model import CFM, Trainer\n"
                           "assert CFM is f5_modules.submodule('cfm').CFM")
    assert "f5_tts.model.trainer" in loaded


@pytest.mark.slow  # a fresh interpreter
def test_the_synthesizer_loads_and_speaks_without_torch_dynamo(synth_settings):
    """einx (imported by F5's DiT, never called) imports torch._dynamo, ~1 s, when torch came first."""
    loaded = modules_after(
        "from speech_service.synthesis import f5_modules  # the Synthesizer replica's order\n"
        "from speech_service.synthesis.engine import SynthesisEngine\n"
        "from speech_service.config import SynthesizerSettings\n"
        f"settings = SynthesizerSettings.model_validate_json({synth_settings.model_dump_json()!r})\n"
        "engine = SynthesisEngine.load(settings)\n"
        "clip = engine.prepare(__import__('numpy').random.default_rng(0).standard_normal(24000).astype('float32'))\n"
        "assert len(engine.synthesize(clip, 'A test.', 'Hello there.')) > 0")
    assert "torch._dynamo" not in loaded and "einx" in loaded
    # f5-tts's modules import librosa's mel filter bank, which imports scipy.signal and scipy.stats;
    # the Vocos mel never calls it.
    assert not {"librosa.filters", "scipy.signal", "scipy.stats"} & loaded


@pytest.mark.slow  # a fresh interpreter
def test_f5s_librosa_mel_still_works_when_called():
    """The BigVGAN mel of f5-tts gets the real filter bank on its first call."""
    loaded = modules_after(
        "from speech_service.synthesis import f5_modules\n"
        "modules = f5_modules.submodule('modules')\n"
        "import sys; assert 'librosa.filters' not in sys.modules\n"
        "bank = modules.librosa_mel_fn(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=None)\n"
        "from librosa.filters import mel\n"
        "assert (bank == mel(sr=24000, n_fft=1024, n_mels=100, fmin=0, fmax=None)).all() and bank.shape == (100, 513)")
    assert "librosa.filters" in loaded


def test_threads_follow_config_else_the_cpus_ray_gave_rounded_up():
    assert cpu_threads(None, 0.5) == 1
    assert cpu_threads(None, 1.5) == 2
    assert cpu_threads(None, None) == 1
    assert cpu_threads(3, 0.5) == 3


def test_auto_device_asks_only_when_auto():
    asked = []
    assert resolve("cuda:1", lambda: asked.append(1)) == "cuda:1" and not asked
    assert resolve("auto", lambda: False) == "cpu"
    assert resolve("auto", lambda: True) == "cuda"


def test_a_process_knows_when_it_started():
    out = subprocess.run([sys.executable, "-c", "import time; now = time.time()\n"
                          "from speech_service.coldstart import process_start_time\n"
                          "print(now - process_start_time())"], cwd=REPO, capture_output=True, text=True, check=True)
    assert 0 <= float(out.stdout) < 0.3  # the interpreter's own start, to a clock tick


def test_a_record_has_every_phase_and_the_status_store_returns_the_last(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert coldstart.last_cold_starts(store) == {}
    for replica in ("a", "b"):
        clock = coldstart.ColdStartClock("Synthesizer", replica, process_started=time.time() - 1.0)
        with clock.phase("imports"):
            time.sleep(0.01)
        with clock.phase("imports"):  # blocks of one phase add up
            time.sleep(0.01)
        coldstart.save(store, clock.record())
    record = coldstart.last_cold_starts(store)["Synthesizer"]
    assert record["replica"] == "b"
    assert set(record["phases"]) == {"worker_start", "imports", "other"}
    assert record["phases"]["worker_start"] >= 1.0 and record["phases"]["imports"] >= 0.02
    assert sum(record["phases"].values()) == pytest.approx(record["total_s"], abs=0.01)


def test_status_answers_when_the_store_does_not(tmp_path):
    class Broken(LocalObjectStore):
        def list(self, prefix):
            raise OSError("disk gone")

        def put(self, key, data, **_):
            raise OSError("disk gone")

    store = Broken(tmp_path)
    coldstart.save(store, coldstart.ColdStartClock("Transcriber", process_started=time.time()).record())
    assert coldstart.last_cold_starts(store) == {}


def test_engine_load_times_its_phases_and_warms_up(synth_settings):
    clock = coldstart.ColdStartClock("Synthesizer", process_started=time.time())
    engine = SynthesisEngine.load(synth_settings, clock)
    assert {"imports", "fetch", "weights", "warm_up"} <= set(clock.phases)
    assert all(seconds >= 0 for seconds in clock.phases.values())
    assert engine.device == "cpu"
    assert all(p.device.type == "cpu" for p in engine.model.parameters())

"""Stand-ins for what a bare PyTorch machine lacks and the benchmark's code paths never call.

The GPU bundle (`bench/bundle.py`) carries every package the engine runs on, but not these, which
would not fit its 64 MiB or need libraries such a machine lacks:
* scipy (34 MB): torchdiffeq imports `scipy.integrate.solve_ivp` for its scipy solvers and vocos
  imports `scipy` for its IMDCT heads; the engine integrates with Euler and decodes with ISTFT;
* matplotlib and transformers: f5-tts's `utils_infer` imports them at module level for its
  spectrogram plots and its ASR pipeline, which `infer_batch_process` never calls.
Each stand-in is registered only when the real package is missing, and raises if it is ever called.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

STAND_INS = {
    "scipy": ["scipy.integrate", "scipy.signal"],
    "matplotlib": ["matplotlib.pylab"],
    "transformers": [],
}


def _missing(module: str):
    def call(*args, **kwargs):
        raise ModuleNotFoundError(f"{module} is not installed here (a stand-in from bench/bare.py)")
    return call


def _stand_in(name: str) -> ModuleType:
    module = ModuleType(name, "A stand-in for a package this machine lacks; see bench/bare.py.")
    module.__path__ = []  # a package, so its submodules resolve to the stand-ins below
    module.__getattr__ = lambda attr: _missing(f"{name}.{attr}") if not attr.startswith("__") else None
    return module


def register() -> list[str]:
    """Register the stand-ins for the missing packages; returns their names."""
    missing = [name for name in STAND_INS if importlib.util.find_spec(name) is None]
    for name in missing:
        sys.modules[name] = parent = _stand_in(name)
        for sub in STAND_INS[name]:
            sys.modules[sub] = child = _stand_in(sub)
            setattr(parent, sub.rsplit(".", 1)[1], child)
    if "matplotlib" in missing:
        sys.modules["matplotlib"].use = lambda *args, **kwargs: None  # utils_infer calls it on import
    return missing

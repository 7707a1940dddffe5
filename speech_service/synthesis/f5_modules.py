"""The f5-tts model code without the package's training stack.

`f5_tts/model/__init__.py` imports `Trainer`, which pulls in accelerate, wandb, ema_pytorch and the
dataset code: about 1.1-1.5 s of a replica's cold start, and memory a server never uses. Python runs
a package's `__init__` before any of its submodules, so importing `f5_tts.model.cfm` alone still pays
for it. This module is the one place that avoids it: if `f5_tts.model` is not imported yet, it
registers the package with its real path and an empty body, so its submodules import on their own.
The real `__init__` runs the first time anyone asks the package for a name it lacks (e.g.
`from f5_tts.model import Trainer`), so other code still sees the package as f5-tts defines it.

It also imports einx, which x_transformers (and so F5's DiT) imports, and which F5 never calls.
einx registers a backend for each array library already imported, and its torch backend imports
`torch._dynamo`: about 1 s of a replica's cold start. Imported before torch, einx registers that
backend on its first call instead: a process that imports this module before torch (the
Synthesizer replica does) saves that second.

And f5-tts's `model/modules.py` imports librosa's mel filter bank at module level, for its BigVGAN
mel; Vocos's mel (ours) never calls it. `librosa.filters` imports scipy.signal and scipy.stats:
0.7-1.3 s of a replica's cold start. While f5-tts's modules import, `librosa.filters` is a stand-in
whose `mel` imports the real one when first called; the stand-in is gone once they are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import einx  # noqa: F401  (see the docstring: before torch)

PACKAGE = "f5_tts.model"
BACKBONE_MODULES = {"DiT": "backbones.dit", "UNetT": "backbones.unett", "MMDiT": "backbones.mmdit"}
_lock = threading.RLock()


def _register_light_package() -> None:
    with _lock:
        if PACKAGE in sys.modules:
            return
        spec = importlib.util.find_spec(PACKAGE)
        package = importlib.util.module_from_spec(spec)  # __path__ set, body not run

        def __getattr__(name: str):  # PEP 562: only for names the module does not have
            if name.startswith("__"):
                raise AttributeError(name)
            with _lock:
                package.__dict__.pop("__getattr__", None)
                spec.loader.exec_module(package)  # the real __init__, once
            return getattr(package, name)

        package.__getattr__ = __getattr__
        sys.modules[PACKAGE] = package


def _librosa_mel(*args, **kwargs):
    """librosa's mel filter bank, imported on its first use (see the docstring)."""
    from librosa.filters import mel

    return mel(*args, **kwargs)


@contextmanager
def _librosa_filters_on_demand() -> Iterator[None]:
    if "librosa.filters" in sys.modules:
        yield
        return
    stand_in = ModuleType("librosa.filters", "Stands in while f5-tts imports; see speech_service.synthesis.f5_modules.")
    stand_in.mel = _librosa_mel
    sys.modules["librosa.filters"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("librosa.filters") is stand_in:
            del sys.modules["librosa.filters"]


def submodule(name: str) -> ModuleType:
    """`f5_tts.model.<name>` (e.g. "cfm", "utils", "backbones.dit")."""
    _register_light_package()
    with _lock, _librosa_filters_on_demand():
        return importlib.import_module(f"{PACKAGE}.{name}")


def backbone_class(name: str) -> type:
    """The backbone class an f5-tts config names (`model.backbone`, e.g. "DiT")."""
    if name not in BACKBONE_MODULES:
        raise ValueError(f"unknown f5-tts backbone {name!r}")
    return getattr(submodule(BACKBONE_MODULES[name]), name)

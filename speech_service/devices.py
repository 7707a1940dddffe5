"""Device and thread choice without importing torch.

The Transcriber replica must stay small at rest: importing torch alone costs about 0.65 GB of
memory, so each backend asks its own library whether CUDA is there, and only when asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def resolve(setting: str, cuda_available: Callable[[], bool]) -> str:
    """`setting` unless it is "auto"; then "cuda" when `cuda_available()`, else "cpu"."""
    if setting != "auto":
        return setting
    return "cuda" if cuda_available() else "cpu"


def _torch_sees_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _ctranslate2_sees_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


def torch_device(setting: str) -> str:
    """For the F5 engine (which imports torch anyway)."""
    return resolve(setting, _torch_sees_cuda)


def whisper_device(setting: str) -> str:
    """For faster-whisper, which runs on CTranslate2 and needs no torch."""
    return resolve(setting, _ctranslate2_sees_cuda)


def cpu_threads(configured: int | None, assigned_cpus: float | None) -> int:
    """Threads for a replica's math: the configured count, else the CPUs it was given, rounded up."""
    if configured:
        return configured
    return max(1, math.ceil(assigned_cpus or 1))

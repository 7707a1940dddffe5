"""f5-tts's own inference, `infer_process`, for the engine's ratio against it on the same inputs.

`infer_process` reads the reference from a file with `torchaudio.load`, which needs torchcodec and
FFmpeg's libraries (not on a bare GPU machine), then chunks the text and hands both to
`infer_batch_process`. `infer` does the same from a clip in memory: the same chunking, the same
call. `utils_infer` is imported without f5-tts's training stack (`f5_tts.model`'s `__init__`):
the one name it takes from the package, `CFM`, is set on the light package first.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from speech_service.synthesis import f5_modules

SAMPLE_RATE = 24000


def utils_infer():
    cfm = f5_modules.submodule("cfm")  # the light package (see f5_modules), unless the real one is in
    package = sys.modules["f5_tts.model"]
    if "CFM" not in vars(package):
        package.CFM = cfm.CFM
    from f5_tts.infer import utils_infer as module

    return module


def infer(model, vocoder, reference: np.ndarray, ref_text: str, text: str, nfe_step: int, device: str) -> np.ndarray:
    """`infer_process(ref_file, ref_text, text, model, vocoder, nfe_step=nfe_step)`'s wave."""
    module = utils_infer()
    audio = torch.from_numpy(reference).unsqueeze(0)
    seconds = audio.shape[-1] / SAMPLE_RATE
    max_chars = int(len(ref_text.encode("utf-8")) / seconds * (22 - seconds))
    batches = module.chunk_text(text, max_chars=max_chars)
    wave, _, _ = next(module.infer_batch_process((audio, SAMPLE_RATE), ref_text, batches, model, vocoder,
                                                 nfe_step=nfe_step, progress=None, device=device))
    return wave

"""Batching without a quadratic mask: the engine's attention takes the padding mask as one that
broadcasts (batch x 1 x 1 x frames), gives the same numbers f5-tts's expanded mask gives, and a
batch of long items costs no batch x heads x frames x frames tensor."""

import sys

import pytest
import torch

from speech_service.synthesis import f5_modules
from speech_service.synthesis.sampling import PaddingMaskAttention

from conftest import REPO


def padded_batch(dim: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(len(lengths), max(lengths), dim, generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return x, mask


def test_the_engines_attention_broadcasts_the_mask_and_equals_f5s(engine):
    block = engine.model.transformer.transformer_blocks[0]
    ours = block.attn.processor
    assert all(type(b.attn.processor) is PaddingMaskAttention for b in engine.model.transformer.transformer_blocks)
    f5s = f5_modules.submodule("modules").AttnProcessor(attn_mask_enabled=True)
    x, mask = padded_batch(block.attn.to_q.in_features, [37, 80, 12])
    rope = engine.model.transformer.rotary_embed.forward_from_seq_len(x.shape[1])
    with torch.inference_mode():
        assert torch.allclose(ours(block.attn, x, mask=mask, rope=rope), f5s(block.attn, x, mask=mask, rope=rope),
                              atol=1e-6)
        solo = x[:1, :37]  # no mask: f5-tts's own code, bit for bit
        assert torch.equal(ours(block.attn, solo, rope=rope), f5s(block.attn, solo, rope=rope))


@pytest.mark.slow  # a process of its own (seconds): a peak is per process
def test_a_batch_of_long_items_needs_no_quadratic_mask(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench.attention_memory import measure
    from speech_service.weights.offline import TINY_DIT

    items, frames = 8, 3000
    (row,) = measure("tiny", items, frames, attentions=["broadcast"], models_dir=tmp_path)
    # f5-tts's expanded mask as floats: guidance doubles the batch; 1.15 GB here
    expanded = 2 * items * TINY_DIT["heads"] * frames**2 * 4 / 2**30
    assert row["step_growth_gib"] < expanded / 2, row

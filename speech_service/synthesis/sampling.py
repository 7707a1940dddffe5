"""`CFM.sample` for a batch whose items each have their own seed.

f5-tts 1.1.22's `CFM.sample` takes one `seed` and re-seeds the global generator with it before each
item's noise, so every item of a batch gets the noise of that one seed. A batched item must sound
exactly as it would alone with its own seed, so `sample_batch` is `CFM.sample` (raw-wave-free path:
mel `cond`, per-item `lens` and `duration`, EPSS time steps, sway, classifier-free guidance) with one
change: item i's noise comes from a generator seeded with `seeds[i]`, which draws the same numbers as
`torch.manual_seed(seeds[i])` followed by `torch.randn` does in `sample`. Keep it in step with
`f5_tts/model/cfm.py` when f5-tts is upgraded; tests/test_batching.py compares the two.

Two leaks between items that `sample` has for a padded batch are closed here:
* attention: the DiT must be built with `attn_mask_enabled=True` (the F5TTS_v1_Base config ships
  False), or a shorter item attends to the padding of the longer ones. f5-tts's attention then
  expands the padding mask to batch x heads x frames x frames, which the attention kernels turn into
  a float tensor of that size (8 items of 2000 frames with guidance: 4 GB at each layer), so
  `mask_padding` gives the model's attention layers `PaddingMaskAttention`, whose mask broadcasts;
* text features: the text encoder's ConvNeXt-V2 blocks apply GRN, a norm over the whole sequence,
  and in a batch that sequence includes the padding (relative error 1e-3 on the tiny model). So each
  item's text features are computed alone, exactly as in a solo call, and handed to the DiT through
  its own between-step cache (`text_cond` / `text_uncond`), which it then uses for every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torchdiffeq import odeint

from speech_service.synthesis import f5_modules

_utils = f5_modules.submodule("utils")  # without the package's training stack (see f5_modules)
_modules = f5_modules.submodule("modules")
get_epss_timesteps, lens_to_mask = _utils.get_epss_timesteps, _utils.lens_to_mask
list_str_to_idx, list_str_to_tensor = _utils.list_str_to_idx, _utils.list_str_to_tensor


def sample_batch(model, conds: list[torch.Tensor], texts: list[list[str]], durations: list[int],
                 seeds: list[int], *, steps: int, cfg_strength: float,
                 sway_sampling_coef: float | None) -> list[torch.Tensor]:
    """Mel frames (duration_i x n_mels) per item; `conds` are reference mels (frames x n_mels)."""
    model.eval()  # as `sample` does: dropout off
    device = model.device
    dtype = next(model.parameters()).dtype
    batch = len(conds)
    lens = torch.tensor([len(c) for c in conds], device=device, dtype=torch.long)
    cond = pad_sequence([c.to(dtype) for c in conds], batch_first=True)
    cond_seq_len = cond.shape[1]
    if model.vocab_char_map is not None:
        text = list_str_to_idx(texts, model.vocab_char_map).to(device)
    else:
        text = list_str_to_tensor(texts).to(device)

    cond_mask = lens_to_mask(lens)
    duration = torch.tensor(durations, device=device, dtype=torch.long)
    duration = torch.maximum(torch.maximum((text != -1).sum(dim=-1), lens) + 1, duration).clamp(max=65536)
    max_duration = int(duration.amax())
    cond = F.pad(cond, (0, 0, 0, max_duration - cond_seq_len), value=0.0)
    cond_mask = F.pad(cond_mask, (0, max_duration - cond_mask.shape[-1]), value=False).unsqueeze(-1)
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    mask = lens_to_mask(duration) if batch > 1 else None

    def flow(t, x):
        if cfg_strength < 1e-5:
            return model.transformer(x=x, cond=step_cond, text=text, time=t, mask=mask,
                                     drop_audio_cond=False, drop_text=False, cache=True)
        both = model.transformer(x=x, cond=step_cond, text=text, time=t, mask=mask, cfg_infer=True, cache=True)
        pred, null_pred = torch.chunk(both, 2, dim=0)
        return pred + (pred - null_pred) * cfg_strength

    noise = []
    for dur, seed in zip(duration.tolist(), seeds):
        generator = torch.Generator(device=device).manual_seed(seed)
        noise.append(torch.randn(dur, model.num_channels, device=device, dtype=step_cond.dtype, generator=generator))
    y0 = pad_sequence(noise, padding_value=0, batch_first=True)

    t = get_epss_timesteps(steps, device=device, dtype=step_cond.dtype)
    if sway_sampling_coef is not None:
        t = t + sway_sampling_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
    # The DiT caches text features between ODE steps (per thread): fill it with each item's own,
    # and leave it clean even when a step fails, or the thread's next call would reuse them.
    transformer = model.transformer
    transformer.text_cond = _text_features(transformer, text, duration, max_duration, drop_text=False)
    transformer.text_uncond = _text_features(transformer, text, duration, max_duration, drop_text=True)
    try:
        trajectory = odeint(flow, y0, t, **model.odeint_kwargs)
    finally:
        transformer.clear_cache()
    out = torch.where(cond_mask, cond, trajectory[-1])
    return [out[i, :dur] for i, dur in enumerate(duration.tolist())]


def _text_features(transformer, text: torch.Tensor, duration: torch.Tensor, max_duration: int,
                   *, drop_text: bool) -> torch.Tensor:
    """Each item's text features as a solo call computes them (its own tokens, unpadded, and its own
    length), zero-padded to the batch's length as the DiT pads them."""
    rows = []
    for tokens, dur in zip(text, duration.tolist()):
        tokens = tokens[tokens != -1].unsqueeze(0)
        features = transformer.text_embed(tokens, seq_len=dur, drop_text=drop_text)
        rows.append(F.pad(features, (0, 0, 0, max_duration - dur)))
    return torch.cat(rows, dim=0)


class PaddingMaskAttention(_modules.AttnProcessor):
    """f5-tts's `AttnProcessor` (torch backend) with the padding mask handed to the attention as
    batch x 1 x 1 x keys, which broadcasts over heads and queries, instead of expanded to
    batch x heads x queries x keys. Keys that are padding get no weight either way; without a mask
    (a solo call) it is f5-tts's own code."""

    def __call__(self, attn, x: torch.Tensor, mask: torch.Tensor | None = None, rope=None) -> torch.Tensor:
        if mask is None or not self.attn_mask_enabled or self.attn_backend != "torch":
            return super().__call__(attn, x, mask=mask, rope=rope)
        batch = x.shape[0]
        query, key, value = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.q_norm is not None:
            query = attn.q_norm(query)
        if attn.k_norm is not None:
            key = attn.k_norm(key)
        if rope is not None:
            query, key = self._rotate(query, key, rope)
        x = F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None, None, :], dropout_p=0.0,
                                           is_causal=False)
        x = x.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        x = attn.to_out[1](attn.to_out[0](x))
        return x.masked_fill(~mask.unsqueeze(-1), 0.0)

    def _rotate(self, query: torch.Tensor, key: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary position embedding as f5-tts applies it (to the first `pe_attn_head` heads, or all)."""
        freqs, xpos_scale = rope
        q_scale, k_scale = (xpos_scale, xpos_scale**-1.0) if xpos_scale is not None else (1.0, 1.0)
        rotate = _modules.apply_rotary_pos_emb
        if self.pe_attn_head is None:
            return rotate(query, freqs, q_scale), rotate(key, freqs, k_scale)
        pn = self.pe_attn_head
        query[:, :pn, :, :] = rotate(query[:, :pn, :, :], freqs, q_scale)
        key[:, :pn, :, :] = rotate(key[:, :pn, :, :], freqs, k_scale)
        return query, key


def mask_padding(model: torch.nn.Module) -> None:
    """Give every attention layer of `model` built with f5-tts's `AttnProcessor` and a padding mask
    the broadcasting `PaddingMaskAttention` (same settings, same results, no quadratic mask)."""
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if type(processor) is _modules.AttnProcessor and processor.attn_mask_enabled:
            module.processor = PaddingMaskAttention.__new__(PaddingMaskAttention)  # no __init__: its
            module.processor.__dict__.update(processor.__dict__)  # warning is about the expanded mask

"""Sample-rate conversion in NumPy (importing scipy.signal costs a replica ~70 MB for this one call)."""

from __future__ import annotations

import math

import numpy as np

_BLOCK = 1 << 15  # output samples computed per step: bounds the gathered window matrix to a few MB


def resample_poly(audio: np.ndarray, up: int, down: int) -> np.ndarray:
    """`scipy.signal.resample_poly(audio, up, down)` with its default filter (Kaiser-windowed sinc,
    beta 5, 10 zero crossings per side), as a polyphase filter: each output sample is the dot
    product of one phase of the filter with the input around it, so 24 kHz -> 22.05 kHz (up 147,
    down 160) costs about 20 multiplies a sample, not the 3201 of filtering the upsampled signal."""
    g = math.gcd(up, down)
    up, down = up // g, down // g
    max_rate = max(up, down)
    half_len = 10 * max_rate
    taps = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(taps / max_rate) * np.kaiser(2 * half_len + 1, 5.0)
    h *= up / h.sum()
    # phases[p, i] = h[p + i * up]: the taps that meet input samples when the output sits at phase p
    width = -(-len(h) // up)
    phases = np.zeros(up * width)
    phases[: len(h)] = h
    phases = phases.reshape(width, up).T
    n_out = -(-len(audio) * up // down)
    # Output k sits at k * down + half_len of the upsampled signal (scipy's full convolution, trimmed):
    # input sample (t // up - i) meets tap (t % up + i * up).
    t = half_len + np.arange(n_out, dtype=np.int64) * down
    first, phase = t // up, t % up
    padded = np.concatenate([np.zeros(width - 1), np.asarray(audio, dtype=np.float64),
                             np.zeros(max(0, int(first[-1]) + 1 - len(audio)) if n_out else 0)])
    out = np.empty(n_out, dtype=np.float64)
    offsets = np.arange(width - 1, -1, -1)  # padded index of input (first - i) is first + width - 1 - i
    for start in range(0, n_out, _BLOCK):
        block = slice(start, start + _BLOCK)
        window = padded[first[block, None] + offsets]
        out[block] = np.einsum("ki,ki->k", window, phases[phase[block]])
    return out.astype(np.float32)

"""Counter-based random draws on the tokens' device, for the random destinations of ToMe (Bolya & Hoffman,
arXiv 2303.17604), IBTM (Wu et al., arXiv 2411.16720) and SDTM (Fang et al., arXiv 2505.11707).

Each draw is a hash of (stream, index): the stream is a 0-dim int64 tensor (or an int) that the caller derives
from the merge seed, the sampling step and the block, and the index counts the draws of one call. The hash is an
integer mixer on 31-bit values (multiply by an odd constant, xor with the upper half, three rounds); every
product stays below 2**62, so int64 arithmetic never overflows and every device computes the same bits. No
``torch.Generator`` is involved: a draw reads nothing back to the host, copies nothing between devices, traces
into a ``torch.compile`` graph, and a stream tensor that changes every step does not recompile it.
"""

from __future__ import annotations

import math

import torch

MASK = (1 << 31) - 1
_INDEX_MULTIPLIER = 0x2545F491
_STREAM_MULTIPLIER = 0x6C8E9CF5 & MASK
_MIXER = 0x45D9F3B


def random_bits(stream: torch.Tensor | int, count: int, device: torch.device | None = None) -> torch.Tensor:
    """``count`` pseudo-random int64 values in [0, 2**31) of ``stream`` [] on ``device`` (default: the stream's):
    the same stream and count give the same values on every device."""
    if device is None and isinstance(stream, torch.Tensor):
        device = stream.device
    index = torch.arange(count, device=device, dtype=torch.int64)
    x = (index * _INDEX_MULTIPLIER + (stream & MASK) * _STREAM_MULTIPLIER) & MASK
    for _ in range(3):
        x = x ^ (x >> 16)
        x = (x * _MIXER) & MASK
    return x ^ (x >> 16)


def random_integers(
    stream: torch.Tensor | int, high: int, shape: tuple[int, ...], device: torch.device | None = None
) -> torch.Tensor:
    """Integers in [0, ``high``) of ``shape``, drawn from ``stream`` (the modulo bias is below high / 2**31)."""
    return (random_bits(stream, math.prod(shape), device) % high).view(shape)


def random_permutation_keys(
    stream: torch.Tensor | int, shape: tuple[int, ...], device: torch.device | None = None
) -> torch.Tensor:
    """Sort keys of ``shape``: ``keys.argsort(dim=-1, stable=True)`` is a random permutation of each last-dim row."""
    return random_bits(stream, math.prod(shape), device).view(shape)


def stream_of(*parts: int) -> int:
    """A 31-bit stream from integers (merge seed, step, block salt), mixed in Python; the caller turns the
    per-step part into a tensor where it must not recompile a graph."""
    value = 0
    for part in parts:
        value = ((value * 0x100000001B3) ^ (part & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & 0xFFFFFFFFFFFFFFFF
    value ^= value >> 33
    return value & MASK

"""Importance-based token merging (IBTM): Wu, Xu, Le, Samaras, "Importance-based Token Merging for
Efficient Image and Video Generation", arXiv 2411.16720 (ICCV 2025).

Classifier-free guidance gives a free per-token importance, |cond - uncond| of the previous step. Per
latent sample, with N tokens, r to merge and K = dst_fraction * N destinations:

1. the pool is the M = min(pool_factor * (N - r), N) most important tokens;
2. the K destinations are drawn from the pool (``random``, from the caller's seed stream, or ``top_k``);
3. every other token is a source and finds its most similar destination (cosine, chunked), or, as the authors
   run PixArt, the destination nearest to it on the token grid (``positions``);
4. sources outside the pool are always merged (a boolean mask, not the reference code's +100000
   score offset, which overflows in fp16), and the rest of the budget goes to the pool sources most
   similar to a destination; the remaining pool tokens stay independent.

The ratio can be at most 1 - dst_fraction (enough sources for r). With pool_factor >= 1, at most r
tokens lie outside the pool, so the top-importance tokens are never merged while the budget allows.
"""

from __future__ import annotations

from enum import Enum

import torch

from .draws import random_permutation_keys
from .plan import MergePlan, select_merges, split_destinations
from .similarity import best_destination, nearest_destination


class DstMode(str, Enum):
    RANDOM = "random"  # uniformly from the pool (the paper's default)
    TOP_K = "top_k"  # the K most important tokens


def pool_size(num_tokens: int, r: int, pool_factor: float) -> int:
    return min(int((num_tokens - r) * pool_factor), num_tokens)


@torch.no_grad()
def importance_order(importance: torch.Tensor) -> torch.Tensor:
    """Token indices by falling ``importance`` [S, N] (ties in token order): [S, N]."""
    return torch.argsort(importance.float(), dim=1, descending=True, stable=True)


@torch.no_grad()
def importance_plan(
    metric: torch.Tensor,
    importance: torch.Tensor,
    r: int,
    dst_fraction: float = 0.25,
    pool_factor: float = 1.4,
    dst_mode: DstMode = DstMode.RANDOM,
    seed: torch.Tensor | int | None = None,
    positions: torch.Tensor | None = None,
    by_importance: torch.Tensor | None = None,
) -> MergePlan:
    """IBTM plan for ``metric`` [S, N, C] and ``importance`` [S, N] (higher = more important); with ``positions``
    [N, 2] (the tokens' grid coordinates) sources match their nearest destination instead of the most similar.
    ``by_importance`` [S, N] is :func:`importance_order` of ``importance`` where the caller has it already."""
    S, N, C = metric.shape
    K = max(1, int(N * dst_fraction))
    r = min(r, N - K)
    M = max(K, pool_size(N, r, pool_factor))
    device = metric.device
    if by_importance is None:
        by_importance = importance_order(importance)
    pool = by_importance[:, :M]  # [S, M]
    if dst_mode is DstMode.TOP_K or seed is None:
        dst_in_pool = torch.arange(K, device=device).expand(S, K)
    else:  # K distinct pool slots per sample: the first K of a random permutation of the M slots
        dst_in_pool = random_permutation_keys(seed, (S, M), device).argsort(dim=1, stable=True)[:, :K]
    is_dst = torch.zeros(S, N, dtype=torch.bool, device=device)
    is_dst.scatter_(1, pool.gather(1, dst_in_pool), value=True)
    outside_pool = torch.ones(S, N, dtype=torch.bool, device=device)
    outside_pool.scatter_(1, pool, value=False)
    dst_idx, src_idx = split_destinations(is_dst, K)
    always = outside_pool.gather(1, src_idx)  # [S, N - K]
    if positions is None:
        score, best = best_destination(
            metric.gather(1, src_idx.unsqueeze(-1).expand(-1, -1, C)),
            metric.gather(1, dst_idx.unsqueeze(-1).expand(-1, -1, C)),
        )
    else:
        score, best = nearest_destination(positions[src_idx], positions[dst_idx])  # [S, n] -> [S, n, 2]
    return select_merges(dst_idx, src_idx, best, score, r, N, always_merge=always)

"""SDTM's protected-step cache: the updates of the last protected step, blended into the merged tokens' updates.

Every ``protect_every``-th step runs unmerged and stores, per block call, the update of each computation that
later steps merge: the whole block's update (output minus input) where the block is merged as a whole, or a
sub-layer's output (PixArt's attention, cross-attention and MLP; every family's MLP in the detail stage). On a
merged step, the merged tokens (sources and destinations) of that computation take
``cache_weight x fresh + (1 - cache_weight) x cached``; independent tokens and every computation that ran on all
tokens keep their fresh update, as in the authors' code.

Entries are keyed by (computation, block, rows, cond_or_uncond), so the cond and uncond rows of split calls and
batches of another size never meet. The cache is bounded by ``cache_limit_mb``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .state import Count

if TYPE_CHECKING:
    from ..merging.plan import MergePlan
    from .config import MergeConfig
    from .state import MergeState


def cache_key(state: MergeState, computation: str, key: object, rows: int) -> tuple:
    return computation, key, rows, state.call.cond_or_uncond


def store(state: MergeState, config: MergeConfig, computation: str, key: object, update: torch.Tensor) -> None:
    """Keep ``update`` [rows, N, C] of an unmerged (protected) call, unless the cache would exceed its limit."""
    entry = cache_key(state, computation, key, update.shape[0])
    state.sdtm.cache.pop(entry, None)
    update = update.detach()
    limit = config.cache_limit_mb * 2**20
    if state.sdtm.cache_bytes + update.numel() * update.element_size() > limit:
        state.warn_once(
            "cache_limit",
            f"tokenmerge: the SDTM cache reached cache_limit_mb={config.cache_limit_mb}; "
            "further blocks run without cache fusion",
        )
        return
    state.sdtm.cache[entry] = update
    state.count_peak(Count.CACHE_PEAK_BYTES, state.sdtm.cache_bytes)


def drop(state: MergeState, computation: str, key: object, rows: int) -> None:
    state.sdtm.cache.pop(cache_key(state, computation, key, rows), None)


def lookup(state: MergeState, computation: str, key: object, rows: int) -> torch.Tensor | None:
    """The cached update of ``computation`` in block ``key`` for calls of ``rows`` rows, if any."""
    return state.sdtm.cache.get(cache_key(state, computation, key, rows))


def blend(
    state: MergeState, config: MergeConfig, computation: str, key: object, update: torch.Tensor, plan: MergePlan
) -> torch.Tensor | None:
    """``update`` [rows, N, C] (unmerged) with its merged tokens blended with the cached update, or ``None``
    when nothing is cached for this computation."""
    cached = lookup(state, computation, key, update.shape[0])
    if cached is None or cached.shape != update.shape:
        return None
    weight = config.cache_weight
    merged = torch.cat([plan.src_idx, plan.dst_idx], dim=1).unsqueeze(-1).expand(-1, -1, update.shape[-1])
    mixed = weight * update.gather(1, merged) + (1 - weight) * cached.gather(1, merged)  # [rows, R + K, C]
    return update.scatter(1, merged, mixed)

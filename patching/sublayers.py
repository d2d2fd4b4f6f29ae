"""Sub-layer merging inside a DiT block: object patches on a block's attention, cross-attention or MLP module.

Where a block's sub-layers are modules of their own (PixArt's ``attn``, ``cross_attn`` and ``mlp``; every
family's image MLP), the block patch builds one plan for the block call and hands it to the sub-layer patches in
a :class:`SublayerCall`. Each named sub-layer then runs on the merged tokens and returns its output unmerged; the
block adds that output (times its gate) to each token's own residual, as the authors of ToMeSD, IBTM and SDTM do
per sub-layer. On SDTM's protected steps the sub-layers run in full and refresh the cache instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..merging.plan import merge, unmerge
from . import update_cache
from .state import Count

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import MergeConfig
    from .planner import Planned
    from .state import MergeState

# Module paths of each family's sub-layers that can run merged, by block index.
SUBLAYER_PATHS = {
    "pixart": {"attn": "blocks.{i}.attn", "cross_attn": "blocks.{i}.cross_attn", "mlp": "blocks.{i}.mlp"},
    "sd3": {"mlp": "joint_blocks.{i}.x_block.mlp"},
    "flux": {"mlp": "double_blocks.{i}.img_mlp"},  # single blocks fuse the MLP with attention: none
    "qwen": {"mlp": "transformer_blocks.{i}.img_mlp"},
    "wan": {"mlp": "blocks.{i}.ffn"},
    "hunyuan": {"mlp": "double_blocks.{i}.img_mlp"},  # Flux's blocks
}
FUSED_SINGLE_BLOCKS = {"flux", "hunyuan"}  # single blocks that fuse the MLP with attention: no sub-layer


SUBLAYER_COUNTS = {"attn": Count.ATTN_CALLS, "cross_attn": Count.CROSS_ATTN_CALLS, "mlp": Count.MLP_CALLS}


def sublayer_paths(family: str, key: tuple[str, int]) -> dict[str, str]:
    """``{sub-layer: module path}`` of the block ``key`` (Flux's and HunyuanVideo's single blocks have none)."""
    if family in FUSED_SINGLE_BLOCKS and key[0] != "double_block":
        return {}
    return {name: path.format(i=key[1]) for name, path in SUBLAYER_PATHS.get(family, {}).items()}


@dataclass
class SublayerCall:
    """What the sub-layers of one block call do; set by the block patch for the duration of the call."""

    planned: Planned | None  # the block call's plan (None on a protected step)
    merged: frozenset[str] = frozenset()  # sub-layers that run on the merged tokens
    stored: frozenset[str] = frozenset()  # protected step: sub-layers whose outputs refresh the SDTM cache
    fuse: bool = False  # SDTM: merged tokens blend their sub-layer outputs with the cache
    # the image tokens at the start of a sub-layer's input (None: all of it); the tokens after them (reference
    # images in Flux's and QwenImage's image stream) run unmerged and are never cached
    tokens: int | None = None


def sublayer_forward(
    state: MergeState, config: MergeConfig, key: tuple[str, int], name: str, previous: Callable[..., torch.Tensor]
) -> Callable[..., torch.Tensor]:
    """``forward`` of sub-layer ``name`` of block ``key``, chained to ``previous``. Its first argument is the
    sub-layer's token input [rows, N, C] (queries, for a cross-attention); the others pass through."""

    counter = SUBLAYER_COUNTS[name]

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        call = state.sublayer_calls.get(key)
        if call is None:
            return previous(x, *args, **kwargs)
        n = x.shape[1] if call.tokens is None else call.tokens
        trailing = x.shape[1] - n
        if name in call.stored:
            out = previous(x, *args, **kwargs)
            update_cache.store(state, config, name, key, out[:, :n].clone() if trailing else out)
            return out
        planned = call.planned
        if (
            planned is None
            or name not in call.merged
            or trailing < 0
            or (x.shape[0], n) != (planned.plan.dst_idx.shape[0], planned.plan.num_tokens)
        ):
            return previous(x, *args, **kwargs)
        state.count(counter)
        merged = merge(x[:, :n] if trailing else x, planned.plan, planned.mode)
        out = previous(torch.cat([merged, x[:, n:]], dim=1) if trailing else merged, *args, **kwargs)
        image = unmerge(out[:, : merged.shape[1]] if trailing else out, planned.plan)
        if call.fuse:
            fused = update_cache.blend(state, config, name, key, image, planned.plan)
            if fused is not None:
                image = fused
        return torch.cat([image, out[:, merged.shape[1] :]], dim=1) if trailing else image

    return forward

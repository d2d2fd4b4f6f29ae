"""UNet adapter (SD1.x, SD2.x, SDXL): merges the tokens of ``BasicTransformerBlock``s through ComfyUI's
list-style patch points, which stack with other packs' patches.

* ``attn1_patch`` builds the block call's plan once (no_grad) and merges the self-attention input, the
  tokens that become q, k and v; ``attn1_output_patch`` unmerges. The plan travels in the block call's
  own ``extra_options`` dict, so patch and output patch can never pair across blocks or threads.
* Optional: ``attn2_patch``/``attn2_output_patch`` merge the cross-attention queries with the same plan,
  and an object patch on each block's ``ff.forward`` (chained to any previous one) merges the
  feed-forward input.
* A block is merged when its grid is at most ``max_downsample`` times smaller than the latent.
* Anything unexpected (a foreign patch changed the token count, an odd batch layout) skips merging
  for that call with one warning per run; sampling never fails because of this pack.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..merging.plan import merge, unmerge
from .chain import chain_object_patch
from .planner import Planned, TokenPlanner, merged_forward
from .state import Count, StateHolder

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .config import MergeConfig
    from .state import MergeState

PLAN_KEY = "tokenmerge_plan"  # in a block call's extra_options: (rows plan, mode)
ATTN2_KEY = "tokenmerge_attn2"


def token_grid(
    original_shape: list[int],
    num_tokens: int,
    activations_shape: list[int] | None = None,
) -> tuple[int, int, int] | None:
    """(h, w, downsample) of a block's token grid, or ``None`` if ``num_tokens`` fits no grid of the latent."""
    H, W = original_shape[-2:]
    downsample = math.ceil(math.sqrt(H * W / num_tokens))
    if activations_shape is not None and len(activations_shape) == 4:
        h, w = activations_shape[-2:]
    else:
        h, w = math.ceil(H / downsample), math.ceil(W / downsample)
    return (h, w, downsample) if h * w == num_tokens else None


def block_key(extra_options: dict) -> tuple | None:
    block = extra_options.get("block")
    return None if block is None else (block[0], block[1], extra_options.get("block_index", 0))


class UNetMerger(StateHolder):
    """Patch callables of one patched UNet; shares its :class:`MergeState` with the importance capture."""

    switch_sigma = None  # SDTM's stage switch: UNets do not run SDTM

    def __init__(
        self, config: MergeConfig, state: MergeState, blocks: Iterable[tuple] = (), levels: Iterable[int] = (1,)
    ) -> None:
        super().__init__(state)
        self.config = config
        self.planner = TokenPlanner(config, state, blocks)
        self.levels = [d for d in levels if d <= config.max_downsample]  # downsample factors of the merged grids

    def token_grids(self, latent_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """(1, h, w) of every merged level's token grid for a latent of ``latent_shape``, for the call wrapper."""
        H, W = latent_shape[-2:]
        return [(1, math.ceil(H / d), math.ceil(W / d)) for d in self.levels]

    def _plan(self, n: torch.Tensor, extra: dict) -> Planned | None:
        original_shape = extra.get("original_shape")
        if original_shape is None:
            self.planner.skip("layout", "a transformer block ran without original_shape")
            return None
        grid = token_grid(original_shape, n.shape[1], extra.get("activations_shape"))
        if grid is None:
            self.planner.skip(
                "grid",
                f"{n.shape[1]} tokens fit no grid of the {original_shape[-2:]} latent "
                "(a foreign patch changed the token count?)",
            )
            return None
        h, w, downsample = grid
        if downsample > self.config.max_downsample:
            return None
        return self.planner.plan(n, h, w, block_key(extra))

    # ------------------------------------------------------------------------------ patch points
    def attn1_patch(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict):
        key = block_key(extra_options)
        self.state.ff_plans.pop(key, None)
        planned = self._plan(n, extra_options)
        if planned is None:
            return n, context, value
        extra_options[PLAN_KEY] = planned
        if self.config.merge_ff:
            self.state.ff_plans[key] = planned
        merged = merge(n, planned.plan, planned.mode)
        if context is n and value is n:  # self-attention: merge q, k and v alike
            return merged, merged, merged
        return merged, context, value

    def attn1_output_patch(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        planned = extra_options.get(PLAN_KEY)
        if planned is None or n.shape[1] != planned.plan.num_out:
            return n
        return unmerge(n, planned.plan)

    def attn2_patch(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict):
        planned = extra_options.get(PLAN_KEY)
        if planned is None or n.shape[1] != planned.plan.num_tokens:
            return n, context, value
        extra_options[ATTN2_KEY] = True
        return merge(n, planned.plan, planned.mode), context, value

    def attn2_output_patch(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        planned = extra_options.get(PLAN_KEY)
        if not extra_options.pop(ATTN2_KEY, False) or n.shape[1] != planned.plan.num_out:
            return n
        return unmerge(n, planned.plan)

    def feed_forward(self, previous, key: tuple):
        """``ff.forward`` replacement for the block ``key``, chained to ``previous`` (the current forward)."""
        return merged_forward(self.state, key, previous, Count.FF_CALLS)


def transformer_blocks(diffusion_model: torch.nn.Module) -> dict[str, tuple]:
    """``{module path: (block, id, block_index)}`` of every BasicTransformerBlock of a UNet, keyed as
    ``transformer_options`` names them (("input", 1), ("middle", 0), ("output", 3))."""
    from_path = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}
    found = {}
    for path, module in diffusion_model.named_modules():
        parts = path.split(".")
        if type(module).__name__ != "BasicTransformerBlock" or parts[0] not in from_path:
            continue
        block_id = 0 if parts[0] == "middle_block" else int(parts[1])
        found[path] = (from_path[parts[0]], block_id, int(parts[parts.index("transformer_blocks") + 1]))
    return found


def attention_downsamples(diffusion_model: torch.nn.Module) -> list[int]:
    """Downsample factors of the UNet levels that hold attention (SD1.x: [1, 2, 4]; SDXL: [2, 4])."""
    levels, downsample = set(), 1
    for block in diffusion_model.input_blocks:
        for layer in block:
            if type(layer).__name__ == "Downsample":
                downsample *= 2
            elif type(layer).__name__ == "SpatialTransformer":
                levels.add(downsample)
    return sorted(levels)


def install(patched: Any, model: Any, config: MergeConfig, state: MergeState) -> UNetMerger:
    """Install the block patches of a UNet on ``patched`` (a clone of ``model``): attention patches on every
    transformer block and, with ``merge_ff``, chained object patches on their feed-forward."""
    blocks = transformer_blocks(model.model.diffusion_model)
    merger = UNetMerger(config, state, blocks.values(), attention_downsamples(model.model.diffusion_model))
    patched.set_model_attn1_patch(merger.attn1_patch)
    patched.set_model_attn1_output_patch(merger.attn1_output_patch)
    if config.merge_attn2:
        patched.set_model_attn2_patch(merger.attn2_patch)
        patched.set_model_attn2_output_patch(merger.attn2_output_patch)
    if config.merge_ff:
        for path, key in blocks.items():
            chain_object_patch(
                patched,
                f"diffusion_model.{path}.ff.forward",
                lambda previous, key=key: merger.feed_forward(previous, key),
            )
    return merger

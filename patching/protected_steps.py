"""SDTM's protected steps (Fang et al., arXiv 2505.11707, section 3.3) in the DiT adapter: every ``protect_every``-th
step runs its blocks in full and caches what the merged steps until the next protected one blend with, the
whole-block update or the sub-layer outputs (``update_cache.py`` keeps the cache). A merged token then takes
``cache_weight`` x its computed update + (1 - ``cache_weight``) x its cached one; independent tokens keep theirs.

Which calls are protected, and which stages follow before the next protected step, the call wrapper decides once
per call (``ModelCall.protected``, ``ModelCall.stages_ahead``); this module does the block side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import update_cache
from .dit_families import IN_PLACE_FAMILIES
from .state import Count, StateHolder
from .sublayers import SublayerCall

if TYPE_CHECKING:
    import torch

    from ..merging.plan import MergePlan
    from .config import MergeConfig
    from .state import MergeState


class ProtectedSteps(StateHolder):
    """The protected steps and cache blend of one patched DiT (``blends``: the method blends, i.e. SDTM)."""

    def __init__(
        self,
        config: MergeConfig,
        state: MergeState,
        family: str,
        sublayers: dict[tuple[str, int], frozenset[str]],
        *,
        blends: bool,
    ) -> None:
        super().__init__(state)
        self.config = config
        self.family = family
        self.sublayers = sublayers  # the adapter's: block -> its sub-layers that carry a patch
        self.blends = blends

    def active(self) -> bool:
        """SDTM: every ``protect_every``-th step runs in full and refreshes the cache (decided per call)."""
        call = self.state.call
        return call is not None and call.protected

    def refresh(self, key: tuple[str, int], rows: int) -> tuple[SublayerCall, bool]:
        """Protected call: what to cache until the next protected step, only what the merged steps in between
        blend with: the sub-layer outputs (handed to their patches in the returned call; the others' entries are
        dropped) and whether the whole-block update (the structure stage, or a whole-block detail stage)."""
        structure, detail = self.state.call.stages_ahead
        mlp_only = self.config.detail_mlp_only
        patched = self.sublayers.get(key, frozenset())
        if self.family == "pixart":  # every merged computation is a sub-layer
            stored = (patched if structure else frozenset()) | (
                (patched & {"mlp"} if mlp_only else patched) if detail else frozenset()
            )
            block = False
        else:
            stored = patched & {"mlp"} if detail and mlp_only else frozenset()
            block = structure or (detail and not mlp_only)
        for name in (patched - stored) | (frozenset() if block else {"block"}):  # before the call stores anew
            update_cache.drop(self.state, name, key, rows)
        return SublayerCall(None, stored=stored), block

    def store_block(self, key: object, before: torch.Tensor | None, after: torch.Tensor) -> None:
        """A protected block call: keep its whole-block update when ``before`` (its input) is given."""
        self.state.count(Count.PROTECTED_CALLS)
        if before is not None:
            update_cache.store(self.state, self.config, "block", key, after - before)

    def blended(self, computation: str, key: object, update: torch.Tensor, plan: MergePlan) -> torch.Tensor:
        """SDTM: the unmerged ``update`` with its merged tokens blended with the cache; otherwise ``update``."""
        if not self.blends:
            return update
        fused = update_cache.blend(self.state, self.config, computation, key, update, plan)
        if fused is None:
            return update
        self.state.count(Count.FUSED_CALLS)
        return fused

    def kept_input(self, img: torch.Tensor) -> torch.Tensor:
        """The image tokens entering an unmerged block call, as they are now: a copy where the block adds its
        update to its input in place (``IN_PLACE_FAMILIES``), since the SDTM cache needs the update."""
        return img.clone() if self.family in IN_PLACE_FAMILIES else img

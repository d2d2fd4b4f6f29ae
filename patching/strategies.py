"""One strategy per merging method: how the tokens of one block call are partitioned, once the planner
(``planner.py``) has decided that the call merges and how many tokens.

* :class:`ImportanceStrategy` (IBTM): the previous step's CFG importance map picks the destinations and the order in
  which tokens merge; before the first map (and where no map fits the call) spatial ToMe stands in.
* :class:`ToMeStrategy` (ToMeSD): one random destination per window, the most similar destination for the rest.
* :class:`SDTMStrategy`: the structure stage collapses the most uniform windows, the detail stage keeps one anchor
  per window (the token kept dependent the longest, or the most important); both count, per token, the merge calls
  since it was last independent (``SDTMRunState.last_independent``, reset every run). The stage's prompt scale and
  whether the detail stage merges only the MLP travel with the partition; the protected steps and the cache their
  merged steps blend with are ``protected_steps.py``.

A strategy reads its per-run data from the :class:`MergeState` it shares with the planner (``StateHolder``: inside a
compiled model call, through the per-thread current state), so it holds only the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from ..merging.ibtm import importance_plan
from ..merging.sdtm import detail_plan, structure_plan, update_last_independent
from ..merging.similarity import grid_positions
from ..merging.tome import tome_plan
from .config import DetailDestination, Match, Method
from .model_call import grid_importance
from .state import Count, StateHolder

if TYPE_CHECKING:
    from ..merging.plan import MergePlan
    from .config import MergeConfig
    from .model_call import GridImportance, ModelCall
    from .state import MergeState


class BlockTokens(NamedTuple):
    """What a strategy sees of one block call: the matching features of each sample's grid and the merge count."""

    call: ModelCall
    metric: torch.Tensor  # [S * frames, h * w, C], the per-sample mean of the call's rows
    h: int
    w: int
    r: int  # tokens to merge away per grid
    seed: torch.Tensor | None  # [] int64: the block's stream of random draws this step


class Partition(NamedTuple):
    plan: MergePlan  # one partition per sample (and frame)
    mlp_only: bool = False  # SDTM detail stage: merge only the MLP input, attention runs in full
    text_scale: float = 1.0  # SDTM prompt reweighting of the call's stage (text keys get log(text_scale))


class MergeStrategy(StateHolder):
    """The protocol: ``partition`` of one block call (``None``: the call runs unmerged), plus what the rest of the
    pack must provide for the method (the CFG importance map, the cache blend of SDTM's merged steps)."""

    uses_importance = False  # the post-CFG capture must keep the importance map for the next step
    blends_cache = False  # merged updates blend with the cache of the protected steps (SDTM)

    def __init__(self, config: MergeConfig, state: MergeState) -> None:
        super().__init__(state)
        self.config = config

    def partition(self, tokens: BlockTokens) -> Partition | None:
        raise NotImplementedError

    def importance_grid(self, call: ModelCall, rows: int, h: int, w: int) -> GridImportance | None:
        """The previous step's importance map on the h x w grid for ``rows`` = S * frames grids, or ``None``
        (before the first map, or where the map does not fit the call)."""
        pooled = call.importance.get((h, w))
        if pooled is None and call.importance:  # the map fits the call, on a grid the wrapper did not foresee
            pooled = grid_importance(self.state.importance.reshape(rows, *call.latent_shape[-2:]), h, w)
        if pooled is None or pooled.grid.shape[0] != rows:
            return None
        return pooled


class ToMeStrategy(MergeStrategy):
    def partition(self, tokens: BlockTokens) -> Partition | None:
        plan = tome_plan(tokens.metric, tokens.h, tokens.w, tokens.r, *self.config.window, seed=tokens.seed)
        if plan is None:
            return None
        self.state.count(Count.TOME_CALLS)
        return Partition(plan)


class ImportanceStrategy(ToMeStrategy):
    uses_importance = True

    def partition(self, tokens: BlockTokens) -> Partition | None:
        cfg = self.config
        metric, h, w = tokens.metric, tokens.h, tokens.w
        importance = self.importance_grid(tokens.call, metric.shape[0], h, w)
        if importance is None:  # before the first importance map: spatial ToMe
            return super().partition(tokens)
        positions = grid_positions(h, w, metric.device) if cfg.match is Match.POSITION else None
        plan = importance_plan(
            metric,
            importance.grid,
            tokens.r,
            cfg.dst_fraction,
            cfg.pool_factor,
            cfg.dst_mode,
            tokens.seed,
            positions,
            importance.order,
        )
        self.state.count(Count.IMPORTANCE_CALLS)
        return Partition(plan)


class SDTMStrategy(MergeStrategy):
    blends_cache = True

    def __init__(self, config: MergeConfig, state: MergeState) -> None:
        super().__init__(config, state)
        self.uses_importance = config.detail_destination is DetailDestination.IMPORTANCE

    def partition(self, tokens: BlockTokens) -> Partition | None:
        cfg, state, call = self.config, self.state, tokens.call
        metric, h, w, r = tokens.metric, tokens.h, tokens.w, tokens.r
        last = state.sdtm.last_independent
        if last is None or last.shape != metric.shape[:2] or last.device != metric.device:
            last = torch.zeros(metric.shape[:2], dtype=torch.long, device=metric.device)
        if call.structure:
            plan = structure_plan(metric, h, w, r, cfg.window, last, cfg.similarity_weight, tokens.seed)
            counter = Count.STRUCTURE_CALLS
        else:
            priority = None
            if self.uses_importance:
                importance = self.importance_grid(call, metric.shape[0], h, w)
                priority = None if importance is None else importance.grid
            plan = detail_plan(metric, h, w, r, cfg.window, last if priority is None else priority, tokens.seed)
            counter = Count.DETAIL_CALLS
        if plan is None:
            return None
        state.count(counter)
        state.sdtm.last_independent = update_last_independent(last, plan)
        text_scale = cfg.prompt_scale_structure if call.structure else cfg.prompt_scale_detail
        return Partition(plan, not call.structure and cfg.detail_mlp_only, text_scale)


STRATEGIES: dict[Method, type[MergeStrategy]] = {
    Method.IMPORTANCE: ImportanceStrategy,
    Method.TOME: ToMeStrategy,
    Method.SDTM: SDTMStrategy,
}


def strategy_for(config: MergeConfig, state: MergeState) -> MergeStrategy:
    """The strategy of ``config.method``, sharing ``state``."""
    return STRATEGIES[config.method](config, state)

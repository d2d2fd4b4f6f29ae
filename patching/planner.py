"""One merge plan per block call, for any family and method: the gating common to every method, then the method's
partition (``strategies.py``).

The family adapters (``unet.py``, ``dit.py``) find the token grid and hand the block's tokens here; this module
decides whether the call merges (layout, grid size, step window, merge count), builds the matching features from
the per-sample mean of the call's rows, asks the method's strategy for one partition per sample, and repeats it for
every chunk (cond, uncond, extra conds) so a sample's rows share one partition.

Everything per step (position in the run, ratio, mode, seed stream, the importance map pooled to each grid) was
decided by the call wrapper (``model_call.py``); what runs here per block is tensor work on the block's tokens
plus Python on shapes and those decisions, so it traces into a ``torch.compile`` graph and reads nothing back
to the host.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..merging.draws import stream_of
from ..merging.plan import MergeMode, MergePlan, merge, stack_frames, unmerge
from .config import Match
from .state import Count, StateHolder
from .strategies import BlockTokens, strategy_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .config import MergeConfig
    from .model_call import ModelCall
    from .state import MergeState


class Planned(NamedTuple):
    plan: MergePlan  # for every row of the call
    mode: MergeMode
    mlp_only: bool = False  # SDTM detail stage: merge only the MLP input, attention runs in full
    text_scale: float = 1.0  # SDTM prompt reweighting of the call's stage (text keys get log(text_scale))


class PlanEvent(NamedTuple):
    """One block call's merge plan, as the planner emits it to the state's plan observers (the heatmap recorder)."""

    step: int  # 0-based index in the run's sigma schedule
    steps: int  # steps of the run
    sigma: float
    key: object  # the block
    plan: MergePlan  # for samples * frames grids of h x w tokens
    samples: int
    frames: int
    h: int
    w: int


def merged_forward(
    state: MergeState, key: object, previous: Callable[[torch.Tensor], torch.Tensor], counter: Count
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` of a block's feed-forward/MLP submodule, chained to ``previous``: it runs on the tokens merged
    by the plan its block handed over in ``state.ff_plans[key]`` (taken once, so never reused stale)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        planned = state.ff_plans.pop(key, None)
        if planned is None or x.shape[:2] != (planned.plan.dst_idx.shape[0], planned.plan.num_tokens):
            return previous(x)
        state.count(counter)
        return unmerge(previous(merge(x, planned.plan, planned.mode)), planned.plan)

    return forward


def block_salt(key: object) -> int:
    """The constant a block adds to the step's seed stream (the same in every process)."""
    return stream_of(zlib.crc32(repr(key).encode()))


class TokenPlanner(StateHolder):
    def __init__(self, config: MergeConfig, state: MergeState, blocks: Iterable[object] = ()) -> None:
        super().__init__(state)
        self.config = config
        self.strategy = strategy_for(config, state)
        # Per block, a constant added to the step's seed stream: every block draws its own destinations, and
        # cond and uncond split into separate calls draw the same ones.
        self.salts = {key: block_salt(key) for key in blocks}

    def skip(self, reason: str, message: str) -> None:
        self.state.warn_once(reason, f"tokenmerge: {message}; merging skipped for such calls")
        self.state.count(Count.SKIPPED)

    def plan(self, x: torch.Tensor, h: int, w: int, key: object, frames: int = 1) -> Planned | None:
        """Plan for ``x`` [rows, frames * h * w, C] of one block call of the call in progress, or ``None`` to run
        it unmerged. Never raises: a failure skips merging for the call, with one warning per run."""
        call = self.state.call
        if call is None:
            return None
        try:
            with torch.profiler.record_function("tokenmerge.match"):
                return self._plan(call, x, h, w, key, frames)
        except Exception as exc:  # noqa: BLE001  never fail a run because of merging
            self.skip("plan_error", f"building the merge plan failed ({exc!r})")
            return None

    def _plan(self, call: ModelCall, x: torch.Tensor, h: int, w: int, key: object, frames: int) -> Planned | None:
        cfg, state = self.config, self.state
        rows, N, C = x.shape
        chunks = call.chunks
        if rows % chunks or frames * h * w != N:
            self.skip(
                "layout",
                f"unexpected block input {tuple(x.shape)} for {chunks} chunks and a "
                f"{frames}x{h}x{w} grid (a foreign patch changed the tokens?)",
            )
            return None
        sy, sx = cfg.window
        if h < 2 * sy or w < 2 * sx:  # a latent this small gains nothing from merging, only distortion
            self.skip(
                "small_grid",
                f"the {h}x{w} token grid is too small to merge (it needs at least 2x2 windows of {sy}x{sx} tokens)",
            )
            return None
        if not call.active:
            return None
        n = h * w
        r = call.merge_counts.get((h, w))
        if r is None:  # a grid the call wrapper did not foresee
            r = int(n * call.ratio)
        if r == 0:
            return None
        samples = rows // chunks
        # [chunks*S, T*n, C] -> [S*T, n, C]: one partition per sample (and frame), from its rows' mean
        metric = x.detach().view(chunks, samples, N, C).mean(0).reshape(samples * frames, n, C)
        if cfg.match is Match.NORMALIZED:
            metric = torch.nn.functional.layer_norm(metric.float(), (C,))
        seed = None if call.seed is None else call.seed + self.salts.get(key, 0)
        partition = self.strategy.partition(BlockTokens(call, metric, h, w, r, seed))
        if partition is None:
            return None
        plan = partition.plan
        observers = [observer for observer in state.plan_observers if observer.wants_plans]
        if observers:  # the heatmap preview's recorder, when a preview reads this run
            event = PlanEvent(call.step, call.steps, call.sigma or 0.0, key, plan, samples, frames, h, w)
            for observer in observers:
                observer.on_plan(event)
        plan = stack_frames(plan, frames)
        state.count(Count.MERGED_CALLS)
        if call.mode is MergeMode.PRUNE:
            state.count(Count.PRUNE_CALLS)
        state.count(Count.TOKENS_IN, N)
        state.count(Count.TOKENS_OUT, plan.num_out)
        return Planned(plan.rows(chunks), call.mode, partition.mlp_only, partition.text_scale)

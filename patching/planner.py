"""One merge plan per block call, for any family: the step's ratio and mode, importance or ToMe partition.

The family adapters (``unet.py``, ``dit.py``) find the token grid and hand the block's tokens here;
this module decides whether to merge, builds the plan on the per-sample mean of the call's rows and
repeats it for every chunk (cond, uncond, extra conds) so a sample's rows share one partition.

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
from ..merging.ibtm import importance_plan
from ..merging.plan import MergeMode, MergePlan, merge, stack_frames, unmerge
from ..merging.sdtm import detail_plan, structure_plan, update_last_independent
from ..merging.similarity import grid_positions
from ..merging.tome import tome_plan
from .config import DetailDestination, Match, Method
from .model_call import grid_importance
from .recorder import plan_categories
from .state import StateHolder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .config import MergeConfig
    from .model_call import GridImportance, ModelCall
    from .state import MergeState


class Planned(NamedTuple):
    plan: MergePlan  # for every row of the call
    mode: MergeMode
    mlp_only: bool = False  # SDTM detail stage: merge only the MLP input, attention runs in full
    text_scale: float = 1.0  # SDTM prompt reweighting of the call's stage (text keys get log(text_scale))


def merged_forward(
    state: MergeState, key: object, previous: Callable[[torch.Tensor], torch.Tensor], counter: str
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
        # Per block, a constant added to the step's seed stream: every block draws its own destinations, and
        # cond and uncond split into separate calls draw the same ones.
        self.salts = {key: block_salt(key) for key in blocks}

    def skip(self, reason: str, message: str) -> None:
        self.state.warn_once(reason, f"tokenmerge: {message}; merging skipped for such calls")
        self.state.count("skipped")

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
        mlp_only, text_scale = False, 1.0
        importance = self.importance_grid(call, samples * frames, h, w) if cfg.method is Method.IMPORTANCE else None
        if cfg.method is Method.SDTM:
            planned = self._sdtm(call, metric, h, w, r, seed, samples * frames)
            if planned is None:
                return None
            plan, mlp_only, text_scale = planned
        elif importance is not None:
            positions = grid_positions(h, w, metric.device) if cfg.match is Match.POSITION else None
            plan = importance_plan(
                metric,
                importance.grid,
                r,
                cfg.dst_fraction,
                cfg.pool_factor,
                cfg.dst_mode,
                seed,
                positions,
                importance.order,
            )
            state.count("importance_calls")
        else:  # spatial ToMe, and IBTM before the first importance map
            plan = tome_plan(metric, h, w, r, *cfg.window, seed=seed)
            if plan is None:
                return None
            state.count("tome_calls")
        if state.recorder.enabled:
            state.recorder.add_assignment(
                call.step, call.steps, call.sigma or 0.0, key, plan_categories(plan, samples, frames, h, w)
            )
        plan = stack_frames(plan, frames)
        state.count("merged_calls")
        if call.mode is MergeMode.PRUNE:
            state.count("prune_calls")
        state.count("tokens_in", N)
        state.count("tokens_out", plan.num_out)
        return Planned(plan.rows(chunks), call.mode, mlp_only, text_scale)

    def importance_grid(self, call: ModelCall, rows: int, h: int, w: int) -> GridImportance | None:
        """The previous step's importance map on the h x w grid for ``rows`` = S * frames grids, or ``None``
        (before the first map, or where the map does not fit the call)."""
        pooled = call.importance.get((h, w))
        if pooled is None and call.importance:  # the map fits the call, on a grid the wrapper did not foresee
            pooled = grid_importance(self.state.importance.reshape(rows, *call.latent_shape[-2:]), h, w)
        if pooled is None or pooled.grid.shape[0] != rows:
            return None
        return pooled

    def _sdtm(
        self, call: ModelCall, metric: torch.Tensor, h: int, w: int, r: int, seed: torch.Tensor | None, rows: int
    ) -> tuple[MergePlan, bool, float] | None:
        cfg, state = self.config, self.state
        last = state.last_independent
        if last is None or last.shape != metric.shape[:2] or last.device != metric.device:
            last = torch.zeros(metric.shape[:2], dtype=torch.long, device=metric.device)
        if call.structure:
            plan = structure_plan(metric, h, w, r, cfg.window, last, cfg.similarity_weight, seed)
            if plan is not None:
                state.count("structure_calls")
        else:
            priority = None
            if cfg.detail_destination is DetailDestination.IMPORTANCE:
                importance = self.importance_grid(call, rows, h, w)
                priority = None if importance is None else importance.grid
            plan = detail_plan(metric, h, w, r, cfg.window, last if priority is None else priority, seed)
            if plan is not None:
                state.count("detail_calls")
        if plan is None:
            return None
        state.last_independent = update_last_independent(last, plan)
        text_scale = cfg.prompt_scale_structure if call.structure else cfg.prompt_scale_detail
        return plan, not call.structure and cfg.detail_mlp_only, text_scale

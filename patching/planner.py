"""One merge plan per block call, for any family: step position, ratio, importance or ToMe partition.

The family adapters (``unet.py``, ``dit.py``) find the token grid and hand the block's tokens here;
this module decides whether to merge, builds the plan on the per-sample mean of the call's rows and
repeats it for every chunk (cond, uncond, extra conds) so a sample's rows share one partition.
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..merging.ibtm import importance_plan
from ..merging.importance import to_token_grid
from ..merging.plan import MergeMode, MergePlan, merge, stack_frames, unmerge
from ..merging.sdtm import cosine_ratio, detail_plan, structure_plan, update_last_independent
from ..merging.similarity import grid_positions
from ..merging.tome import tome_plan
from .config import DetailDestination, Match, Method
from .recorder import plan_categories
from .steps import current_sigma, run_steps, step_position

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import MergeConfig
    from .state import MergeState


class Planned(NamedTuple):
    plan: MergePlan  # for every row of the call
    mode: MergeMode
    mlp_only: bool = False  # SDTM detail stage: merge only the MLP input, attention runs in full
    text_scale: float = 1.0  # SDTM prompt reweighting of the call's stage (text keys get log(text_scale))


def merged_forward(state: MergeState, key: object, previous: Callable[[torch.Tensor], torch.Tensor],
                   counter: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` of a block's feed-forward/MLP submodule, chained to ``previous``: it runs on the tokens merged
    by the plan its block handed over in ``state.ff_plans[key]`` (taken once, so never reused stale)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        planned = state.ff_plans.pop(key, None)
        if planned is None or x.shape[:2] != (planned.plan.dst_idx.shape[0], planned.plan.num_tokens):
            return previous(x)
        state.counters[counter] += 1
        return unmerge(previous(merge(x, planned.plan, planned.mode)), planned.plan)

    return forward


class TokenPlanner:
    def __init__(self, config: MergeConfig, state: MergeState, switch_sigma: float | None = None) -> None:
        self.config = config
        self.state = state
        self.switch_sigma = switch_sigma  # SDTM: sigmas above it are the structure stage

    def generator(self, step: int, key: object) -> torch.Generator:
        # Seeded per (seed, step, block) rather than advanced per call: cond and uncond split into
        # separate calls draw the same partition, and a rerun reproduces it exactly.
        mix = zlib.crc32(repr((self.config.seed, step, key)).encode())
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + mix)

    def skip(self, reason: str, message: str) -> None:
        self.state.warn_once(reason, f"tokenmerge: {message}; merging skipped for such calls")
        self.state.counters["skipped"] += 1

    def plan(self, x: torch.Tensor, h: int, w: int, options: dict, latent_hw: list[int], key: object,
             frames: int = 1) -> Planned | None:
        """Plan for ``x`` [rows, frames * h * w, C] of one block call, or ``None`` to run it unmerged.

        ``options`` holds the call's ``cond_or_uncond``, ``sigmas`` and ``sample_sigmas``; ``latent_hw`` is
        the latent's spatial size, which an importance map must match. Never raises: a failure skips
        merging for the call, with one warning per run.
        """
        try:
            with torch.profiler.record_function("tokenmerge.match"):
                return self._plan(x, h, w, options, latent_hw, key, frames)
        except Exception as exc:  # noqa: BLE001  never fail a run because of merging
            self.skip("plan_error", f"building the merge plan failed ({exc!r})")
            return None

    def _plan(self, x: torch.Tensor, h: int, w: int, options: dict, latent_hw: list[int], key: object,
              frames: int) -> Planned | None:
        cfg, state = self.config, self.state
        rows, N, C = x.shape
        chunks = len(options.get("cond_or_uncond") or [0])
        if rows % chunks or frames * h * w != N:
            self.skip("layout", f"unexpected block input {tuple(x.shape)} for {chunks} chunks and a "
                      f"{frames}x{h}x{w} grid (a foreign patch changed the tokens?)")
            return None
        sy, sx = cfg.window
        if h < 2 * sy or w < 2 * sx:  # a latent this small gains nothing from merging, only distortion
            self.skip("small_grid", f"the {h}x{w} token grid is too small to merge (it needs at least 2x2 "
                      f"windows of {sy}x{sx} tokens)")
            return None
        step, progress = step_position(options)
        if not cfg.start_percent <= progress <= cfg.end_percent:
            return None
        n = h * w
        ratio = cosine_ratio(cfg.ratio, cfg.deviation, progress) if cfg.method is Method.SDTM else cfg.ratio
        r = int(n * ratio)
        if r == 0:
            return None
        samples = rows // chunks
        # [chunks*S, T*n, C] -> [S*T, n, C]: one partition per sample (and frame), from its rows' mean
        metric = x.detach().view(chunks, samples, N, C).mean(0).reshape(samples * frames, n, C)
        if cfg.match is Match.NORMALIZED:
            metric = torch.nn.functional.layer_norm(metric.float(), (C,))
        generator = self.generator(step, key)
        mlp_only, text_scale = False, 1.0
        importance = self._importance_grid(samples, frames, latent_hw, h, w) if cfg.method is Method.IMPORTANCE \
            else None
        if cfg.method is Method.SDTM:
            planned = self._sdtm(metric, h, w, r, options, generator, samples, frames, latent_hw)
            if planned is None:
                return None
            plan, mlp_only, text_scale = planned
        elif importance is not None:
            positions = grid_positions(h, w, metric.device) if cfg.match is Match.POSITION else None
            plan = importance_plan(metric, importance, r, cfg.dst_fraction, cfg.pool_factor, cfg.dst_mode,
                                   generator, positions)
            state.counters["importance_calls"] += 1
        else:
            plan = tome_plan(metric, h, w, r, *cfg.window, generator=generator)
            if plan is None:
                return None
            state.counters["tome_calls"] += 1
        if state.recorder.enabled:
            state.recorder.add_assignment(step, run_steps(options), current_sigma(options) or 0.0, key,
                                          plan_categories(plan, samples, frames, h, w))
        plan = stack_frames(plan, frames)
        mode = MergeMode.PRUNE if progress < cfg.prune_until else MergeMode.MEAN
        state.counters["merged_calls"] += 1
        state.counters["prune_calls"] += mode is MergeMode.PRUNE
        state.counters["tokens_in"] += N
        state.counters["tokens_out"] += plan.num_out
        return Planned(plan.rows(chunks), mode, mlp_only, text_scale)

    def structure_stage(self, options: dict) -> bool:
        """SDTM: whether the call ``options`` describes falls in the structure stage (sigma above the switch)."""
        sigma = current_sigma(options)
        return sigma is None or self.switch_sigma is None or sigma > self.switch_sigma

    def _sdtm(self, metric: torch.Tensor, h: int, w: int, r: int, options: dict, generator: torch.Generator,
              samples: int, frames: int, latent_hw: list[int]) -> tuple[MergePlan, bool, float] | None:
        cfg, state = self.config, self.state
        structure = self.structure_stage(options)
        last = state.last_independent
        if last is None or last.shape != metric.shape[:2] or last.device != metric.device:
            last = torch.zeros(metric.shape[:2], dtype=torch.long, device=metric.device)
        if structure:
            plan = structure_plan(metric, h, w, r, cfg.window, last, cfg.similarity_weight, generator)
            state.counters["structure_calls"] += plan is not None
        else:
            priority = None
            if cfg.detail_destination is DetailDestination.IMPORTANCE:
                priority = self._importance_grid(samples, frames, latent_hw, h, w)
            plan = detail_plan(metric, h, w, r, cfg.window, last if priority is None else priority, generator)
            state.counters["detail_calls"] += plan is not None
        if plan is None:
            return None
        state.last_independent = update_last_independent(last, plan)
        text_scale = cfg.prompt_scale_structure if structure else cfg.prompt_scale_detail
        return plan, not structure and cfg.detail_mlp_only, text_scale

    def _importance_grid(self, samples: int, frames: int, latent_hw: list[int], h: int, w: int,
                         ) -> torch.Tensor | None:
        """The latest importance map on the block's token grid, [S * frames, h * w], or ``None``."""
        importance = self.state.importance
        if importance is None:
            return None  # warm-up before the first map, or no signal at all: spatial ToMe
        # video-shaped latents ([B, C, T, H, W]: Wan, QwenImage) give [S, T, H, W] maps, even with one frame
        expected = (samples, *((frames,) if importance.ndim == 4 else ()), *latent_hw)
        if tuple(importance.shape) != expected:
            self.state.warn_once("importance_shape", f"tokenmerge: importance map {tuple(importance.shape)} does "
                                 f"not match the call's latent {list(expected)} (area conditioning?); spatial "
                                 "ToMe is used for such calls", logging.INFO)
            return None
        return to_token_grid(importance.reshape(samples * frames, *latent_hw), h, w)

"""One merge plan per block call, for any family: step position, ratio, importance or ToMe partition.

The family adapters (``unet.py``, ``dit.py``) find the token grid and hand the block's tokens here;
this module decides whether to merge, builds the plan on the per-sample mean of the call's rows and
repeats it for every chunk (cond, uncond, extra conds) so a sample's rows share one partition.
"""

from __future__ import annotations

import logging
import zlib
from typing import TYPE_CHECKING

import torch

from ..merging.ibtm import importance_plan
from ..merging.importance import to_token_grid
from ..merging.plan import MergeMode, MergePlan, stack_frames
from ..merging.tome import tome_plan
from .config import Method
from .steps import step_position

if TYPE_CHECKING:
    from .config import MergeConfig
    from .state import MergeState


class TokenPlanner:
    def __init__(self, config: MergeConfig, state: MergeState) -> None:
        self.config = config
        self.state = state

    def generator(self, step: int, key: object) -> torch.Generator:
        # Seeded per (seed, step, block) rather than advanced per call: cond and uncond split into
        # separate calls draw the same partition, and a rerun reproduces it exactly.
        mix = zlib.crc32(repr((self.config.seed, step, key)).encode())
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + mix)

    def skip(self, reason: str, message: str) -> None:
        self.state.warn_once(reason, f"tokenmerge: {message}; merging skipped for such calls")
        self.state.counters["skipped"] += 1

    def plan(self, x: torch.Tensor, h: int, w: int, options: dict, latent_hw: list[int], key: object,
             frames: int = 1) -> tuple[MergePlan, MergeMode] | None:
        """Plan for ``x`` [rows, frames * h * w, C] of one block call, or ``None`` to run it unmerged.

        ``options`` holds the call's ``cond_or_uncond``, ``sigmas`` and ``sample_sigmas``; ``latent_hw`` is
        the latent's spatial size, which an importance map must match.
        """
        cfg, state = self.config, self.state
        rows, N, C = x.shape
        chunks = len(options.get("cond_or_uncond") or [0])
        if rows % chunks or frames * h * w != N:
            self.skip("layout", f"unexpected block input {tuple(x.shape)} for {chunks} chunks and a "
                      f"{frames}x{h}x{w} grid (a foreign patch changed the tokens?)")
            return None
        step, progress = step_position(options)
        if not cfg.start_percent <= progress <= cfg.end_percent:
            return None
        n = h * w
        r = int(n * cfg.ratio)
        if r == 0:
            return None
        samples = rows // chunks
        # [chunks*S, T*n, C] -> [S*T, n, C]: one partition per sample (and frame), from its rows' mean
        metric = x.detach().view(chunks, samples, N, C).mean(0).reshape(samples * frames, n, C)
        generator = self.generator(step, key)
        importance = self._importance(samples, frames, latent_hw) if cfg.method is Method.IMPORTANCE else None
        if importance is not None:
            grid_importance = to_token_grid(importance.reshape(samples * frames, *latent_hw), h, w)
            plan = importance_plan(metric, grid_importance, r, cfg.dst_fraction, cfg.pool_factor, cfg.dst_mode,
                                   generator)
            state.counters["importance_calls"] += 1
        else:
            plan = tome_plan(metric, h, w, r, *cfg.window, generator=generator)
            if plan is None:
                return None
            state.counters["tome_calls"] += 1
        plan = stack_frames(plan, frames)
        mode = MergeMode.PRUNE if progress < cfg.prune_until else MergeMode.MEAN
        state.counters["merged_calls"] += 1
        state.counters["prune_calls"] += mode is MergeMode.PRUNE
        state.counters["tokens_in"] += N
        state.counters["tokens_out"] += plan.num_out
        return plan.rows(chunks), mode

    def _importance(self, samples: int, frames: int, latent_hw: list[int]) -> torch.Tensor | None:
        importance = self.state.importance
        if importance is None:
            return None  # warm-up before the first map, or no signal at all: spatial ToMe
        expected = (samples, *((frames,) if frames > 1 else ()), *latent_hw)
        if tuple(importance.shape) != expected:
            self.state.warn_once("importance_shape", f"tokenmerge: importance map {tuple(importance.shape)} does "
                                 f"not match the call's latent {list(expected)} (area conditioning?); spatial "
                                 "ToMe is used for such calls", logging.INFO)
            return None
        return importance

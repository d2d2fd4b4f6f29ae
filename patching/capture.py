"""Importance capture: a post-CFG function (a list in ComfyUI, so it composes with other nodes) that keeps
mean_C |cond_denoised - uncond_denoised| / sigma per latent sample. The map of step t drives step t + 1.

Without an uncond pass the configured fallback applies: none (spatial ToMe), or mean_C |x0_t - x0_{t-1}| / sigma,
how much each token's x0 prediction changed since the previous step (no map at the first step).

Methods that do not merge by importance (spatial ToMe, SDTM) compute maps only while a heatmap preview
records them; otherwise the function returns at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from ..merging.importance import cfg_importance
from .config import Fallback
from .state import Count, SharedAcrossClones
from .steps import current_sigma, run_steps, step_position

if TYPE_CHECKING:
    from .state import MergeState


class ImportanceCapture(SharedAcrossClones):
    def __init__(self, state: MergeState, fallback: Fallback, *, merges_by_importance: bool) -> None:
        self.state = state
        self.fallback = fallback
        self.merges_by_importance = merges_by_importance

    def __call__(self, args: dict) -> object:
        state = self.state
        denoised = args["denoised"]
        if not (self.merges_by_importance or state.recorder.enabled):
            return denoised
        with torch.profiler.record_function("tokenmerge.capture"):
            self._capture(args, denoised)
        if state.recorder.enabled and state.importance is not None:
            options = {
                "sigmas": args["sigma"],
                "sample_sigmas": args.get("model_options", {}).get("transformer_options", {}).get("sample_sigmas"),
            }
            state.recorder.add_importance(
                step_position(options)[0], run_steps(options), current_sigma(options) or 0.0, state.importance
            )
        return denoised

    def _capture(self, args: dict, denoised: object) -> None:
        state = self.state
        if args.get("uncond") is not None:
            state.importance = cfg_importance(args["cond_denoised"], args["uncond_denoised"], args["sigma"])
            state.count(Count.MAPS_CAPTURED)
            return
        state.no_uncond = True  # the uncond pass was skipped: no CFG importance this step
        if self.fallback is Fallback.X0_CHANGE:
            state.warn_once(
                "no_uncond",
                "tokenmerge: no uncond pass (cfg 1 or a guider without negative): "
                "importance = change of the x0 prediction since the previous step",
                logging.INFO,
            )
            previous = state.previous_x0
            if previous is not None and previous.shape == denoised.shape:
                state.importance = cfg_importance(denoised, previous, args["sigma"])
                state.count(Count.FALLBACK_MAPS)
            state.previous_x0 = denoised.detach().clone()
        elif self.merges_by_importance:
            state.warn_once(
                "no_uncond",
                "tokenmerge: no uncond pass (cfg 1 or a guider without negative): "
                "importance merging falls back to spatial ToMe at the same ratio",
                logging.INFO,
            )

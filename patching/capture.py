"""Importance capture: a post-CFG function (a list in ComfyUI, so it composes with other nodes) that keeps
mean_C |cond_denoised - uncond_denoised| / sigma per latent sample. The map of step t drives step t + 1."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..merging.importance import cfg_importance

if TYPE_CHECKING:
    from .state import MergeState


class ImportanceCapture:
    def __init__(self, state: MergeState) -> None:
        self.state = state

    def __call__(self, args: dict) -> object:
        if args.get("uncond") is None:  # the uncond pass was skipped: no importance signal this step
            self.state.no_uncond = True
            self.state.warn_once("no_uncond", "tokenmerge: no uncond pass (cfg 1 or a guider without negative): "
                                 "importance merging falls back to spatial ToMe at the same ratio", logging.INFO)
            return args["denoised"]
        self.state.importance = cfg_importance(args["cond_denoised"], args["uncond_denoised"], args["sigma"])
        self.state.counters["maps_captured"] += 1
        return args["denoised"]

    def __deepcopy__(self, memo: dict) -> ImportanceCapture:
        return self

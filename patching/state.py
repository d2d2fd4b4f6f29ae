"""Runtime data of one patched model: the latest importance map, per-run counters, warn-once flags and the
heatmap recorder, plus the state of the model call in progress, which is per thread."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING

from .recorder import HeatmapRecorder

if TYPE_CHECKING:
    import torch

    from ..merging.plan import MergePlan
    from .sublayers import SublayerCall

logger = logging.getLogger(__name__)


class CallState(threading.local):
    """What one model call hands from its wrapper and block patches to the patches it calls, per thread: newer
    ComfyUI releases run the chunks of one model call in parallel threads (one per GPU) on clones that share
    the :class:`MergeState`."""

    def __init__(self) -> None:
        self.call: dict | None = None  # the model call in progress: latent_shape, cond_or_uncond, sigmas, ...
        self.ff_plans: dict[tuple, tuple[MergePlan, object]] = {}  # attn1 -> feed-forward hand-off per block
        self.sublayer_calls: dict[tuple, SublayerCall] = {}  # DiT block -> its sub-layer patches, for one call


class MergeState:
    """Owned by one patched clone (captured by its patches); ``reset()`` at the start of every sampling run.

    ComfyUI 0.3.75 deep-copies ``model_options`` on every clone, the newest version shares leaves:
    ``__deepcopy__`` returns ``self`` so both behave the same (a downstream LoRA clone keeps this state).
    The call in progress (``call``, ``ff_plans``, ``sublayer_calls``) is per thread.
    """

    __slots__ = ("block_cache", "counters", "importance", "last_independent", "local", "no_uncond", "previous_x0",
                 "recorder", "warned")

    def __init__(self) -> None:
        self.recorder = HeatmapRecorder()  # outlives runs: a preview's request holds until it stops reading
        self.reset()

    def reset(self) -> None:
        self.recorder.begin_run()
        self.importance: torch.Tensor | None = None  # [B, H, W] of the latest CFG step, latent resolution
        self.no_uncond = False  # a CFG step ran without an uncond pass (cfg 1, BasicGuider, ...)
        self.previous_x0: torch.Tensor | None = None  # last step's denoised output, for the x0-change fallback
        self.local = CallState()
        self.counters: Counter[str] = Counter()
        self.warned: set[str] = set()
        self.last_independent: torch.Tensor | None = None  # SDTM: merge calls since each token was independent
        self.block_cache: dict[tuple, torch.Tensor] = {}  # SDTM: updates of the last protected step (update_cache)

    @property
    def call(self) -> dict | None:
        return self.local.call

    @call.setter
    def call(self, value: dict | None) -> None:
        self.local.call = value

    @property
    def ff_plans(self) -> dict[tuple, tuple[MergePlan, object]]:
        return self.local.ff_plans

    @property
    def sublayer_calls(self) -> dict[tuple, SublayerCall]:
        return self.local.sublayer_calls

    @property
    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.block_cache.values())

    def warn_once(self, key: str, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` the first time ``key`` comes up in this run."""
        if key not in self.warned:
            self.warned.add(key)
            logger.log(level, message)

    def __deepcopy__(self, memo: dict) -> MergeState:
        return self

    def __repr__(self) -> str:
        shape = None if self.importance is None else tuple(self.importance.shape)
        return f"MergeState(importance={shape}, no_uncond={self.no_uncond}, counters={dict(self.counters)})"

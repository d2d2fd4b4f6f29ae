"""Runtime data of one patched model: the latest importance map, per-run counters, warn-once flags and the
heatmap recorder, plus the state of the model call in progress, which is per thread."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import torch

from .recorder import HeatmapRecorder

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..merging.plan import MergePlan
    from .model_call import ModelCall
    from .recorder import StepRecord
    from .sublayers import SublayerCall

logger = logging.getLogger(__name__)


class Count(str, Enum):
    """What a run counts; the end-of-run log and the tests read the counts by these names."""

    MERGED_CALLS = "merged_calls"
    IMPORTANCE_CALLS = "importance_calls"
    TOME_CALLS = "tome_calls"
    STRUCTURE_CALLS = "structure_calls"
    DETAIL_CALLS = "detail_calls"
    PRUNE_CALLS = "prune_calls"
    TOKENS_IN = "tokens_in"
    TOKENS_OUT = "tokens_out"
    SKIPPED = "skipped"
    MAPS_CAPTURED = "maps_captured"
    FALLBACK_MAPS = "fallback_maps"
    PROTECTED_CALLS = "protected_calls"
    FUSED_CALLS = "fused_calls"
    BIASED_CALLS = "biased_calls"
    FF_CALLS = "ff_calls"
    ATTN_CALLS = "attn_calls"
    CROSS_ATTN_CALLS = "cross_attn_calls"
    MLP_CALLS = "mlp_calls"
    CACHE_PEAK_BYTES = "cache_peak_bytes"


COUNTER_INDEX = {name: i for i, name in enumerate(Count)}


class RunCounters:
    """The counts of one run. Block calls count into an int64 tensor on their device (``device_counts``), so
    counting reads nothing back to the host and a compiled graph does not recompile as a count grows; counts
    outside a model call stay on the host. Reading them (``snapshot``) costs one copy per device."""

    def __init__(self) -> None:
        self.host: Counter[Count] = Counter()
        self.by_device: dict[torch.device, torch.Tensor] = {}

    def device_counts(self, device: torch.device) -> torch.Tensor:
        counts = self.by_device.get(device)
        if counts is None:
            counts = self.by_device[device] = torch.zeros(len(Count), dtype=torch.int64, device=device)
        return counts

    def snapshot(self) -> Counter[str]:
        """The counts by name (the values of :class:`Count`)."""
        totals = Counter({name.value: value for name, value in self.host.items()})
        for counts in self.by_device.values():
            for name, value in zip(Count, counts.tolist(), strict=True):
                if name is Count.CACHE_PEAK_BYTES:
                    totals[name.value] = max(totals[name.value], value)
                elif value:
                    totals[name.value] += value
        return +totals


class CallState(threading.local):
    """What one model call hands from its wrapper and block patches to the patches it calls, per thread: newer
    ComfyUI releases run the chunks of one model call in parallel threads (one per GPU) on clones that share
    the :class:`MergeState`."""

    def __init__(self) -> None:
        self.call: ModelCall | None = None  # the model call in progress (model_call.py)
        self.counts: torch.Tensor | None = None  # RunCounters.device_counts of the call's device
        self.ff_plans: dict[tuple, tuple[MergePlan, object]] = {}  # attn1 -> feed-forward hand-off per block
        self.sublayer_calls: dict[tuple, SublayerCall] = {}  # DiT block -> its sub-layer patches, for one call


class _CurrentState(threading.local):
    def __init__(self) -> None:
        self.state: MergeState | None = None  # the state of the model call in progress in this thread


_CURRENT = _CurrentState()


class SharedAcrossClones:
    """Base of the pack's objects that ComfyUI's ``model_options`` hold (patch callables, the post-CFG capture,
    the state): ComfyUI 0.3.75 deep-copies ``model_options`` on every clone, newer releases share its leaves.
    ``__deepcopy__`` returns ``self``, so both behave the same: a clone (a downstream LoRA) and its source share one
    patch and one state."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> SharedAcrossClones:
        return self


class StateHolder(SharedAcrossClones):
    """Base of the objects whose patches ComfyUI reaches through ``transformer_options`` (the UNet attention patches,
    the DiT block replaces). A compiled graph guards on what it reads from the state (the call's decisions);
    ComfyUI's TorchCompileModel (0.33 and later) drops every guard whose source passes through
    ``transformer_options``, which would freeze the first call's decisions for the whole run. So inside a model
    call the state is read from this module's per-thread global (set with the call), whose guards survive."""

    def __init__(self, state: MergeState) -> None:
        self._own_state = state

    @property
    def state(self) -> MergeState:
        current = _CURRENT.state
        return current if current is self._own_state else self._own_state


@dataclass
class SDTMRunState:
    """SDTM's data of one run (``strategies.SDTMStrategy``, ``protected_steps.py``, ``update_cache.py``). It lives in
    the :class:`MergeState`, where a compiled model call reads it through the per-thread current state."""

    last_independent: torch.Tensor | None = None  # [S * frames, n]: merge calls since each token was independent
    cache: dict[tuple, torch.Tensor] = field(default_factory=dict)  # updates of the last protected step

    @property
    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.cache.values())


class MergeState(SharedAcrossClones):
    """Owned by one patched clone (captured by its patches); ``reset()`` at the start of every sampling run.

    Shared by every clone of the patched model (:class:`SharedAcrossClones`). The call in progress (``call``,
    ``ff_plans``, ``sublayer_calls``) is per thread.
    """

    __slots__ = (
        "importance",
        "local",
        "no_uncond",
        "plan_observers",
        "pooled_importance",
        "previous_x0",
        "recorder",
        "run_counters",
        "sdtm",
        "warned",
    )

    def __init__(self, publish: Callable[[dict[str, str], StepRecord], None] | None = None) -> None:
        # ``publish``: where each new importance record goes (the live view; handed in at install)
        self.recorder = HeatmapRecorder(publish)  # outlives runs: a preview's request holds until it stops reading
        # what the planner emits each block call's plan to (``PlanEvent``), each while its ``wants_plans``
        self.plan_observers: tuple[HeatmapRecorder, ...] = (self.recorder,)
        self.reset()

    def reset(self) -> None:
        self.recorder.begin_run()
        self.importance: torch.Tensor | None = None  # [B, H, W] of the latest CFG step, latent resolution
        self.pooled_importance: tuple | None = None  # (importance, layout, its grids) of the last call (model_call)
        self.no_uncond = False  # a CFG step ran without an uncond pass (cfg 1, BasicGuider, ...)
        self.previous_x0: torch.Tensor | None = None  # last step's denoised output, for the x0-change fallback
        self.local = CallState()
        self.run_counters = RunCounters()
        self.warned: set[str] = set()
        self.sdtm = SDTMRunState()

    @property
    def call(self) -> ModelCall | None:
        return self.local.call

    @call.setter
    def call(self, value: ModelCall | None) -> None:
        self.local.call = value
        self.local.counts = (
            None if value is None or value.seed is None else self.run_counters.device_counts(value.seed.device)
        )
        _CURRENT.state = None if value is None else self

    @property
    def counters(self) -> Counter[str]:
        """The run's counts so far (a copy; reading it waits for the device)."""
        return self.run_counters.snapshot()

    def count(self, name: Count, n: int = 1) -> None:
        """Add ``n`` to counter ``name``: on the device inside a model call, on the host outside one."""
        counts = self.local.counts
        if counts is None:
            self.run_counters.host[name] += n
        else:
            counts[COUNTER_INDEX[name]] += n

    def count_peak(self, name: Count, value: int) -> None:
        """Raise counter ``name`` to ``value`` if it is below."""
        counts = self.local.counts
        if counts is None:
            self.run_counters.host[name] = max(self.run_counters.host[name], value)
        else:
            counts[COUNTER_INDEX[name]] = counts[COUNTER_INDEX[name]].clamp_min(value)

    @property
    def ff_plans(self) -> dict[tuple, tuple[MergePlan, object]]:
        return self.local.ff_plans

    @property
    def sublayer_calls(self) -> dict[tuple, SublayerCall]:
        return self.local.sublayer_calls

    def warn_once(self, key: str, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` the first time ``key`` comes up in this run."""
        if key not in self.warned:
            self.warned.add(key)
            logger.log(level, message)

    def __repr__(self) -> str:
        shape = None if self.importance is None else tuple(self.importance.shape)
        return f"MergeState(importance={shape}, no_uncond={self.no_uncond}, counters={dict(self.counters)})"

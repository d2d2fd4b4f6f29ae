"""What the heatmap preview shows: per-step importance maps and merge assignments, recorded only when a
preview consumes them.

Recording is off until a Token Merge Heatmap Preview asks for it: the merging node turns it on when the
queued prompt has a preview downstream of it, and a preview that runs turns it on for the next run of a
cached model. A run whose recording no preview read turns it off again. Memory stays bounded: maps are
kept at latent resolution shrunk to at most ``MAX_SIDE`` per side, in float16 / uint8, for at most
``MAX_STEPS`` steps; when that is full, the steps kept thin out to every 2nd, 4th, ... step (plus the newest),
so the record still spans the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..merging.heatmap import plan_categories
from ..merging.importance import to_token_grid

if TYPE_CHECKING:
    from collections.abc import Callable

    from .planner import PlanEvent

MAX_STEPS = 32
MAX_SIDE = 64


@dataclass
class StepRecord:
    step: int  # 0-based index in the run's sigma schedule
    steps: int  # steps of the run
    sigma: float
    importance: torch.Tensor | None = None  # [B, h, w] float16 (video: mean over frames)
    assignments: dict[object, torch.Tensor] = field(default_factory=dict)  # block key -> [B, h, w] uint8


def shrunk_size(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(h, w) with max(h, w) <= ``max_side`` and the aspect ratio kept (unchanged when already small enough)."""
    factor = max(height, width) / max_side
    if factor <= 1:
        return height, width
    return max(1, round(height / factor)), max(1, round(width / factor))


def shrink(maps: torch.Tensor) -> torch.Tensor:
    """[B, H, W] -> [B, h, w] at :func:`shrunk_size`, by area averaging."""
    h, w = shrunk_size(*maps.shape[-2:])
    return to_token_grid(maps.float(), h, w).reshape(-1, h, w)  # [B, h * w] -> [B, h, w]


class HeatmapRecorder:
    """Owned by a :class:`MergeState`; each new importance record goes to ``publish`` (handed in at install: the
    live view of ``live.py``, or nothing outside a server) with the target previews."""

    def __init__(self, publish: Callable[[dict[str, str], StepRecord], None] | None = None) -> None:
        self.publish = publish
        self.enabled = False
        self.targets: dict[str, str] = {}  # preview node id -> colormap of its live view
        self.records: dict[int, StepRecord] = {}
        self.stride = 1  # steps kept are multiples of it (and the newest)
        self.block_order: list[object] = []  # block keys in the order they first merged
        self.consumed = True

    def request(self, targets: dict[str, str] | None = None) -> None:
        """Record from the next sampling run on; ``targets`` are preview node ids to stream to."""
        self.enabled = True
        self.targets.update(targets or {})

    def begin_run(self) -> None:
        """Start of a sampling run: drop the last run's records; stop if no preview read them."""
        if self.enabled and self.records and not self.consumed:
            self.enabled = False
            self.targets.clear()
        self.records = {}
        self.stride = 1
        self.block_order = []
        self.consumed = False

    def take(self) -> dict[int, StepRecord]:
        """The records of the last run, oldest step first, for a preview (marks them consumed)."""
        self.consumed = True
        return dict(sorted(self.records.items()))

    def _record(self, step: int, steps: int, sigma: float) -> StepRecord:
        record = self.records.get(step)
        if record is None:
            # Keep the steps on a stride, plus the newest; a full record doubles the stride.
            self.records = {s: r for s, r in self.records.items() if s % self.stride == 0}
            if len(self.records) >= MAX_STEPS:
                self.stride *= 2
                self.records = {s: r for s, r in self.records.items() if s % self.stride == 0}
            record = self.records[step] = StepRecord(step, steps, sigma)
        return record

    def add_importance(self, step: int, steps: int, sigma: float, importance: torch.Tensor) -> None:
        """``importance`` [B, H, W] or [B, T, H, W] (video) at latent resolution."""
        if importance.ndim == 4:
            importance = importance.float().mean(1)  # [B, T, H, W] -> [B, H, W]
        record = self._record(step, steps, sigma)
        record.importance = shrink(importance.detach()).to("cpu", torch.float16)
        if self.targets and self.publish is not None:
            self.publish(self.targets, record)

    @property
    def wants_plans(self) -> bool:
        """Whether :meth:`on_plan` should get the plans of this run (a preview asked for them)."""
        return self.enabled

    def on_plan(self, event: PlanEvent) -> None:
        """Keep the merge assignment of one block call (the first frame of each sample)."""
        categories = plan_categories(event.plan, event.samples, event.frames, event.h, event.w)
        self.add_assignment(event.step, event.steps, event.sigma, event.key, categories)

    def add_assignment(self, step: int, steps: int, sigma: float, key: object, categories: torch.Tensor) -> None:
        """``categories`` [B, h, w] uint8 of one block call, at the block's token grid."""
        if key not in self.block_order:
            self.block_order.append(key)
        size = shrunk_size(*categories.shape[-2:])
        if size != categories.shape[-2:]:  # [B, h, w] -> [B, 1, h, w] -> nearest -> [B, h', w']
            categories = F.interpolate(categories[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
        self._record(step, steps, sigma).assignments[key] = categories

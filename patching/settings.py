"""One table of the range and default of every numeric input of the pack's nodes.

The node schemas build their sliders from it and :class:`~.config.MergeConfig` checks its fields against it, so a
slider can never offer a value the config refuses (each range used to be written twice, and drifted). Per-node
differences (the SDTM ratio's default, the Simple nodes' narrower ratio slider, the block range of SDTM) are
written as ``Setting.with_(...)`` next to the node, from these entries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

INT_MAX = 2**31 - 1  # ComfyUI's seed widgets stop here too
# Slack of every range check: a frontend with its float rounding turned off sends 0.7000000000000001 for 0.7.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Setting:
    """``default`` and the inclusive range ``low``..``high`` of one input; ``step`` is the slider step."""

    default: float
    low: float
    high: float
    step: float | None = None

    def with_(self, **changes: float) -> Setting:
        return replace(self, **changes)

    def problem(self, name: str, value: float) -> str | None:
        """``None`` when ``value`` is within ``low``..``high``, else the message naming the input and the range."""
        if self.low - TOLERANCE <= value <= self.high + TOLERANCE:
            return None
        return f"{name}={value} is out of range: allowed {self.low} to {self.high}"

    def check(self, name: str, value: float) -> None:
        """Refuse ``value`` outside ``low``..``high`` with :meth:`problem`'s message."""
        problem = self.problem(name, value)
        if problem:
            raise ValueError(problem)


SETTINGS: dict[str, Setting] = {
    # every method
    "ratio": Setting(0.5, 0.0, 0.9, 0.05),  # fraction of a block's tokens merged away
    "start_percent": Setting(0.0, 0.0, 1.0, 0.01),
    "end_percent": Setting(1.0, 0.0, 1.0, 0.01),
    "seed": Setting(0, 0, INT_MAX),
    "window_y": Setting(2, 1, 8),
    "window_x": Setting(2, 1, 8),
    "block_start": Setting(0.25, 0.0, 1.0, 0.05),  # DiTs: the middle half of the blocks, as IBTM on PixArt
    "block_end": Setting(0.75, 0.0, 1.0, 0.05),
    # IBTM
    "dst_fraction": Setting(0.25, 0.05, 0.9, 0.05),
    "pool_factor": Setting(1.4, 1.0, 4.0, 0.1),
    "prune_until": Setting(0.1, 0.0, 1.0, 0.01),
    # SDTM (the authors' defaults)
    "deviation": Setting(0.2, 0.0, 0.5, 0.05),
    "switch_percent": Setting(0.4, 0.0, 1.0, 0.01),
    "similarity_weight": Setting(0.05, 0.0, 10.0, 0.01),
    "protect_every": Setting(3, 0, 100),
    "cache_weight": Setting(0.2, 0.0, 1.0, 0.05),
    "cache_limit_mb": Setting(2048, 0, 1 << 20),
    "prompt_scale_structure": Setting(1.0, 0.1, 10.0, 0.05),
    "prompt_scale_detail": Setting(1.0, 0.1, 10.0, 0.05),
    # the heatmap preview
    "overlay_alpha": Setting(0.6, 0.0, 1.0, 0.05),
    "block": Setting(0, 0, 255),
}

# The most a plan can merge with one destination per window_y x window_x window (ToMe and SDTM) or with
# dst_fraction of the tokens as destinations (IBTM): 1 - 1/(2 x 2) = 1 - 0.25 at the defaults.
DEFAULT_WINDOW_RATIO_MAX = round(1.0 - 1.0 / (SETTINGS["window_y"].default * SETTINGS["window_x"].default), 6)
DEFAULT_DST_RATIO_MAX = round(1.0 - SETTINGS["dst_fraction"].default, 6)


def default(name: str) -> float:
    return SETTINGS[name].default

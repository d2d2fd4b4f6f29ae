"""Frozen, validated settings of one token-merging patch, built once by a node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ..merging.ibtm import DstMode
from .settings import SETTINGS, TOLERANCE


class Method(str, Enum):
    IMPORTANCE = "importance"  # IBTM: partition from the CFG importance map (ToMe until a map exists)
    TOME = "tome"  # spatial ToMe baseline
    SDTM = "sdtm"  # structure-then-detail merging (DiTs)


class DetailDestination(str, Enum):
    """SDTM detail stage: which token of each window is the destination."""

    DEPENDENT = "dependent"  # the token kept dependent the longest (the authors' code)
    IMPORTANCE = "importance"  # the most important token by CFG importance (this pack's option)


class Fallback(str, Enum):
    """Importance signal when a step has no uncond pass (cfg 1, guidance-distilled models, BasicGuider)."""

    TOME = "tome"  # no importance: spatial ToMe at the same ratio (the UNet default, as in issue #3)
    X0_CHANGE = "x0_change"  # how much each token's x0 prediction changed since the previous step


class Match(str, Enum):
    """How a source token picks its destination (the similarity every method matches on)."""

    FEATURES = "features"  # the most similar destination (cosine of the features the block gets)
    NORMALIZED = "normalized"  # ... of those features layer-normalised (DiTs: the block's norm, unmodulated)
    POSITION = "position"  # the nearest destination on the token grid (IBTM only: the authors' PixArt variant)


DOWNSAMPLE_LEVELS = (1, 2, 4, 8)


def _setting(name: str) -> float:
    return SETTINGS[name].default


@dataclass(frozen=True)
class MergeConfig:
    """Every setting of a merging patch; ``__post_init__`` refuses out-of-range values, naming the input.

    Ranges and defaults come from :data:`~.settings.SETTINGS`, the table the node schemas read too.
    """

    method: Method
    ratio: float  # fraction of a block's tokens merged away
    max_downsample: int  # merge in blocks whose grid is at most this many times smaller than the latent
    dst_fraction: float = _setting("dst_fraction")  # IBTM: destinations as a fraction of the tokens
    pool_factor: float = _setting("pool_factor")  # IBTM: pool = pool_factor * (N - r) most important tokens
    dst_mode: DstMode = DstMode.RANDOM
    match: Match = Match.FEATURES
    window: tuple[int, int] = (_setting("window_y"), _setting("window_x"))  # ToMe: one destination per window
    merge_attn2: bool = False  # also merge the cross-attention queries
    merge_ff: bool = False  # also merge the feed-forward input
    prune_until: float = _setting("prune_until")  # fraction of the steps that prune (drop sources), not average
    start_percent: float = _setting("start_percent")  # merging is active in [start_percent, end_percent]
    end_percent: float = _setting("end_percent")
    seed: int = _setting("seed")
    fallback: Fallback = Fallback.TOME
    block_range: tuple[float, float] = (_setting("block_start"), _setting("block_end"))  # DiTs: depth fractions
    # SDTM (the defaults of the authors' apply_SDTM / sample.py)
    deviation: float = _setting("deviation")  # ratio runs from ratio + deviation down to ratio - deviation
    switch_percent: float = _setting("switch_percent")  # structure stage before this fraction, detail after
    similarity_weight: float = _setting("similarity_weight")  # a_s: weight of the frequency priority
    detail_destination: DetailDestination = DetailDestination.DEPENDENT
    detail_mlp_only: bool = True  # detail stage merges only the MLP input (attention runs in full)
    protect_every: int = _setting("protect_every")  # every k-th step runs in full and refreshes the cache
    cache_weight: float = _setting("cache_weight")  # mcw: merged tokens take mcw x computed + (1 - mcw) x cached
    cache_limit_mb: int = _setting("cache_limit_mb")  # upper bound of the protected-step cache
    # Attention over merged tokens (merging/attention_bias.py); off / 1.0 until the quality benchmark picks values
    proportional_attention: bool = False  # DiTs: add log(multiplicity) to the logits of merged keys
    prompt_scale_structure: float = _setting("prompt_scale_structure")  # SDTM: text keys get log(scale)
    prompt_scale_detail: float = _setting("prompt_scale_detail")  # ... in the detail stage

    def input_values(self) -> dict[str, float]:
        """The config as the nodes' inputs name it (windows and block range split in two)."""
        values = {name: getattr(self, name) for name in SETTINGS if hasattr(self, name)}
        values.update(
            window_y=self.window[0],
            window_x=self.window[1],
            block_start=self.block_range[0],
            block_end=self.block_range[1],
        )
        return values

    def __post_init__(self) -> None:
        values = self.input_values()
        for name, value in values.items():
            SETTINGS[name].check(name, value)
        if self.max_downsample not in DOWNSAMPLE_LEVELS:
            raise ValueError(f"max_downsample={self.max_downsample} is not allowed: use one of {DOWNSAMPLE_LEVELS}")
        problems = [message for _, message in cross_field_problems(self.method, values)]
        if problems:
            raise ValueError("; ".join(problems))


def max_ratio(method: Method, values: Mapping[str, float]) -> float:
    """The most ``method`` can merge: 1 - dst_fraction (IBTM), one destination per window (ToMe), the same minus
    the deviation the SDTM schedule adds at the start of the run."""
    if method is Method.IMPORTANCE:
        return round(1.0 - values["dst_fraction"], 6)
    window_max = round(1.0 - 1.0 / (values["window_y"] * values["window_x"]), 6)
    return round(window_max - values["deviation"], 6) if method is Method.SDTM else window_max


def cross_field_problems(method: Method, values: Mapping[str, float]) -> list[tuple[frozenset[str], str]]:
    """What is wrong between inputs that are each within their own range, as (the inputs involved, message): the
    ratio against dst_fraction or the windows, the deviation against the ratio, the order of the step window and
    of the block range. ``values`` are named as the nodes' inputs (see :meth:`MergeConfig.input_values`). Ratio 0
    returns the model unpatched, so nothing else constrains it."""
    v = values
    if v["ratio"] == 0:
        return []
    problems = []
    if method is Method.SDTM and v["deviation"] > v["ratio"] + TOLERANCE:
        problems.append(
            (
                frozenset({"deviation", "ratio"}),
                f"deviation={v['deviation']} is out of range: allowed 0.0 to ratio={v['ratio']}",
            )
        )
    windows = f"1 - 1/(window_y*window_x) with window_y={v['window_y']}, window_x={v['window_x']}"
    bound = {
        Method.IMPORTANCE: ({"dst_fraction"}, f"1 - dst_fraction with dst_fraction={v['dst_fraction']}"),
        Method.TOME: ({"window_y", "window_x"}, windows),
        Method.SDTM: ({"window_y", "window_x", "deviation"}, f"{windows}, minus deviation={v['deviation']}"),
    }
    depends, why = bound[method]
    highest = max_ratio(method, v)
    if v["ratio"] > highest + TOLERANCE:
        problems.append(
            (
                frozenset({"ratio", *depends}),
                f"ratio={v['ratio']} is out of range: allowed 0.0 to {highest} (at most {why})",
            )
        )
    if v["start_percent"] >= v["end_percent"]:
        problems.append(
            (
                frozenset({"start_percent", "end_percent"}),
                f"start_percent={v['start_percent']} must be below end_percent={v['end_percent']}",
            )
        )
    if v["block_start"] >= v["block_end"]:
        problems.append(
            (
                frozenset({"block_start", "block_end"}),
                f"block_start={v['block_start']} must be below block_end={v['block_end']}",
            )
        )
    return problems

"""Frozen, validated settings of one token-merging patch, built once by a node."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..merging.ibtm import DstMode


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


def _check_range(name: str, value: float, low: float, high: float, note: str = "") -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is out of range: allowed {low} to {high}{note}")


@dataclass(frozen=True)
class MergeConfig:
    """Every setting of a merging patch; ``__post_init__`` refuses out-of-range values, naming the input."""

    method: Method
    ratio: float  # fraction of a block's tokens merged away
    max_downsample: int  # merge in blocks whose grid is at most this many times smaller than the latent
    dst_fraction: float = 0.25  # IBTM: destinations as a fraction of the tokens
    pool_factor: float = 1.4  # IBTM: pool = pool_factor * (N - r) most important tokens
    dst_mode: DstMode = DstMode.RANDOM
    match: Match = Match.FEATURES
    window: tuple[int, int] = (2, 2)  # ToMe: (sy, sx) window with one destination each
    merge_attn2: bool = False  # also merge the cross-attention queries
    merge_ff: bool = False  # also merge the feed-forward input
    prune_until: float = 0.1  # fraction of the steps that prune (drop sources) instead of averaging
    start_percent: float = 0.0  # merging is active for step fractions in [start_percent, end_percent]
    end_percent: float = 1.0
    seed: int = 0
    fallback: Fallback = Fallback.TOME
    block_range: tuple[float, float] = (0.25, 0.75)  # DiTs: merged blocks, as fractions of the depth
    # SDTM (defaults of the authors' apply_SDTM / sample.py, see ../shared/docs/papers.md section 3.3)
    deviation: float = 0.2  # ratio runs from ratio + deviation down to ratio - deviation (cosine)
    switch_percent: float = 0.4  # structure stage before this fraction of the run, detail stage after
    similarity_weight: float = 0.05  # a_s: weight of the frequency priority in the structure stage
    detail_destination: DetailDestination = DetailDestination.DEPENDENT
    detail_mlp_only: bool = True  # detail stage merges only the MLP input (attention runs in full)
    protect_every: int = 3  # every k-th step runs in full and refreshes the cache (0 = never)
    cache_weight: float = 0.2  # mcw: merged tokens take mcw x computed + (1 - mcw) x cached block update
    cache_limit_mb: int = 2048  # upper bound of the protected-step cache
    # Attention over merged tokens (merging/attention_bias.py); off / 1.0 until the quality benchmark picks values
    proportional_attention: bool = False  # DiTs: add log(multiplicity) to the logits of merged keys
    prompt_scale_structure: float = 1.0  # SDTM joint attention: text keys get log(scale) in the structure stage
    prompt_scale_detail: float = 1.0  # ... and in the detail stage

    @property
    def max_ratio(self) -> float:
        if self.method is Method.IMPORTANCE:
            return round(1.0 - self.dst_fraction, 6)
        if self.method is Method.SDTM:
            sy, sx = self.window
            return round(1.0 - 1.0 / (sy * sx) - self.deviation, 6)
        sy, sx = self.window
        return round(1.0 - 1.0 / (sy * sx), 6)

    def __post_init__(self) -> None:
        _check_range("ratio", self.ratio, 0.0, 1.0)  # first: the SDTM node derives its deviation from the ratio
        _check_range("dst_fraction", self.dst_fraction, 0.05, 0.9)
        _check_range("pool_factor", self.pool_factor, 1.0, 4.0)
        for name, size in zip(("window_y", "window_x"), self.window, strict=True):
            _check_range(name, size, 1, 8)
        _check_range("deviation", self.deviation, 0.0, 0.5)
        note = {Method.IMPORTANCE: " (at most 1 - dst_fraction)",
                Method.TOME: " (at most 1 - 1/(window_y*window_x))",
                Method.SDTM: " (at most 1 - 1/(window_y*window_x) - deviation)"}[self.method]
        _check_range("ratio", self.ratio, 0.0, self.max_ratio, note)
        if self.max_downsample not in DOWNSAMPLE_LEVELS:
            raise ValueError(f"max_downsample={self.max_downsample} is not allowed: use one of {DOWNSAMPLE_LEVELS}")
        for name in ("prune_until", "start_percent", "end_percent"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if self.start_percent >= self.end_percent:
            raise ValueError(f"start_percent={self.start_percent} must be below end_percent={self.end_percent}")
        _check_range("seed", self.seed, 0, 2**31 - 1)  # the nodes' range
        if self.method is Method.SDTM and self.deviation > self.ratio:
            raise ValueError(f"deviation={self.deviation} is out of range: allowed 0.0 to ratio={self.ratio}")
        _check_range("switch_percent", self.switch_percent, 0.0, 1.0)
        _check_range("similarity_weight", self.similarity_weight, 0.0, 10.0)
        _check_range("protect_every", self.protect_every, 0, 100)
        _check_range("cache_weight", self.cache_weight, 0.0, 1.0)
        _check_range("cache_limit_mb", self.cache_limit_mb, 0, 1 << 20)
        for name in ("prompt_scale_structure", "prompt_scale_detail"):
            _check_range(name, getattr(self, name), 0.1, 10.0)
        for name, value in zip(("block_start", "block_end"), self.block_range, strict=True):
            _check_range(name, value, 0.0, 1.0)
        if self.block_range[0] >= self.block_range[1]:
            raise ValueError(f"block_start={self.block_range[0]} must be below block_end={self.block_range[1]}")

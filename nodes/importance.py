"""Token Merge (Importance): IBTM nodes, Simple and Advanced, plus the spatial ToMe baseline node.

The nodes only validate, build a :class:`MergeConfig` and call :func:`apply_token_merge`; the patch
logic lives in ``patching/`` and the algorithms in ``merging/``.
"""

from __future__ import annotations

from ..merging.ibtm import DstMode
from ..patching.apply import default_max_downsample, model_family
from ..patching.config import DOWNSAMPLE_LEVELS, Fallback, Match, MergeConfig, Method
from ..patching.settings import DEFAULT_DST_RATIO_MAX, DEFAULT_WINDOW_RATIO_MAX, SETTINGS
from ._comfy_api import ADVANCED, io
from .common import (
    block_range_inputs,
    float_input,
    model_schema,
    patched_output,
    proportional_attention_input,
    queue_time_check,
    run_window_inputs,
    seed_input,
    window_inputs,
)

AUTO = "auto"
MAX_DOWNSAMPLE_CHOICES = [AUTO, *(str(level) for level in DOWNSAMPLE_LEVELS)]

# The Simple node's hidden dst_fraction (0.25) bounds its ratio at 0.75, and so does ToMe's 2x2 window at its
# default: their sliders stop there. The Advanced node goes to the table's 0.9 (with dst_fraction 0.1).
SIMPLE_RATIO = SETTINGS["ratio"].with_(high=DEFAULT_DST_RATIO_MAX)
ADVANCED_RATIO = SETTINGS["ratio"]
TOME_RATIO = SETTINGS["ratio"].with_(high=DEFAULT_WINDOW_RATIO_MAX)

RATIO_TOOLTIP = (
    "Fraction of the tokens merged away in each merged block (0 = off, returns the model "
    "unpatched). Higher is faster and lossier; 0.5 is a good start."
)
ADVANCED_RATIO_TOOLTIP = RATIO_TOOLTIP + " At most 1 - dst_fraction."
TOME_RATIO_TOOLTIP = RATIO_TOOLTIP + " At most 1 - 1/(window_y x window_x)."
MAX_DOWNSAMPLE_TOOLTIP = (
    "UNets: merge in levels whose token grid is at most this many times smaller than the "
    "latent. auto: the finest level with attention (1 for SD1.x/SD2.x, 2 for SDXL)."
)


def resolve_fallback(model, choice: str) -> Fallback:
    """auto: spatial ToMe for UNets (the paper's behaviour), the x0-change signal for DiTs (Flux-dev and other
    guidance-distilled DiTs usually run at cfg 1)."""
    if choice != AUTO:
        return Fallback(choice)
    return Fallback.TOME if model_family(model) == "unet" else Fallback.X0_CHANGE


def resolve_max_downsample(model, choice: str) -> int:
    if choice == AUTO:
        return default_max_downsample(model) if model_family(model) == "unet" else 1
    return int(choice)


def operation_inputs() -> list[io.Boolean.Input]:
    """What besides self-attention runs on merged tokens (UNets; DiT blocks merge as a whole)."""
    return [
        io.Boolean.Input(
            "merge_cross_attention",
            default=False,
            **ADVANCED,
            tooltip="Also merge the cross-attention queries (faster, slightly lossier).",
        ),
        io.Boolean.Input(
            "merge_feed_forward",
            default=False,
            **ADVANCED,
            tooltip="Also merge the feed-forward input (faster, lossier).",
        ),
    ]


def _max_downsample_input() -> io.Combo.Input:
    return io.Combo.Input(
        "max_downsample", options=MAX_DOWNSAMPLE_CHOICES, default=AUTO, tooltip=MAX_DOWNSAMPLE_TOOLTIP
    )


class TokenMergeImportance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return model_schema(
            "TokenMergeImportance",
            "Token Merge (Importance)",
            "Importance-based token merging (IBTM, arXiv 2411.16720): the CFG difference of the previous step "
            "marks the important tokens, and the unimportant ones are merged first. Settings come from a preset "
            "for the detected model family.",
            SIMPLE_RATIO,
            RATIO_TOOLTIP,
            [],
        )

    @classmethod
    def execute(cls, model, ratio: float) -> io.NodeOutput:
        SIMPLE_RATIO.check("ratio", ratio)  # a linked ratio is not checked at queue time
        config = MergeConfig(
            Method.IMPORTANCE,
            ratio=ratio,
            max_downsample=resolve_max_downsample(model, AUTO),
            fallback=resolve_fallback(model, AUTO),
        )
        return patched_output(cls, model, config)


class TokenMergeImportanceAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return model_schema(
            "TokenMergeImportanceAdvanced",
            "Token Merge (Importance), Advanced",
            "Importance-based token merging (IBTM) with every setting exposed.",
            ADVANCED_RATIO,
            ADVANCED_RATIO_TOOLTIP,
            [
                _max_downsample_input(),
                float_input(
                    "dst_fraction",
                    "Destination tokens as a fraction of all tokens (paper: 0.25). The "
                    "ratio can be at most 1 - dst_fraction.",
                ),
                float_input(
                    "pool_factor",
                    "Pool of important tokens = pool_factor x (tokens kept); tokens outside "
                    "it are always merged (paper: 1.4 for UNets, 1.0 for PixArt).",
                ),
                io.Combo.Input(
                    "dst_mode",
                    options=[mode.value for mode in DstMode],
                    default=DstMode.RANDOM.value,
                    **ADVANCED,
                    tooltip="random: destinations drawn uniformly from the pool (paper); "
                    "top_k: the most important tokens.",
                ),
                *operation_inputs(),
                float_input(
                    "prune_until",
                    "Fraction of the steps that prune (drop merged tokens) instead of "
                    "averaging them, as the paper's warm-up does.",
                ),
                *run_window_inputs(),
                seed_input(),
                io.Combo.Input(
                    "fallback",
                    options=[AUTO, *(f.value for f in Fallback)],
                    default=AUTO,
                    optional=True,
                    **ADVANCED,
                    tooltip="Importance when a step has no uncond pass (cfg 1, distilled models): "
                    "tome = none, spatial ToMe; x0_change = how much each token's x0 "
                    "prediction changed since the last step. auto: tome for UNets, "
                    "x0_change for DiTs.",
                ),
                *block_range_inputs(),
                proportional_attention_input(),
                io.Combo.Input(
                    "match",
                    options=[m.value for m in Match],
                    default=Match.FEATURES.value,
                    optional=True,
                    **ADVANCED,
                    tooltip="How a merged token picks its destination: features = the most similar "
                    "one (cosine, the default: it measured best); normalized = the same on "
                    "layer-normalised features; position = the nearest on the token grid, as "
                    "the IBTM authors run PixArt (with pool_factor 1.0), from the first step "
                    "with an importance map.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        ratio: float | None = None,
        dst_fraction: float | None = None,
        start_percent: float | None = None,
        end_percent: float | None = None,
        block_start: float | None = None,
        block_end: float | None = None,
    ) -> bool | str:
        return queue_time_check(
            Method.IMPORTANCE,
            ADVANCED_RATIO,
            ratio=ratio,
            dst_fraction=dst_fraction,
            start_percent=start_percent,
            end_percent=end_percent,
            block_start=block_start,
            block_end=block_end,
        )

    @classmethod
    def execute(
        cls,
        model,
        ratio: float,
        max_downsample: str,
        dst_fraction: float,
        pool_factor: float,
        dst_mode: str,
        merge_cross_attention: bool,
        merge_feed_forward: bool,
        prune_until: float,
        start_percent: float,
        end_percent: float,
        seed: int,
        fallback: str = AUTO,
        block_start: float = 0.25,
        block_end: float = 0.75,
        proportional_attention: bool = False,
        match: str = Match.FEATURES.value,
    ) -> io.NodeOutput:
        config = MergeConfig(
            Method.IMPORTANCE,
            ratio=ratio,
            max_downsample=resolve_max_downsample(model, max_downsample),
            dst_fraction=dst_fraction,
            pool_factor=pool_factor,
            dst_mode=DstMode(dst_mode),
            merge_attn2=merge_cross_attention,
            merge_ff=merge_feed_forward,
            prune_until=prune_until,
            start_percent=start_percent,
            end_percent=end_percent,
            seed=seed,
            fallback=resolve_fallback(model, fallback),
            block_range=(block_start, block_end),
            proportional_attention=proportional_attention,
            match=Match(match),
        )
        return patched_output(cls, model, config)


class TokenMergeSpatialToMe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return model_schema(
            "TokenMergeSpatialToMe",
            "Token Merge (Spatial ToMe)",
            "Spatial token merging (ToMeSD, arXiv 2303.17604): one random destination per window, the most "
            "similar tokens merged. The baseline for the importance nodes, on the same code path (it merges q, "
            "k and v, unlike the built-in TomePatchModel).",
            TOME_RATIO,
            TOME_RATIO_TOOLTIP,
            [
                _max_downsample_input(),
                *window_inputs(
                    "Window height: one destination per window_y x window_x tokens. The ratio can be "
                    "at most 1 - 1/(window_y x window_x)."
                ),
                *operation_inputs(),
                seed_input(),
                *block_range_inputs(),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        ratio: float | None = None,
        window_y: int | None = None,
        window_x: int | None = None,
        block_start: float | None = None,
        block_end: float | None = None,
    ) -> bool | str:
        return queue_time_check(
            Method.TOME,
            TOME_RATIO,
            ratio=ratio,
            window_y=window_y,
            window_x=window_x,
            block_start=block_start,
            block_end=block_end,
        )

    @classmethod
    def execute(
        cls,
        model,
        ratio: float,
        max_downsample: str,
        window_y: int,
        window_x: int,
        merge_cross_attention: bool,
        merge_feed_forward: bool,
        seed: int,
        block_start: float = 0.25,
        block_end: float = 0.75,
    ) -> io.NodeOutput:
        config = MergeConfig(
            Method.TOME,
            ratio=ratio,
            max_downsample=resolve_max_downsample(model, max_downsample),
            window=(window_y, window_x),
            merge_attn2=merge_cross_attention,
            merge_ff=merge_feed_forward,
            prune_until=0.0,
            seed=seed,
            block_range=(block_start, block_end),
        )
        return patched_output(cls, model, config)


NODES = [TokenMergeImportance, TokenMergeImportanceAdvanced, TokenMergeSpatialToMe]

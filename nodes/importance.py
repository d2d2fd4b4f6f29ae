"""Token Merge (Importance): IBTM nodes, Simple and Advanced, plus the spatial ToMe baseline node.

The nodes only validate, build a :class:`MergeConfig` and call :func:`apply_token_merge`; the patch
logic lives in ``patching/`` and the algorithms in ``merging/``.
"""

from __future__ import annotations

from ..merging.ibtm import DstMode
from ..patching.apply import apply_token_merge, default_max_downsample, model_family
from ..patching.config import DOWNSAMPLE_LEVELS, Fallback, Match, MergeConfig, Method
from ..patching.graph import preview_consumers
from ._comfy_api import ADVANCED, io

CATEGORY = "tokenmerge"
AUTO = "auto"
MAX_DOWNSAMPLE_CHOICES = [AUTO, *(str(level) for level in DOWNSAMPLE_LEVELS)]

RATIO_TOOLTIP = ("Fraction of the tokens merged away in each merged block (0 = off, returns the model "
                 "unpatched). Higher is faster and lossier; 0.5 is a good start.")
MAX_DOWNSAMPLE_TOOLTIP = ("UNets: merge in levels whose token grid is at most this many times smaller than the "
                          "latent. auto: the finest level with attention (1 for SD1.x/SD2.x, 2 for SDXL).")
SEED_TOOLTIP = "Seed of the private generator that draws the destination tokens (the sampler's RNG is untouched)."


# Every merging node sees the queued prompt, to record heatmaps when a preview downstream reads its model.
# Its schema is not_idempotent, so another node with the same inputs (in another workflow) never hands over a
# patched clone recording for other previews.
HIDDEN = [io.Hidden.prompt, io.Hidden.unique_id]


def patched_output(node: type[io.ComfyNode], model, config: MergeConfig) -> io.NodeOutput:
    """The node's output: ``model`` patched as ``config`` says, recording for the previews that read it."""
    hidden = getattr(node, "hidden", None)
    previews = preview_consumers(getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None))
    return io.NodeOutput(apply_token_merge(model, config, previews))


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


def _schema(node_id: str, display_name: str, description: str, options: list) -> io.Schema:
    """Every node of this module: a MODEL and a ratio in, the patched clone out, then its own options."""
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=CATEGORY,
        description=description,
        inputs=[
            io.Model.Input("model", tooltip="The model to accelerate; a patched clone is returned."),
            io.Float.Input("ratio", default=0.5, min=0.0, max=0.9, step=0.05, tooltip=RATIO_TOOLTIP),
            *options,
        ],
        outputs=[io.Model.Output(tooltip="The patched clone (or the input model when ratio is 0).")],
        hidden=HIDDEN, not_idempotent=True,
    )


def block_range_inputs(start: float = 0.25, end: float = 0.75) -> list[io.Float.Input]:
    # Inputs added after a node's first release are optional, so saved API prompts without them still validate.
    return [
        io.Float.Input("block_start", default=start, min=0.0, max=1.0, step=0.05, optional=True, **ADVANCED,
                       tooltip="DiTs: merge the blocks from this fraction of the depth on (IBTM on PixArt: the "
                               "middle half). UNets ignore it."),
        io.Float.Input("block_end", default=end, min=0.0, max=1.0, step=0.05, optional=True, **ADVANCED,
                       tooltip="DiTs: merge the blocks before this fraction of the depth."),
    ]


def proportional_attention_input() -> io.Boolean.Input:
    return io.Boolean.Input(
        "proportional_attention", default=False, optional=True, **ADVANCED,
        tooltip="DiTs: add log(number of tokens a merged token stands for) to its attention logit (ToMe's "
                "proportional attention), so merged regions keep their share of the attention. Off until the "
                "quality benchmark settles it. PixArt and UNets ignore it (one warning).")


def operation_inputs() -> list[io.Boolean.Input]:
    """What besides self-attention runs on merged tokens (UNets; DiT blocks merge as a whole)."""
    return [
        io.Boolean.Input("merge_cross_attention", default=False, **ADVANCED,
                         tooltip="Also merge the cross-attention queries (faster, slightly lossier)."),
        io.Boolean.Input("merge_feed_forward", default=False, **ADVANCED,
                         tooltip="Also merge the feed-forward input (faster, lossier)."),
    ]


def run_window_inputs() -> list[io.Float.Input]:
    return [
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, **ADVANCED,
                       tooltip="Merging starts at this fraction of the sampling run."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, **ADVANCED,
                       tooltip="Merging stops after this fraction of the sampling run."),
    ]


def seed_input() -> io.Int.Input:
    return io.Int.Input("seed", default=0, min=0, max=2**31 - 1, **ADVANCED, tooltip=SEED_TOOLTIP)


def _max_downsample_input() -> io.Combo.Input:
    return io.Combo.Input("max_downsample", options=MAX_DOWNSAMPLE_CHOICES, default=AUTO,
                          tooltip=MAX_DOWNSAMPLE_TOOLTIP)


class TokenMergeImportance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "TokenMergeImportance", "Token Merge (Importance)",
            "Importance-based token merging (IBTM, arXiv 2411.16720): the CFG difference of the previous step "
            "marks the important tokens, and the unimportant ones are merged first. Settings come from a preset "
            "for the detected model family.",
            [],
        )

    @classmethod
    def execute(cls, model, ratio: float) -> io.NodeOutput:
        config = MergeConfig(Method.IMPORTANCE, ratio=ratio, max_downsample=resolve_max_downsample(model, AUTO),
                             fallback=resolve_fallback(model, AUTO))
        return patched_output(cls, model, config)


class TokenMergeImportanceAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "TokenMergeImportanceAdvanced", "Token Merge (Importance), Advanced",
            "Importance-based token merging (IBTM) with every setting exposed.",
            [
                _max_downsample_input(),
                io.Float.Input("dst_fraction", default=0.25, min=0.05, max=0.9, step=0.05, **ADVANCED,
                               tooltip="Destination tokens as a fraction of all tokens (paper: 0.25). The ratio "
                                       "can be at most 1 - dst_fraction."),
                io.Float.Input("pool_factor", default=1.4, min=1.0, max=4.0, step=0.1, **ADVANCED,
                               tooltip="Pool of important tokens = pool_factor x (tokens kept); tokens outside it "
                                       "are always merged (paper: 1.4 for UNets, 1.0 for PixArt)."),
                io.Combo.Input("dst_mode", options=[mode.value for mode in DstMode], default=DstMode.RANDOM.value,
                               **ADVANCED, tooltip="random: destinations drawn uniformly from the pool (paper); "
                                                   "top_k: the most important tokens."),
                *operation_inputs(),
                io.Float.Input("prune_until", default=0.1, min=0.0, max=1.0, step=0.01, **ADVANCED,
                               tooltip="Fraction of the steps that prune (drop merged tokens) instead of "
                                       "averaging them, as the paper's warm-up does."),
                *run_window_inputs(),
                seed_input(),
                io.Combo.Input("fallback", options=[AUTO, *(f.value for f in Fallback)], default=AUTO, optional=True,
                               **ADVANCED,
                               tooltip="Importance when a step has no uncond pass (cfg 1, distilled models): "
                                       "tome = none, spatial ToMe; x0_change = how much each token's x0 "
                                       "prediction changed since the last step. auto: tome for UNets, "
                                       "x0_change for DiTs."),
                *block_range_inputs(),
                proportional_attention_input(),
                io.Combo.Input("match", options=[m.value for m in Match], default=Match.FEATURES.value,
                               optional=True, **ADVANCED,
                               tooltip="How a merged token picks its destination: features = the most similar "
                                       "one (cosine, the default: it measured best); normalized = the same on "
                                       "layer-normalised features; position = the nearest on the token grid, as "
                                       "the IBTM authors run PixArt (with pool_factor 1.0), from the first step "
                                       "with an importance map."),
            ],
        )

    @classmethod
    def execute(cls, model, ratio: float, max_downsample: str, dst_fraction: float, pool_factor: float,
                dst_mode: str, merge_cross_attention: bool, merge_feed_forward: bool, prune_until: float,
                start_percent: float, end_percent: float, seed: int, fallback: str = AUTO,
                block_start: float = 0.25, block_end: float = 0.75,
                proportional_attention: bool = False, match: str = Match.FEATURES.value) -> io.NodeOutput:
        config = MergeConfig(
            Method.IMPORTANCE, ratio=ratio, max_downsample=resolve_max_downsample(model, max_downsample),
            dst_fraction=dst_fraction, pool_factor=pool_factor, dst_mode=DstMode(dst_mode),
            merge_attn2=merge_cross_attention, merge_ff=merge_feed_forward, prune_until=prune_until,
            start_percent=start_percent, end_percent=end_percent, seed=seed,
            fallback=resolve_fallback(model, fallback), block_range=(block_start, block_end),
            proportional_attention=proportional_attention, match=Match(match),
        )
        return patched_output(cls, model, config)


class TokenMergeSpatialToMe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "TokenMergeSpatialToMe", "Token Merge (Spatial ToMe)",
            "Spatial token merging (ToMeSD, arXiv 2303.17604): one random destination per window, the most "
            "similar tokens merged. The baseline for the importance nodes, on the same code path (it merges q, "
            "k and v, unlike the built-in TomePatchModel).",
            [
                _max_downsample_input(),
                io.Int.Input("window_y", default=2, min=1, max=8, **ADVANCED,
                             tooltip="Window height: one destination per window_y x window_x tokens. The ratio "
                                     "can be at most 1 - 1/(window_y x window_x)."),
                io.Int.Input("window_x", default=2, min=1, max=8, **ADVANCED, tooltip="Window width."),
                *operation_inputs(),
                seed_input(),
                *block_range_inputs(),
            ],
        )

    @classmethod
    def execute(cls, model, ratio: float, max_downsample: str, window_y: int, window_x: int,
                merge_cross_attention: bool, merge_feed_forward: bool, seed: int, block_start: float = 0.25,
                block_end: float = 0.75) -> io.NodeOutput:
        config = MergeConfig(
            Method.TOME, ratio=ratio, max_downsample=resolve_max_downsample(model, max_downsample),
            window=(window_y, window_x), merge_attn2=merge_cross_attention, merge_ff=merge_feed_forward,
            prune_until=0.0, seed=seed, block_range=(block_start, block_end),
        )
        return patched_output(cls, model, config)


NODES = [TokenMergeImportance, TokenMergeImportanceAdvanced, TokenMergeSpatialToMe]

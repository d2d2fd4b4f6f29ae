"""Token Merge (SDTM): structure-then-detail token merging for diffusion transformers, Simple and Advanced.

Thin nodes: validate, build a :class:`MergeConfig` with ``Method.SDTM``, call :func:`apply_token_merge`.
"""

from __future__ import annotations

from ..patching.config import DetailDestination, MergeConfig, Method
from ..patching.settings import DEFAULT_WINDOW_RATIO_MAX, SETTINGS
from ._comfy_api import ADVANCED, io
from .common import (
    block_range_inputs,
    float_input,
    int_input,
    model_schema,
    patched_output,
    proportional_attention_input,
    queue_time_check,
    run_window_inputs,
    seed_input,
    window_inputs,
)

DESCRIPTION = (
    "Structure-then-detail token merging (SDTM, CVPR 2025, arXiv 2505.11707) for diffusion transformers "
    "(SD3/3.5, Flux, Chroma, QwenImage, PixArt, Lumina 2, Wan): whole similar windows collapse while the "
    "structure forms, then the tokens kept dependent longest anchor a global merge of the details. Every "
    "third step runs in full and refreshes a cache that merged tokens blend with."
)
PROMPT_SCALE_TOOLTIP = (
    "Prompt reweighting (SDTM) in the {stage} stage: the text keys of joint attention get "
    "log(scale) added, multiplying the odds of attending to the prompt by scale (1 = off, the "
    "default until the quality benchmark settles it). Joint-attention models (SD3, Flux, Chroma, "
    "QwenImage, Lumina 2); cross-attention models (Wan, PixArt) ignore it."
)
RATIO_TOOLTIP = (
    "Centre of the fraction of image tokens merged away; the run starts at ratio + deviation and ends "
    "at ratio - deviation (cosine). 0 returns the model unpatched."
)
SIMPLE_RATIO_TOOLTIP = (
    "Centre of the fraction of image tokens merged away: the run starts at ratio + 0.2 and ends "
    "at ratio - 0.2 (cosine; narrower near 0 and 0.75, the most 2x2 windows can merge). 0 "
    "returns the model unpatched."
)

# The Simple node's 2x2 windows merge at most 0.75; it narrows the schedule near the ends so every ratio up to
# there is valid. The Advanced node's ratio is checked against its windows and deviation when queued.
SIMPLE_RATIO = SETTINGS["ratio"].with_(default=0.4, high=DEFAULT_WINDOW_RATIO_MAX)
ADVANCED_RATIO = SETTINGS["ratio"].with_(default=0.4)


def simple_deviation(ratio: float) -> float:
    """The authors' deviation of 0.2, narrowed so the schedule stays within 0..0.75 (from ratio + deviation at the
    start of the run to ratio - deviation at its end)."""
    return round(min(SETTINGS["deviation"].default, ratio, DEFAULT_WINDOW_RATIO_MAX - ratio), 6)


class TokenMergeSDTM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return model_schema("TokenMergeSDTM", "Token Merge (SDTM)", DESCRIPTION, SIMPLE_RATIO, SIMPLE_RATIO_TOOLTIP, [])

    @classmethod
    def execute(cls, model, ratio: float) -> io.NodeOutput:
        # The authors' defaults, for every DiT family: all blocks, deviation 0.2, switch at 40 %.
        SIMPLE_RATIO.check("ratio", ratio)  # a linked ratio is not checked at queue time
        config = MergeConfig(
            Method.SDTM,
            ratio=ratio,
            max_downsample=1,
            block_range=(0.0, 1.0),
            deviation=simple_deviation(ratio),
            prune_until=0.0,
        )
        return patched_output(cls, model, config)


class TokenMergeSDTMAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return model_schema(
            "TokenMergeSDTMAdvanced",
            "Token Merge (SDTM), Advanced",
            DESCRIPTION + " Every setting exposed.",
            ADVANCED_RATIO,
            RATIO_TOOLTIP + " At most 1 - 1/(window_y x window_x) - deviation.",
            [
                float_input(
                    "deviation", "Half the range of the cosine ratio schedule (at most the ratio).", advanced=False
                ),
                float_input(
                    "switch_percent",
                    "Structure stage before this point of the run, detail stage after "
                    "(converted to a sigma once; the authors switch at 20 of 50 steps).",
                    advanced=False,
                ),
                *window_inputs("Window height in tokens."),
                float_input(
                    "similarity_weight",
                    "a_s: weight of the frequency priority (tokens long kept "
                    "dependent) against window similarity in the structure stage.",
                ),
                io.Combo.Input(
                    "detail_destination",
                    options=[d.value for d in DetailDestination],
                    default=DetailDestination.DEPENDENT.value,
                    **ADVANCED,
                    tooltip="Detail stage anchor of each window: dependent = the token kept dependent "
                    "longest (authors); importance = the most important token by CFG "
                    "importance (needs cfg > 1, else falls back to dependent).",
                ),
                io.Boolean.Input(
                    "detail_mlp_only",
                    default=True,
                    **ADVANCED,
                    tooltip="Detail stage merges only the MLP input; attention runs on all tokens.",
                ),
                int_input("protect_every", "Every k-th step runs in full and refreshes the cache (0 = never)."),
                float_input(
                    "cache_weight",
                    "mcw: merged tokens take this share of their computed block update and "
                    "the rest from the last protected step (1 = no cache).",
                ),
                int_input(
                    "cache_limit_mb", "Upper bound of the protected-step cache; blocks beyond it run without it."
                ),
                *run_window_inputs(),
                seed_input(),
                *block_range_inputs(0.0, 1.0),
                proportional_attention_input(),
                *(
                    float_input(f"prompt_scale_{stage}", PROMPT_SCALE_TOOLTIP.format(stage=stage), optional=True)
                    for stage in ("structure", "detail")
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        ratio: float | None = None,
        deviation: float | None = None,
        window_y: int | None = None,
        window_x: int | None = None,
        start_percent: float | None = None,
        end_percent: float | None = None,
        block_start: float | None = None,
        block_end: float | None = None,
    ) -> bool | str:
        return queue_time_check(
            Method.SDTM,
            ADVANCED_RATIO,
            ratio=ratio,
            deviation=deviation,
            window_y=window_y,
            window_x=window_x,
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
        deviation: float,
        switch_percent: float,
        window_y: int,
        window_x: int,
        similarity_weight: float,
        detail_destination: str,
        detail_mlp_only: bool,
        protect_every: int,
        cache_weight: float,
        cache_limit_mb: int,
        start_percent: float,
        end_percent: float,
        seed: int,
        block_start: float = 0.0,
        block_end: float = 1.0,
        proportional_attention: bool = False,
        prompt_scale_structure: float = 1.0,
        prompt_scale_detail: float = 1.0,
    ) -> io.NodeOutput:
        config = MergeConfig(
            Method.SDTM,
            ratio=ratio,
            max_downsample=1,
            window=(window_y, window_x),
            prune_until=0.0,
            start_percent=start_percent,
            end_percent=end_percent,
            seed=seed,
            block_range=(block_start, block_end),
            deviation=deviation,
            switch_percent=switch_percent,
            similarity_weight=similarity_weight,
            detail_destination=DetailDestination(detail_destination),
            detail_mlp_only=detail_mlp_only,
            protect_every=protect_every,
            cache_weight=cache_weight,
            cache_limit_mb=cache_limit_mb,
            proportional_attention=proportional_attention,
            prompt_scale_structure=prompt_scale_structure,
            prompt_scale_detail=prompt_scale_detail,
        )
        return patched_output(cls, model, config)


NODES = [TokenMergeSDTM, TokenMergeSDTMAdvanced]

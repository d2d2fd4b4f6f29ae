"""Token Merge (SDTM): structure-then-detail token merging for diffusion transformers, Simple and Advanced.

Thin nodes: validate, build a :class:`MergeConfig` with ``Method.SDTM``, call :func:`apply_token_merge`.
"""

from __future__ import annotations

from ..patching.config import DetailDestination, MergeConfig, Method
from ._comfy_api import ADVANCED, io
from .importance import (
    CATEGORY,
    HIDDEN,
    block_range_inputs,
    patched_output,
    proportional_attention_input,
    run_window_inputs,
    seed_input,
)

DESCRIPTION = ("Structure-then-detail token merging (SDTM, CVPR 2025, arXiv 2505.11707) for diffusion transformers "
               "(SD3/3.5, Flux, Chroma, QwenImage, PixArt, Lumina 2, Wan): whole similar windows collapse while the "
               "structure forms, then the tokens kept dependent longest anchor a global merge of the details. Every "
               "third step runs in full and refreshes a cache that merged tokens blend with.")
PROMPT_SCALE_TOOLTIP = ("Prompt reweighting (SDTM) in the {stage} stage: the text keys of joint attention get "
                        "log(scale) added, multiplying the odds of attending to the prompt by scale (1 = off, the "
                        "default until the quality benchmark settles it). Joint-attention models (SD3, Flux, Chroma, "
                        "QwenImage, Lumina 2); cross-attention models (Wan, PixArt) ignore it.")
RATIO_TOOLTIP = ("Centre of the fraction of image tokens merged away; the run starts at ratio + deviation and ends "
                 "at ratio - deviation (cosine). 0 returns the model unpatched.")


def _model_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The diffusion transformer to accelerate; a patched clone is returned."),
        io.Float.Input("ratio", default=0.4, min=0.0, max=0.9, step=0.05, tooltip=RATIO_TOOLTIP),
    ]


def _output() -> list:
    return [io.Model.Output(tooltip="The patched clone (or the input model when ratio is 0).")]


class TokenMergeSDTM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TokenMergeSDTM", display_name="Token Merge (SDTM)", category=CATEGORY,
                         description=DESCRIPTION, inputs=_model_inputs(), outputs=_output(),
                         hidden=HIDDEN, not_idempotent=True)

    @classmethod
    def execute(cls, model, ratio: float) -> io.NodeOutput:
        # The authors' defaults, for every DiT family: all blocks, deviation 0.2, switch at 40 %.
        config = MergeConfig(Method.SDTM, ratio=ratio, max_downsample=1, block_range=(0.0, 1.0),
                             deviation=min(0.2, ratio), prune_until=0.0)
        return patched_output(cls, model, config)


class TokenMergeSDTMAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TokenMergeSDTMAdvanced", display_name="Token Merge (SDTM), Advanced", category=CATEGORY,
            description=DESCRIPTION + " Every setting exposed.",
            inputs=[
                *_model_inputs(),
                io.Float.Input("deviation", default=0.2, min=0.0, max=0.5, step=0.05,
                               tooltip="Half the range of the cosine ratio schedule (at most the ratio)."),
                io.Float.Input("switch_percent", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="Structure stage before this point of the run, detail stage after "
                                       "(converted to a sigma once; the authors switch at 20 of 50 steps)."),
                io.Int.Input("window_y", default=2, min=1, max=8, **ADVANCED, tooltip="Window height in tokens."),
                io.Int.Input("window_x", default=2, min=1, max=8, **ADVANCED, tooltip="Window width in tokens."),
                io.Float.Input("similarity_weight", default=0.05, min=0.0, max=10.0, step=0.01, **ADVANCED,
                               tooltip="a_s: weight of the frequency priority (tokens long kept dependent) "
                                       "against window similarity in the structure stage."),
                io.Combo.Input("detail_destination", options=[d.value for d in DetailDestination],
                               default=DetailDestination.DEPENDENT.value, **ADVANCED,
                               tooltip="Detail stage anchor of each window: dependent = the token kept dependent "
                                       "longest (authors); importance = the most important token by CFG "
                                       "importance (needs cfg > 1, else falls back to dependent)."),
                io.Boolean.Input("detail_mlp_only", default=True, **ADVANCED,
                                 tooltip="Detail stage merges only the MLP input; attention runs on all tokens."),
                io.Int.Input("protect_every", default=3, min=0, max=100, **ADVANCED,
                             tooltip="Every k-th step runs in full and refreshes the cache (0 = never)."),
                io.Float.Input("cache_weight", default=0.2, min=0.0, max=1.0, step=0.05, **ADVANCED,
                               tooltip="mcw: merged tokens take this share of their computed block update and "
                                       "the rest from the last protected step (1 = no cache)."),
                io.Int.Input("cache_limit_mb", default=2048, min=0, max=1 << 20, **ADVANCED,
                             tooltip="Upper bound of the protected-step cache; blocks beyond it run without it."),
                *run_window_inputs(),
                seed_input(),
                *block_range_inputs(0.0, 1.0),
                proportional_attention_input(),
                *(io.Float.Input(f"prompt_scale_{stage}", default=1.0, min=0.1, max=10.0, step=0.05, optional=True,
                                 **ADVANCED, tooltip=PROMPT_SCALE_TOOLTIP.format(stage=stage))
                  for stage in ("structure", "detail")),
            ],
            outputs=_output(),
            hidden=HIDDEN, not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, ratio: float, deviation: float, switch_percent: float, window_y: int, window_x: int,
                similarity_weight: float, detail_destination: str, detail_mlp_only: bool, protect_every: int,
                cache_weight: float, cache_limit_mb: int, start_percent: float, end_percent: float, seed: int,
                block_start: float = 0.0, block_end: float = 1.0, proportional_attention: bool = False,
                prompt_scale_structure: float = 1.0, prompt_scale_detail: float = 1.0) -> io.NodeOutput:
        config = MergeConfig(
            Method.SDTM, ratio=ratio, max_downsample=1, window=(window_y, window_x), prune_until=0.0,
            start_percent=start_percent, end_percent=end_percent, seed=seed, block_range=(block_start, block_end),
            deviation=deviation, switch_percent=switch_percent, similarity_weight=similarity_weight,
            detail_destination=DetailDestination(detail_destination), detail_mlp_only=detail_mlp_only,
            protect_every=protect_every, cache_weight=cache_weight, cache_limit_mb=cache_limit_mb,
            proportional_attention=proportional_attention, prompt_scale_structure=prompt_scale_structure,
            prompt_scale_detail=prompt_scale_detail,
        )
        return patched_output(cls, model, config)


NODES = [TokenMergeSDTM, TokenMergeSDTMAdvanced]

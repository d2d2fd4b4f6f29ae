"""Patch a clone of a MODEL for token merging; the only entry point the nodes call."""

from __future__ import annotations

import logging

import comfy.patcher_extension
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from .capture import ImportanceCapture
from .config import MergeConfig, Method
from .state import MergeState
from .unet import UNetMerger, attention_downsamples, transformer_blocks

logger = logging.getLogger(__name__)

WRAPPER_KEY = "tokenmerge"
STATE_ATTACHMENT = "tokenmerge_state"


def model_family(model) -> str:
    """``"unet"`` for SD1.x/SD2.x/SDXL-style UNets, else the model class name (not patchable yet)."""
    if isinstance(model.model.diffusion_model, UNetModel):
        return "unet"
    return type(model.model).__name__


def default_max_downsample(model) -> int:
    """The finest UNet level that has attention: 1 for SD1.x/SD2.x, 2 for SDXL (no attention at full size)."""
    levels = attention_downsamples(model.model.diffusion_model)
    return levels[0] if levels else 1


def _run_wrapper(state: MergeState):
    def outer_sample(executor, *args, **kwargs):
        state.reset()
        try:
            return executor(*args, **kwargs)
        finally:
            c = state.counters
            if c["merged_calls"]:
                kept = c["tokens_out"] / c["tokens_in"]
                logger.info("tokenmerge: merged %d block calls (%d by importance, %d spatial ToMe, %d pruning); "
                            "those blocks ran on %.0f%% of their tokens",
                            c["merged_calls"], c["importance_calls"], c["tome_calls"], c["prune_calls"], 100 * kept)

    return outer_sample


def apply_token_merge(model, config: MergeConfig):
    """A clone of ``model`` that merges tokens as ``config`` says; ``model`` itself if nothing applies."""
    if config.ratio == 0:
        return model
    family = model_family(model)
    if family != "unet":
        logger.warning("tokenmerge: %s models are not supported by this node yet; the model passes through "
                       "unpatched", family)
        return model
    patched = model.clone()
    state = MergeState()
    merger = UNetMerger(config, state)
    patched.set_model_attn1_patch(merger.attn1_patch)
    patched.set_model_attn1_output_patch(merger.attn1_output_patch)
    if config.merge_attn2:
        patched.set_model_attn2_patch(merger.attn2_patch)
        patched.set_model_attn2_output_patch(merger.attn2_output_patch)
    if config.merge_ff:
        for path, key in transformer_blocks(model.model.diffusion_model).items():
            name = f"diffusion_model.{path}.ff.forward"
            patched.add_object_patch(name, merger.feed_forward(patched.get_model_object(name), key))
    if config.method is Method.IMPORTANCE:
        patched.set_model_sampler_post_cfg_function(ImportanceCapture(state))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _run_wrapper(state))
    patched.set_attachments(STATE_ATTACHMENT, state)
    return patched

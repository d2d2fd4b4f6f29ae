"""Patch a clone of a MODEL for token merging; the only entry point the nodes call."""

from __future__ import annotations

import logging

import comfy.patcher_extension
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from . import dit, live, unet
from .capture import ImportanceCapture
from .chain import PREVIOUS, unchained
from .config import MergeConfig, Method
from .dit_families import DIT_CLASSES, dit_family, ignored_attention_options
from .model_call import LEADING_REFERENCE, model_call
from .state import MergeState

logger = logging.getLogger(__name__)

WRAPPER_KEY = "tokenmerge"
STATE_ATTACHMENT = "tokenmerge_state"


def model_family(model) -> str:
    """``"unet"`` (SD1.x/SD2.x/SDXL), a DiT family (``"sd3"``, ``"flux"``, ``"pixart"``, ``"wan"``), or the
    model class name for families this pack cannot patch."""
    diffusion_model = model.model.diffusion_model
    if isinstance(diffusion_model, UNetModel):
        return "unet"
    return dit_family(diffusion_model) or type(model.model).__name__


def default_max_downsample(model) -> int:
    """The finest UNet level that has attention: 1 for SD1.x/SD2.x, 2 for SDXL (no attention at full size)."""
    levels = unet.attention_downsamples(model.model.diffusion_model)
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
                logger.info(
                    "tokenmerge: merged %d block calls (%d by importance, %d spatial ToMe, %d SDTM structure, "
                    "%d SDTM detail, %d pruning); those blocks ran on %.0f%% of their tokens",
                    c["merged_calls"],
                    c["importance_calls"],
                    c["tome_calls"],
                    c["structure_calls"],
                    c["detail_calls"],
                    c["prune_calls"],
                    100 * kept,
                )
            if c["protected_calls"]:
                logger.info(
                    "tokenmerge: SDTM ran %d protected block calls in full; cache peak %.1f MB",
                    c["protected_calls"],
                    c["cache_peak_bytes"] / 2**20,
                )

    return outer_sample


def _call_wrapper(state: MergeState, config: MergeConfig, merger: unet.UNetMerger | dit.DiTMerger):
    """APPLY_MODEL wrapper: decides the call's merging once (``model_call.py``), outside the diffusion model and
    so outside any graph TorchCompileModel compiles, and hands it to the blocks."""

    def apply_model(executor, x, *args, **kwargs):
        # BaseModel.apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **extra conds)
        options = kwargs.get("transformer_options", args[4] if len(args) > 4 else {})
        context = kwargs.get("c_crossattn", args[2] if len(args) > 2 else None)
        state.call = model_call(
            config,
            state,
            x,
            options,
            merger.token_grids(tuple(x.shape)),
            merger.switch_sigma,
            text_tokens=context.shape[1] if isinstance(context, torch.Tensor) else None,
            reference_method=reference_method(getattr(executor, "class_obj", None), kwargs),
        )
        try:
            return executor(x, *args, **kwargs)
        finally:
            state.call = None

    return apply_model


def reference_method(base_model: object, conds: dict) -> str | None:
    """How the reference images of a call are placed (Flux Kontext / Flux 2 / QwenImage-Edit: "offset", "index",
    "index_timestep_zero", ...; HunyuanVideo's ``ref_latent``: before the image), or ``None`` when it has none: the
    call's own choice, else the model's default."""
    if conds.get("ref_latent") is not None:
        return LEADING_REFERENCE
    if conds.get("ref_latents") is None:
        return None
    method = conds.get("ref_latents_method")
    if method is None:
        diffusion_model = getattr(base_model, "diffusion_model", None)
        params = getattr(diffusion_model, "params", diffusion_model)  # Flux: params.<...>; QwenImage: the model
        method = getattr(params, "default_ref_method", None)
    return method


def _remove_token_merge(patched) -> None:
    """Take the patches of an earlier tokenmerge node out of ``patched`` (a fresh clone), keeping every foreign
    patch they were chained to or stacked with, so the last tokenmerge node on a model wins."""
    options = patched.model_options
    transformer_options = options["transformer_options"]
    patches = transformer_options.get("patches", {})
    for name, fns in list(patches.items()):
        patches[name] = [fn for fn in fns if not isinstance(getattr(fn, "__self__", None), unet.UNetMerger)]
    for slots in (*transformer_options.get("patches_replace", {}).values(), patched.object_patches):
        for key, patch in list(slots.items()):
            if not hasattr(patch, PREVIOUS):
                continue
            previous = unchained(patch)
            if previous is None:
                del slots[key]
            else:
                slots[key] = previous
    if "sampler_post_cfg_function" in options:
        options["sampler_post_cfg_function"] = [
            fn for fn in options["sampler_post_cfg_function"] if not isinstance(fn, ImportanceCapture)
        ]
    for wrapper_type in (
        comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
        comfy.patcher_extension.WrappersMP.APPLY_MODEL,
    ):
        patched.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    patched.remove_attachments(STATE_ATTACHMENT)


def apply_token_merge(model, config: MergeConfig, previews: dict[str, str] | None = None):
    """A clone of ``model`` that merges tokens as ``config`` says; ``model`` itself if nothing applies.

    A model that an earlier tokenmerge node patched loses those patches first: the last tokenmerge node wins.
    ``previews`` maps the ids of heatmap preview nodes that consume this model to their colormaps: the
    clone records for them from its first run and streams the live view to them.
    """
    earlier = model.get_attachment(STATE_ATTACHMENT) is not None
    if config.ratio == 0 and not earlier:
        return model
    family = model_family(model)
    if config.method is Method.SDTM and family == "unet":
        logger.warning(
            "tokenmerge: SDTM is for diffusion transformers; this UNet passes through unpatched "
            "(use Token Merge (Importance) for UNets)"
        )
        return model
    if family != "unet" and family not in DIT_CLASSES.values():
        logger.warning(
            "tokenmerge: %s models are not supported by this node yet; the model passes through unpatched", family
        )
        return model
    ignored = ignored_attention_options(config, family)
    if ignored:
        logger.warning("tokenmerge: %s cannot act on %s models and is ignored", ", ".join(ignored), family)
    patched = model.clone()
    if earlier:
        _remove_token_merge(patched)
        logger.info(
            "tokenmerge: the model already carries token merging from an earlier tokenmerge node; this "
            "node's settings replace it (the last tokenmerge node wins)"
        )
        if config.ratio == 0:
            return patched
    state = MergeState(publish=live.publish)
    if family == "unet":
        merger = unet.install(patched, model, config, state)
    else:
        merger = dit.install(patched, model, family, config, state)
    patched.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, _call_wrapper(state, config, merger)
    )
    patched.set_model_sampler_post_cfg_function(
        ImportanceCapture(state, config.fallback, merges_by_importance=merger.planner.strategy.uses_importance)
    )
    if previews:
        state.recorder.request(previews)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _run_wrapper(state))
    patched.set_attachments(STATE_ATTACHMENT, state)
    return patched

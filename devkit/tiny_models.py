"""Tiny, seeded, random-weight models of the supported families, built from ComfyUI's own classes.

Two ways in:

* :func:`build_patcher` constructs a family directly through ``comfy.supported_models`` with a small
  config and wraps it in the ``ModelPatcher`` a loader would return (every family, any size).
* ``devkit.standin_files.loader_state_dict`` gives a state dict that ``UNETLoader``
  (``comfy.sd.load_diffusion_model_state_dict``) detects as the family, for files a real server loads.

Weights: ComfyUI builds layers with ``comfy.ops.disable_weight_init`` (uninitialised memory), so
:func:`random_init_` re-runs torch's own ``reset_parameters`` for every layer, under a forked RNG so
the caller's global RNG is untouched. Images from these models are noise: assert shapes,
finiteness and determinism, never content. ComfyUI must be bootstrapped first (``devkit.comfy_env``).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

import torch


def random_init_(module: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter sane random values; ``scale`` < 1 shrinks matrices for tamer outputs."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        owned: set[int] = set()
        for sub in module.modules():
            for cls in type(sub).__mro__:
                if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                    cls.reset_parameters(sub)  # skips comfy.ops' no-op override
                    owned.update(id(p) for p in sub.parameters(recurse=False))
                    break
        for param in list(module.parameters()) + list(module.buffers()):
            if id(param) not in owned and param.is_floating_point():
                param.normal_(0.0, 0.02)  # free parameters: pos-embeds, modulation tables, ...
            elif scale != 1.0 and param.ndim >= 2:
                param.mul_(scale)
    return module


# ----------------------------------------------------------------------------------------- configs
UNET_COMMON = {
    "in_channels": 4,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "use_checkpoint": False,
    "image_size": 32,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
    "num_heads": -1,
    "num_head_channels": 16,
}

# SD1.x: attention at every level, the full-resolution level included.
SD15_TINY = {
    **UNET_COMMON,
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 64,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
}

# SDXL: no attention at the full-resolution level (depth 0), as in the real model; linear proj_in,
# and the 2816-wide ADM vector that model_base.SDXL builds from a 1280 pooled output and size ids.
SDXL_TINY = {
    **UNET_COMMON,
    "model_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": [1, 1, 1],
    "transformer_depth": [0, 1, 1],
    "transformer_depth_output": [0, 0, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 64,
    "use_linear_in_transformer": True,
    "adm_in_channels": 2816,
    "num_classes": "sequential",
}

# SD3 / MMDiT: hidden = 64 * depth, heads = depth (what model_detection derives).
SD3_TINY = {
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "depth": 2,
    "adm_in_channels": 64,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 64, "out_features": 128}},
    "num_patches": 64 * 64,
    "pos_embed_max_size": 64,
    "pos_embed_scaling_factor": None,
    "input_size": None,
    "x_block_self_attn_layers": [],
}

# Flux: the RoPE axes fix the head dim at 128, so 2 heads of 128.
FLUX_TINY = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "hidden_size": 256,
    "num_heads": 2,
    "mlp_ratio": 4.0,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [16, 56, 56],
    "theta": 10000,
    "qkv_bias": True,
    "guidance_embed": True,
    "context_in_dim": 64,
    "vec_in_dim": 64,
}

# Chroma: Flux's blocks with per-block modulations from a small approximator (344 vectors, in_dim 64 as
# model_detection sets); latent channels are patchified before img_in, hence 64 in/out channels.
CHROMA_TINY = {
    "image_model": "chroma",
    "in_channels": 64,
    "out_channels": 64,
    "patch_size": 2,
    "hidden_size": 256,
    "num_heads": 2,
    "mlp_ratio": 4.0,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [16, 56, 56],
    "theta": 10000,
    "qkv_bias": True,
    "context_in_dim": 64,
    "in_dim": 64,
    "out_dim": 256,
    "hidden_dim": 64,
    "n_layers": 1,
}

# Flux 2: Flux's class with global modulation (one shared modulation per stream, handed to every block as ``vec``),
# SiLU-gated MLPs, no biases, four RoPE axes (the fourth numbers the text tokens) and patch size 1 on a 128-channel
# latent at 1/16 scale: the values comfy.model_detection gives Flux 2 checkpoints, but axes of 8 instead of 32 (the
# axes fix the head dim), so 2 heads of 32: every prompt is padded to 512 tokens, which a width of 256 makes 5 times
# slower to sample.
FLUX2_TINY = {
    "image_model": "flux2",
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "hidden_size": 64,
    "num_heads": 2,
    "mlp_ratio": 3.0,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [8, 8, 8, 8],
    "theta": 2000,
    "qkv_bias": False,
    "guidance_embed": True,
    "context_in_dim": 64,
    "vec_in_dim": None,
    "global_modulation": True,
    "mlp_silu_act": True,
    "ops_bias": False,
    "default_ref_method": "index",
    "ref_index_scale": 10.0,
}

# QwenImage: joint text-image blocks like Flux's double blocks; the RoPE axes fix the head dim at 128.
QWEN_IMAGE_TINY = {
    "image_model": "qwen_image",
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 128,
    "num_attention_heads": 2,
    "joint_attention_dim": 64,
    "axes_dims_rope": (16, 56, 56),
}

PIXART_ALPHA_TINY = {
    "image_model": "pixart_alpha",
    "in_channels": 4,
    "patch_size": 2,
    "hidden_size": 96,
    "num_heads": 2,
    "depth": 2,
    "caption_channels": 64,
    "model_max_length": 120,
    "micro_condition": True,
}

# Wan 2.1 t2v: heads = dim // 128 (what model_detection derives).
WAN21_TINY = {
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 256,
    "ffn_dim": 512,
    "num_heads": 2,
    "num_layers": 2,
    "in_dim": 16,
    "out_dim": 16,
    "text_dim": 64,
    "freq_dim": 256,
    "patch_size": (1, 2, 2),
    "window_size": (-1, -1),
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
}


# HunyuanVideo (one class for HunyuanVideo 1.0 and 1.5 and HunyuanImage 2.1): Flux's double and single blocks after
# a token refiner on the text; the RoPE axes fix the head dim at 128 (what comfy.model_detection gives HunyuanVideo
# checkpoints: 16 + 56 + 56), so 2 heads of 128; no guidance embedding (sampled with cfg, as 1.5 is); a pooled
# CLIP-L vector (1.0), narrowed to 64.
HUNYUAN_VIDEO_TINY = {
    "image_model": "hunyuan_video",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": 64,
    "context_in_dim": 64,
    "hidden_size": 256,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [16, 56, 56],
    "theta": 256,
    "patch_size": [1, 2, 2],
    "qkv_bias": True,
    "guidance_embed": False,
    "byt5": False,
    "meanflow": False,
    "use_cond_type_embedding": False,
    "vision_in_dim": None,
}

# Lumina 2 (NextDiT).
LUMINA2_TINY = {
    "image_model": "lumina2",
    "patch_size": 2,
    "in_channels": 16,
    "dim": 64,
    "cap_feat_dim": 64,
    "n_layers": 2,
    "n_heads": 2,
    "n_kv_heads": 2,
    "axes_dims": [8, 12, 12],
    "axes_lens": [300, 512, 512],
    "qk_norm": True,
    "ffn_dim_multiplier": 4.0,
    "rope_theta": 10000.0,
}

# Z-Image (NextDiT, the Lumina 2 class): Z-Image's modulation (a 256-wide timestep embedding, no SiLU before the
# layers' adaLN: the width must be at least 256 to build), caption and image each padded to a multiple of 32 tokens
# with learned pad tokens, and its RoPE axes, which fix the head dim at 128: the values comfy.model_detection gives
# Z-Image checkpoints, with one caption and one image refiner layer instead of two (they run before the layers
# the pack patches).
ZIMAGE_TINY = {
    "image_model": "lumina2",
    "patch_size": 2,
    "in_channels": 16,
    "dim": 256,
    "cap_feat_dim": 64,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "n_heads": 2,
    "n_kv_heads": 2,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
    "qk_norm": True,
    "ffn_dim_multiplier": 8.0 / 3.0,
    "rope_theta": 256.0,
    "z_image_modulation": True,
    "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
}

# AuraFlow: not supported by the merging nodes, used to test the pass-through path. Its diffusion model class is
# also named MMDiT, like SD3's base class, which must not make it pass for SD3.
AURAFLOW_TINY = {
    "in_channels": 4,
    "out_channels": 4,
    "patch_size": 2,
    "dim": 64,
    "n_layers": 2,
    "n_double_layers": 1,
    "n_heads": 2,
    "global_conddim": 64,
    "cond_seq_dim": 64,
    "max_seq": 256,
}


@dataclass(frozen=True)
class TinyFamily:
    """How to build one tiny family and feed it: latent layout and conditioning shapes."""

    name: str
    model_config: str  # class name in comfy.supported_models
    unet_config: dict[str, Any]
    latent_channels: int
    context_dim: int
    pooled_dim: int = 0
    video: bool = False  # latent [B, C, T, H, W]
    single_frame: bool = False  # a video-shaped latent that always has T = 1 (QwenImage's image latents)
    # Smallest image side (pixels) the upstream model accepts: PixArt's sin-cos position embedding
    # divides by round(mean latent side / 64), which is 0 below 256 px.
    min_side: int = 64
    cond_extras: dict[str, Any] = field(default_factory=dict)
    downscale: int = 8  # pixels per latent cell (Flux 2: 16)

    def empty_latent(self, height: int, width: int, batch: int = 1, frames: int = 1) -> torch.Tensor:
        """Zero latent for an image of ``height`` x ``width`` pixels, like the Empty*Latent nodes."""
        spatial = (height // self.downscale, width // self.downscale)
        if self.video:
            latent_frames = 1 if self.single_frame else (frames - 1) // 4 + 1
            return torch.zeros(batch, self.latent_channels, latent_frames, *spatial)
        return torch.zeros(batch, self.latent_channels, *spatial)

    def conditioning(self, seed: int, tokens: int = 16) -> list:
        """Random CONDITIONING of this family's shapes: ``[[context[1, tokens, dim], extras]]``."""
        gen = torch.Generator().manual_seed(seed)
        extras = dict(self.cond_extras)
        if self.pooled_dim:
            extras["pooled_output"] = torch.randn(1, self.pooled_dim, generator=gen)
        return [[torch.randn(1, tokens, self.context_dim, generator=gen), extras]]


UNSUPPORTED_FAMILY = TinyFamily("auraflow", "AuraFlow", AURAFLOW_TINY, latent_channels=4, context_dim=64)

FAMILIES: dict[str, TinyFamily] = {
    family.name: family
    for family in (
        TinyFamily("sd15", "SD15", SD15_TINY, latent_channels=4, context_dim=64),
        TinyFamily("sdxl", "SDXL", SDXL_TINY, latent_channels=4, context_dim=64, pooled_dim=1280),
        TinyFamily("sd3", "SD3", SD3_TINY, latent_channels=16, context_dim=64, pooled_dim=64),
        TinyFamily(
            "flux", "Flux", FLUX_TINY, latent_channels=16, context_dim=64, pooled_dim=64, cond_extras={"guidance": 3.5}
        ),
        # Chroma ignores the pooled output, but model_base.Flux's conditioning asks for one.
        TinyFamily("chroma", "Chroma", CHROMA_TINY, latent_channels=16, context_dim=64, pooled_dim=64),
        # Flux 2's text comes padded to 512 tokens (model_base.Flux2); 0.3.75's model_base.Flux asks for a pooled
        # output that the model (vec_in_dim None) never reads.
        TinyFamily(
            "flux2",
            "Flux2",
            FLUX2_TINY,
            latent_channels=128,
            context_dim=64,
            pooled_dim=64,
            cond_extras={"guidance": 4.0},
            downscale=16,
        ),
        TinyFamily(
            "qwen_image",
            "QwenImage",
            QWEN_IMAGE_TINY,
            latent_channels=16,
            context_dim=64,
            video=True,
            single_frame=True,
        ),
        TinyFamily("lumina2", "Lumina2", LUMINA2_TINY, latent_channels=16, context_dim=64),
        TinyFamily("zimage", "ZImage", ZIMAGE_TINY, latent_channels=16, context_dim=64),
        TinyFamily("pixart_alpha", "PixArtAlpha", PIXART_ALPHA_TINY, latent_channels=4, context_dim=64, min_side=256),
        TinyFamily("wan21", "WAN21_T2V", WAN21_TINY, latent_channels=16, context_dim=64, video=True),
        TinyFamily(
            "hunyuan_video",
            "HunyuanVideo",
            HUNYUAN_VIDEO_TINY,
            latent_channels=16,
            context_dim=64,
            pooled_dim=64,
            video=True,
        ),
    )
}


# Required fields that newer ComfyUI releases added to the Flux and Chroma parameter dataclasses (0.33:
# ``txt_ids_dims``, and ``vec_in_dim`` for Chroma), per image model with the values ``comfy.model_detection`` gives
# its checkpoints (Flux 2 numbers its text tokens on RoPE axis 3, which 0.3.75 does for any four-axis model). Only
# the fields the installed release has are filled, so one config builds on every release.
RELEASE_FIELDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "flux": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": []}),
    "flux2": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": [3]}),
    "chroma": ("comfy.ldm.chroma.model", "ChromaParams", {"txt_ids_dims": [], "vec_in_dim": None}),
    "hunyuan_video": ("comfy.ldm.hunyuan_video.model", "HunyuanVideoParams", {"meanflow_sum": False}),
}


def with_release_fields(unet_config: dict[str, Any]) -> dict[str, Any]:
    """``unet_config`` plus the fields of :data:`RELEASE_FIELDS` that this ComfyUI's parameter class requires."""
    target = RELEASE_FIELDS.get(unet_config.get("image_model"))
    if target is None:
        return unet_config
    module, cls, values = target
    names = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    missing = {name: value for name, value in values.items() if name in names and name not in unet_config}
    return {**unet_config, **missing}


def build_patcher(family: str | TinyFamily, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float32):
    """A ``ModelPatcher`` around a freshly built, randomly initialised tiny model of ``family`` in ``dtype``."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    fam = FAMILIES[family] if isinstance(family, str) else family
    model_config = getattr(comfy.supported_models, fam.model_config)(with_release_fields(fam.unet_config))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    random_init_(model.diffusion_model, seed, scale)
    model.diffusion_model.to(dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)

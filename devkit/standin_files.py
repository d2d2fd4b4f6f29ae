"""Random stand-in model files for a real ComfyUI server: state dicts that its loaders (``UNETLoader``,
``CLIPLoader``, ``VAELoader``) detect as the family, written under a models folder.

Detection reads sizes from tensor shapes, which only some families allow at a tiny size (SD1.5 with 320 channels,
SD3/MMDiT); the layers come from ComfyUI's own classes with :func:`devkit.tiny_models.random_init_`.
"""

from __future__ import annotations

from typing import Any

import torch

from .tiny_models import SD3_TINY, UNET_COMMON, WAN21_TINY, TinyFamily, build_patcher, random_init_

# Detected as SD15 by comfy.model_detection: model_channels=320, context_dim=768, conv proj_in, no ADM.
# Only one resolution level, so ~26M params instead of 860M.
SD15_LOADABLE = {
    **UNET_COMMON,
    "model_channels": 320,
    "channel_mult": [1],
    "num_res_blocks": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 768,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "num_heads": 8,
    "num_head_channels": -1,
}


# Detected as SD3 from shapes; context and pooled widths of CLIP-L (768), so the stock CLIPLoader and
# CLIPTextEncode can condition it in server tests.
SD3_LOADABLE = {
    **SD3_TINY,
    "adm_in_channels": 768,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 768, "out_features": 128}},
}


def loader_state_dict(kind: str, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """State dict that ComfyUI's loaders detect.

    ``sd15`` / ``sd3`` / ``pixart_sigma`` / ``wan21``: diffusion models for ``UNETLoader``;
    ``clip_l``: a text encoder for ``CLIPLoader``;
    ``taesd4`` / ``taesd16`` / ``wan_vae``: VAEs for ``VAELoader``.
    """
    import comfy.ops

    if kind == "sd15":
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

        module = UNetModel(**SD15_LOADABLE, operations=comfy.ops.disable_weight_init, device="cpu")
        random_init_(module, seed, scale=0.5)
    elif kind == "sd3":
        from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper

        module = OpenAISignatureMMDITWrapper(**SD3_LOADABLE, operations=comfy.ops.disable_weight_init, device="cpu")
        random_init_(module, seed)
    elif kind in LOADABLE_DITS:
        model_config_name, unet_config = LOADABLE_DITS[kind]
        module = build_patcher(
            TinyFamily(kind, model_config_name, unet_config, latent_channels=0, context_dim=0), seed
        ).model.diffusion_model
    elif kind == "clip_l":
        # CLIP-L's size is fixed by comfy/sd1_clip_config.json (123.7M params); random weights still
        # let the stock CLIPLoader + CLIPTextEncode produce [1, 77, 768] conditioning for SD1.x.
        import comfy.sd1_clip

        module = random_init_(comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32).transformer, seed)
    elif kind == "wan_vae":
        # The Wan 2.1 video VAE, its width read from decoder.head.0.gamma: 8 instead of 96.
        from comfy.ldm.wan.vae import WanVAE

        module = random_init_(
            WanVAE(
                dim=8,
                z_dim=16,
                dim_mult=[1, 2, 4, 4],
                num_res_blocks=2,
                attn_scales=[],
                temperal_downsample=[False, True, True],
                dropout=0.0,
            ),
            seed,
            scale=0.5,
        )
        dtype = torch.float32
    elif kind in ("taesd4", "taesd16"):
        from comfy.taesd.taesd import TAESD

        module = random_init_(TAESD(latent_channels=int(kind.removeprefix("taesd"))), seed)
        dtype = torch.float32
    else:
        raise ValueError(f"unknown loader model kind {kind!r}")
    return {k: v.to(dtype).contiguous() for k, v in module.state_dict().items()}


# PixArt's width and heads are fixed by model_detection (1152, 16 heads), its caption width by the class
# (4096: T5-XXL; CLIP-L through CLIPLoader type "sd3" is padded to it): one block keeps it at ~40M params.
# Wan 2.1's heads are dim // 128 and its text width 4096 (UMT5-XXL), padded CLIP-L again.
LOADABLE_DITS: dict[str, tuple[str, dict[str, Any]]] = {
    "pixart_sigma": (
        "PixArtSigma",
        {
            "image_model": "pixart_sigma",
            "in_channels": 4,
            "patch_size": 2,
            "hidden_size": 1152,
            "num_heads": 16,
            "depth": 1,
            "micro_condition": False,
            "model_max_length": 300,
        },
    ),
    "wan21": ("WAN21_T2V", {**WAN21_TINY, "text_dim": 4096}),
}

# Stand-in files a test server or the demo writes: file name (under models/) -> loader_state_dict kind.
STANDIN_FILES: dict[str, str] = {
    "diffusion_models/tokenmerge_tiny_sd15.safetensors": "sd15",
    "diffusion_models/tokenmerge_tiny_sd3_clip_l.safetensors": "sd3",
    "diffusion_models/tokenmerge_tiny_pixart_sigma.safetensors": "pixart_sigma",
    "diffusion_models/tokenmerge_tiny_wan21.safetensors": "wan21",
    "text_encoders/tokenmerge_random_clip_l.safetensors": "clip_l",
    "vae/tokenmerge_tiny_taesd_4ch.safetensors": "taesd4",
    "vae/tokenmerge_tiny_taesd_16ch.safetensors": "taesd16",
    "vae/tokenmerge_tiny_wan21_vae.safetensors": "wan_vae",
}


def write_standin_models(models_dir: str, files: dict[str, str] | None = None) -> list[str]:
    """Write random stand-in model files under ``models_dir`` (skips files that already exist)."""
    import os

    import safetensors.torch

    written = []
    for rel, kind in (files or STANDIN_FILES).items():
        path = os.path.join(models_dir, rel)
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        safetensors.torch.save_file(loader_state_dict(kind), path + ".tmp")
        os.replace(path + ".tmp", path)
        written.append(path)
    return written

"""The models of the speed benchmark (``speed.py``): ComfyUI's own classes at the real widths and token counts of
each family, with random weights, cut in depth where a step would not fit a 2-core CPU (each spec says where).
``MODELS`` names them for ``--models``; ``DEFAULT_MODELS`` is what ``make bench`` runs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit import standin_files, tiny_models

UNET_HEADS = {"num_heads": 8, "num_head_channels": -1}  # SD1.5: 8 heads at every level


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: its family (config and conditioning shapes), the image it samples and what was cut."""

    name: str
    family: tiny_models.TinyFamily
    width: int
    height: int
    text_tokens: int
    unet: bool  # UNet family (the built-in TomePatchModel applies) or DiT (SDTM applies)
    scheduler: str = "normal"
    frames: int = 1
    cut: str = "full depth"


def _sd15(side: int) -> ModelSpec:
    config = {
        **standin_files.SD15_LOADABLE,
        **UNET_HEADS,
        "channel_mult": [1, 2, 4, 4],
        "num_res_blocks": [2] * 4,
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "transformer_depth_middle": 1,
    }
    family = tiny_models.TinyFamily("sd15", "SD15", config, latent_channels=4, context_dim=768)
    return ModelSpec(f"SD1.5 {side}x{side}", family, side, side, 77, unet=True)


def _sdxl() -> ModelSpec:
    config = {
        **tiny_models.UNET_COMMON,
        "model_channels": 320,
        "channel_mult": [1, 2, 4],
        "num_res_blocks": [2] * 3,
        "transformer_depth": [0, 0, 2, 2, 2, 2],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 2, 2, 2],
        "transformer_depth_middle": 2,
        "context_dim": 2048,
        "use_linear_in_transformer": True,
        "adm_in_channels": 2816,
        "num_classes": "sequential",
        "num_heads": -1,
        "num_head_channels": 64,
    }
    family = tiny_models.TinyFamily("sdxl", "SDXL", config, latent_channels=4, context_dim=2048, pooled_dim=1280)
    return ModelSpec(
        "SDXL 1024x1024",
        family,
        1024,
        1024,
        77,
        unet=True,
        cut="lowest level 2 transformer blocks per attention layer instead of 10 (the merged 64x64 level is full)",
    )


def _sd3() -> ModelSpec:
    config = {
        **tiny_models.SD3_TINY,
        "depth": 24,
        "num_blocks": 2,
        "adm_in_channels": 2048,
        "pos_embed_max_size": 192,
        "num_patches": 36864,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
    }
    family = tiny_models.TinyFamily("sd3", "SD3", config, latent_channels=16, context_dim=4096, pooled_dim=2048)
    return ModelSpec(
        "SD3-medium width 1024x1024",
        family,
        1024,
        1024,
        154,
        unet=False,
        scheduler="simple",
        cut="2 of 24 joint blocks (width 1536, 24 heads)",
    )


def _flux() -> ModelSpec:
    config = {
        **tiny_models.FLUX_TINY,
        "hidden_size": 3072,
        "num_heads": 24,
        "depth": 1,
        "depth_single_blocks": 1,
        "context_in_dim": 4096,
        "vec_in_dim": 768,
    }
    family = tiny_models.TinyFamily(
        "flux", "Flux", config, latent_channels=16, context_dim=4096, pooled_dim=768, cond_extras={"guidance": 3.5}
    )
    return ModelSpec(
        "Flux width 1024x1024",
        family,
        1024,
        1024,
        512,
        unet=False,
        scheduler="simple",
        cut="1 of 19 double blocks and 1 of 38 single blocks (width 3072)",
    )


def _pixart() -> ModelSpec:
    config = {
        **tiny_models.PIXART_ALPHA_TINY,
        "hidden_size": 1152,
        "num_heads": 16,
        "depth": 2,
        "caption_channels": 4096,
        "input_size": 128,
        "pe_interpolation": 2,
    }
    family = tiny_models.TinyFamily(
        "pixart_alpha", "PixArtAlpha", config, latent_channels=4, context_dim=4096, min_side=256
    )
    return ModelSpec("PixArt-alpha 1024x1024", family, 1024, 1024, 120, unet=False, cut="2 of 28 blocks (width 1152)")


def _wan() -> ModelSpec:
    config = {
        **tiny_models.WAN21_TINY,
        "dim": 1536,
        "ffn_dim": 8960,
        "num_heads": 12,
        "num_layers": 2,
        "text_dim": 4096,
    }
    family = tiny_models.TinyFamily("wan21", "WAN21_T2V", config, latent_channels=16, context_dim=4096, video=True)
    return ModelSpec(
        "Wan 2.1 1.3B width 512x320x17",
        family,
        512,
        320,
        512,
        unet=False,
        scheduler="simple",
        frames=17,
        cut="2 of 30 blocks (width 1536); 17 frames = 5 latent frames, 3200 tokens",
    )


# The newer families below keep two blocks, so that IBTM's preset (the middle half of the blocks) merges one of them
# (with one block it would merge none), at sizes where a step takes seconds on a 2-core CPU.
def _flux2() -> ModelSpec:
    config = {
        **tiny_models.FLUX2_TINY,
        "hidden_size": 6144,
        "num_heads": 48,
        "axes_dim": [32, 32, 32, 32],
        "depth": 0,
        "depth_single_blocks": 2,
        "context_in_dim": 15360,
    }
    family = tiny_models.TinyFamily(
        "flux2",
        "Flux2",
        config,
        latent_channels=128,
        context_dim=15360,
        pooled_dim=64,
        cond_extras={"guidance": 4.0},
        downscale=16,
    )
    return ModelSpec(
        "Flux 2 dev width 512x512",
        family,
        512,
        512,
        512,
        unet=False,
        scheduler="simple",
        cut="2 of 48 single blocks and none of the 8 double blocks (width 6144, 48 heads); 1024 image "
        "and 512 text tokens",
    )


def _zimage() -> ModelSpec:
    config = {
        **tiny_models.ZIMAGE_TINY,
        "dim": 3840,
        "n_heads": 30,
        "n_kv_heads": 30,
        "cap_feat_dim": 2560,
        "n_layers": 2,
        "n_refiner_layers": 1,
    }
    family = tiny_models.TinyFamily("zimage", "ZImage", config, latent_channels=16, context_dim=2560)
    return ModelSpec(
        "Z-Image width 512x512",
        family,
        512,
        512,
        128,
        unet=False,
        scheduler="simple",
        cut="2 of 30 layers, 1 of 2 noise and 1 of 2 caption refiner layers (unmerged; width 3840, "
        "30 heads); 1024 image and 128 caption tokens",
    )


def _wan22() -> ModelSpec:
    config = {
        **tiny_models.WAN21_TINY,
        "dim": 3072,
        "ffn_dim": 14336,
        "num_heads": 24,
        "num_layers": 2,
        "in_dim": 48,
        "out_dim": 48,
        "text_dim": 4096,
    }
    family = tiny_models.TinyFamily(
        "wan22", "WAN22_T2V", config, latent_channels=48, context_dim=4096, video=True, downscale=16
    )
    return ModelSpec(
        "Wan 2.2 5B width 832x480x17",
        family,
        832,
        480,
        512,
        unet=False,
        scheduler="simple",
        frames=17,
        cut="2 of 30 blocks (width 3072); text to video; 17 frames = 5 latent frames, 1950 tokens",
    )


def _hunyuan() -> ModelSpec:
    config = {
        **tiny_models.HUNYUAN_VIDEO_TINY,
        "hidden_size": 3072,
        "num_heads": 24,
        "context_in_dim": 4096,
        "vec_in_dim": 768,
    }
    family = tiny_models.TinyFamily(
        "hunyuan_video", "HunyuanVideo", config, latent_channels=16, context_dim=4096, pooled_dim=768, video=True
    )
    return ModelSpec(
        "HunyuanVideo width 512x320x17",
        family,
        512,
        320,
        256,
        unet=False,
        scheduler="simple",
        frames=17,
        cut="1 of 20 double blocks and 1 of 40 single blocks (width 3072); 17 frames = 5 latent frames, 3200 tokens",
    )


def _smoke() -> ModelSpec:
    return ModelSpec("tiny SD1.x (smoke)", tiny_models.FAMILIES["sd15"], 128, 128, 16, unet=True)


MODELS: dict[str, Callable[[], ModelSpec]] = {
    "sd15-512": lambda: _sd15(512),
    "sd15-768": lambda: _sd15(768),
    "sdxl-1024": _sdxl,
    "sd3-1024": _sd3,
    "flux-1024": _flux,
    "pixart-1024": _pixart,
    "wan-video": _wan,
    "flux2-512": _flux2,
    "zimage-512": _zimage,
    "wan22-video": _wan22,
    "hunyuan-video": _hunyuan,
    "smoke": _smoke,
}
DEFAULT_MODELS = (
    "sd15-512",
    "sd15-768",
    "sdxl-1024",
    "sd3-1024",
    "flux-1024",
    "pixart-1024",
    "wan-video",
    "flux2-512",
    "zimage-512",
    "wan22-video",
    "hunyuan-video",
)

"""The DiT families this pack merges, told apart by their diffusion model's class, and what their layouts differ in:
block keys in forward order, which share one attention with the text, which add to their input in place, which
take reference-image tokens after the image, which have no block replace point (object-patched blocks), and the
sub-layers a family merges on their own. ``dit.py`` merges the blocks; this module only describes the families.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .config import Method

if TYPE_CHECKING:
    from .config import MergeConfig


def spatial_patch(diffusion_model: torch.nn.Module) -> tuple[int, int, int]:
    """(t, h, w) patch size of a DiT's image tokens."""
    patch = diffusion_model.patch_size
    if isinstance(patch, int):
        return 1, patch, patch
    return tuple(patch) if len(patch) == 3 else (1, *patch)


# diffusion-model class (module and name: AuraFlow's class is also called MMDiT) -> adapter family
DIT_CLASSES = {
    "comfy.ldm.modules.diffusionmodules.mmdit.OpenAISignatureMMDITWrapper": "sd3",
    "comfy.ldm.modules.diffusionmodules.mmdit.MMDiT": "sd3",
    "comfy.ldm.flux.model.Flux": "flux",
    "comfy.ldm.chroma.model.Chroma": "flux",
    "comfy.ldm.qwen_image.model.QwenImageTransformer2DModel": "qwen",
    "comfy.ldm.pixart.pixartms.PixArtMS": "pixart",
    "comfy.ldm.lumina.model.NextDiT": "lumina",
    "comfy.ldm.wan.model.WanModel": "wan",
    "comfy.ldm.hunyuan_video.model.HunyuanVideo": "hunyuan",  # HunyuanVideo 1.0 / 1.5, HunyuanImage 2.1
}
# text and image tokens share one attention (text first; HunyuanVideo on releases whose blocks are flipped: image
# first, see ``image_first``)
JOINT_FAMILIES = {"sd3", "flux", "qwen", "lumina", "hunyuan"}
BLOCK_MODULES = {"pixart": "blocks", "lumina": "layers"}  # families without a replace point: object-patched blocks
PIXART_SUBLAYERS = frozenset({"attn", "cross_attn", "mlp"})
REFERENCE_FAMILIES = {"flux", "qwen"}  # reference-image tokens trail the image tokens (Kontext, Flux 2, Qwen-Edit)
IN_PLACE_FAMILIES = {"flux", "hunyuan"}  # blocks add their update to the input in place (Flux layers: img += ...)


def ignored_attention_options(config: MergeConfig, family: str) -> list[str]:
    """The attention options ``config`` sets that ``family`` cannot take: PixArt's attention gets no
    ``transformer_options`` (UNets are not covered yet), and a prompt factor cancels in cross-attention
    (Wan, PixArt: the prompt is the only thing such a softmax sees)."""
    names = []
    if config.proportional_attention and family in ("unet", "pixart"):
        names.append("proportional_attention")
    names += [
        name
        for name in ("prompt_scale_structure", "prompt_scale_detail")
        if getattr(config, name) != 1.0 and family not in JOINT_FAMILIES
    ]
    return names


def dit_family(diffusion_model: torch.nn.Module) -> str | None:
    """Which adapter handles this diffusion model, by its class."""
    cls = type(diffusion_model)
    return DIT_CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")


def block_keys(diffusion_model: torch.nn.Module, family: str) -> list[tuple[str, int]]:
    """Every block of the model in forward order, as ``patches_replace`` keys (PixArt: ("block", i))."""
    if family in ("flux", "hunyuan"):
        return [("double_block", i) for i in range(len(diffusion_model.double_blocks))] + [
            ("single_block", i) for i in range(len(diffusion_model.single_blocks))
        ]
    if family == "sd3":
        return [("double_block", i) for i in range(len(diffusion_model.joint_blocks))]
    if family == "wan":
        return [("double_block", i) for i in range(len(diffusion_model.blocks))]
    if family == "qwen":
        return [("double_block", i) for i in range(len(diffusion_model.transformer_blocks))]
    return [("block", i) for i in range(len(getattr(diffusion_model, BLOCK_MODULES[family])))]


def image_first(diffusion_model: torch.nn.Module) -> bool:
    """Whether the blocks' joint sequence puts the image before the text: HunyuanVideo in ComfyUI releases whose
    double blocks are ``flipped_img_txt`` (0.3.x: attention, RoPE table and mask over [image, text], single blocks
    over cat(image, text)); newer releases put the text first, as Flux does."""
    blocks = getattr(diffusion_model, "double_blocks", None) or ()
    return any(getattr(block, "flipped_img_txt", False) for block in blocks)


def selected_blocks(keys: list[tuple[str, int]], block_range: tuple[float, float]) -> list[tuple[str, int]]:
    """The blocks whose position i (of n) satisfies start <= i / n < end (IBTM merges PixArt's middle half)."""
    start, end = block_range
    return [key for i, key in enumerate(keys) if start <= i / len(keys) < end]


def merged_sublayer_names(family: str, config: MergeConfig) -> frozenset[str]:
    """The sub-layers a patch on ``family`` can merge on their own (the rest of its blocks merge as a whole)."""
    if family == "pixart":
        return (
            PIXART_SUBLAYERS if config.method is Method.SDTM or config.merge_ff else frozenset({"attn", "cross_attn"})
        )
    return frozenset({"mlp"}) if config.method is Method.SDTM and config.detail_mlp_only else frozenset()

"""The example workflows on stand-ins, for the tests and screenshots: every model file swapped for a tiny random
stand-in that ComfyUI's loaders accept (``devkit/standin_files.py``), latents and reference images shrunk, and
samplers cut to a few steps. :data:`STANDINS` documents each substitution."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from devkit.example_workflows import load_example
from devkit.workflow_api import ui_to_api

STANDIN_CLIP = "tokenmerge_random_clip_l.safetensors"
TAESD_4CH, TAESD_16CH = "tokenmerge_tiny_taesd_4ch.safetensors", "tokenmerge_tiny_taesd_16ch.safetensors"


@dataclass(frozen=True)
class Standin:
    unet: str  # a diffusion model file of STANDIN_FILES
    clip_type: str  # CLIPLoader type that gives the stand-in its text width from the random CLIP-L
    vae: str
    side: int = 64  # latent images are shrunk to this many pixels per side
    note: str = ""


# The model file each example names -> the stand-in that replaces it in tests. Where ComfyUI detects a family
# only at its full size, the workflow's graph runs on the nearest stand-in that loads, and the family's own
# blocks are covered in-process by tests/test_unet_merging.py and tests/test_dit_merging.py.
STANDINS: dict[str, Standin] = {
    "v1-5-pruned-emaonly.safetensors": Standin("tokenmerge_tiny_sd15.safetensors", "stable_diffusion", TAESD_4CH),
    "sd_xl_base_1.0.safetensors": Standin(
        "tokenmerge_tiny_sd15.safetensors",
        "stable_diffusion",
        TAESD_4CH,
        note="ComfyUI recognises an SDXL UNet only at full size (2.6 B parameters) and SDXL's CLIP-G is fixed "
        "at 700 M: the SD1.5 stand-in runs the graph",
    ),
    "sd3.5_medium.safetensors": Standin("tokenmerge_tiny_sd3_clip_l.safetensors", "stable_diffusion", TAESD_16CH),
    "flux1-dev.safetensors": Standin(
        "tokenmerge_tiny_sd3_clip_l.safetensors",
        "stable_diffusion",
        TAESD_16CH,
        note="ComfyUI fixes Flux at 24 heads of 128 (3072 wide, 340 M parameters per block) and T5-XXL at "
        "4.7 B: the SD3 stand-in (same 16-channel latent) runs the graph",
    ),
    "PixArt-Sigma-XL-2-1024-MS.safetensors": Standin(
        "tokenmerge_tiny_pixart_sigma.safetensors",
        "sd3",
        TAESD_4CH,
        side=512,
        note="PixArt's sin-cos position base size rounds to 0 below a 64-wide latent in ComfyUI 0.3.75",
    ),
    "wan2.1_t2v_1.3B_fp16.safetensors": Standin(
        "tokenmerge_tiny_wan21.safetensors", "sd3", "tokenmerge_tiny_wan21_vae.safetensors"
    ),
    "flux2_dev_fp8mixed.safetensors": Standin(
        "tokenmerge_tiny_sd3_clip_l.safetensors",
        "stable_diffusion",
        TAESD_16CH,
        note="ComfyUI fixes Flux 2 at 48 heads of 128 (6144 wide) and its text encoder is 24 B: the SD3 stand-in "
        "runs the graph, on a 16-channel latent instead of Flux 2's 128 channels",
    ),
    "flux1-dev-kontext_fp8_scaled.safetensors": Standin(
        "tokenmerge_tiny_sd3_clip_l.safetensors",
        "stable_diffusion",
        TAESD_16CH,
        note="Kontext is Flux at full size: the SD3 stand-in runs the graph (the reference latent reaches the "
        "conditioning, which SD3 does not read); the reference tokens are covered in-process",
    ),
    "z_image_turbo_bf16.safetensors": Standin(
        "tokenmerge_tiny_sd3_clip_l.safetensors",
        "stable_diffusion",
        TAESD_16CH,
        note="ComfyUI recognises Z-Image only at its full width (3840): the SD3 stand-in runs the graph",
    ),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": Standin(
        "tokenmerge_tiny_wan21.safetensors", "sd3", "tokenmerge_tiny_wan21_vae.safetensors"
    ),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": Standin(
        "tokenmerge_tiny_wan21.safetensors", "sd3", "tokenmerge_tiny_wan21_vae.safetensors"
    ),
}
LOADERS = ("CheckpointLoaderSimple", "UNETLoader")
TEXT_LOADERS = ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader")
EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo", "EmptyFlux2LatentImage")
# Empty latents of a family the stand-in does not share -> the stand-in's own (same inputs)
STANDIN_LATENTS = {"EmptyFlux2LatentImage": "EmptySD3LatentImage"}
TEST_STEPS = 3
TEST_FRAMES = 5


def standin_prompt(object_info: dict, name: str, *, steps: int, side: int) -> dict:
    """Example ``name`` in API format on stand-ins, its samplers at ``steps`` and its latent images at ``side``
    pixels (longer runs than the tests' default, for live views and screenshots)."""
    prompt, _ = substitute_standins(ui_to_api(load_example(name), object_info))
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = steps
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=side, height=side)
    return prompt


def substitute_standins(prompt: dict) -> tuple[dict, Standin]:
    """An API-format ``prompt`` of an example with every model file swapped for its stand-in (see ``STANDINS``),
    latents and reference images shrunk to the stand-in's side (5 frames for video) and samplers cut to
    ``TEST_STEPS`` steps."""
    prompt = copy.deepcopy(prompt)
    names = [
        n["inputs"].get("ckpt_name") or n["inputs"].get("unet_name")
        for n in prompt.values()
        if n["class_type"] in LOADERS
    ]
    standin = STANDINS[names[0]]
    clip = {"class_type": "CLIPLoader", "inputs": {"clip_name": STANDIN_CLIP, "type": standin.clip_type}}
    vae = {"class_type": "VAELoader", "inputs": {"vae_name": standin.vae}}
    unet = {"class_type": "UNETLoader", "inputs": {"unet_name": standin.unet, "weight_dtype": "default"}}
    next_id = max(int(k) for k in prompt) + 1
    relink: dict[tuple[str, int], list] = {}
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":  # MODEL, CLIP, VAE -> three loaders
            prompt[node_id] = copy.deepcopy(unet)
            for slot, loader in ((1, clip), (2, vae)):
                prompt[str(next_id)] = copy.deepcopy(loader)
                relink[node_id, slot] = [str(next_id), 0]
                next_id += 1
        elif kind == "UNETLoader":
            prompt[node_id] = copy.deepcopy(unet)
        elif kind in TEXT_LOADERS:
            prompt[node_id] = copy.deepcopy(clip)
        elif kind == "VAELoader":
            prompt[node_id] = copy.deepcopy(vae)
        elif kind in EMPTY_LATENTS:
            node["class_type"] = STANDIN_LATENTS.get(kind, kind)
            inputs.update(width=standin.side, height=standin.side)
            if "length" in inputs:
                inputs["length"] = TEST_FRAMES
        elif kind == "KSampler":
            inputs["steps"] = TEST_STEPS
        elif kind == "KSamplerAdvanced":  # the same share of the steps: 0-10 and 10-end of 20 -> 0-1 and 1-end of 3
            steps = inputs["steps"]
            for name in ("start_at_step", "end_at_step"):
                inputs[name] = min(inputs[name], steps) * TEST_STEPS // steps
            inputs["steps"] = TEST_STEPS
        elif kind == "FluxKontextImageScale":  # scales to about 1 megapixel: to the stand-in's side instead
            prompt[node_id] = {
                "class_type": "ImageScale",
                "inputs": {
                    "image": inputs["image"],
                    "upscale_method": "bilinear",
                    "width": standin.side,
                    "height": standin.side,
                    "crop": "center",
                },
            }
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and (str(value[0]), value[1]) in relink:
                node["inputs"][name] = relink[str(value[0]), value[1]]
    return prompt, standin

"""The example workflows of the image DiTs (``example_workflows.py`` lists them): SD3.5, Flux dev, PixArt Sigma,
Flux 2 dev, Flux Kontext editing and Z-Image Turbo."""

from __future__ import annotations

from devkit.workflow_graph import BROWN, SINGLE_COLUMNS, Graph, prompt_group, sample_group


def sd3_sdtm() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        210,
        (
            "Token Merge (SDTM) on SD3/3.5: ratio 0.4 (the run starts at 0.6 and ends at 0.2), structure stage for "
            "the first 40 % of the steps, every third step in full. The README's CPU benchmark at 1024x1024: 1.30x "
            "per step. "
            "sd3.5_medium.safetensors is gated: accept its licence on Hugging Face before downloading it."
        ),
    )
    g.group("Models and merging")
    ckpt = g.add("CheckpointLoaderSimple", 0, ckpt_name="sd3.5_medium.safetensors")
    clip = g.add(
        "TripleCLIPLoader",
        0,
        clip_name1="clip_l.safetensors",
        clip_name2="clip_g.safetensors",
        clip_name3="t5xxl_fp16.safetensors",
    )
    merged = g.add("TokenMergeSDTM", 0, model=(ckpt, 0), ratio=0.4)
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptySD3LatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        prompt="a glass terrarium with a tiny mossy island, macro photograph, soft light",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        (ckpt, 2),
        steps=40,
        cfg=4.5,
        sampler="euler",
        scheduler="sgm_uniform",
        prefix="tokenmerge_sd3_sdtm",
    )
    return g


def flux_sdtm() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        210,
        (
            "Flux-dev runs at cfg 1 (guidance is distilled in), so there is no uncond pass: SDTM needs none. "
            "Token Merge (Importance) also works here: at cfg 1 it falls back to the change of each token's x0 "
            "prediction between steps. SDTM ratio 0.4; the README's CPU benchmark at 1024x1024: 1.25x per step."
        ),
    )
    g.group("Models and merging")
    unet = g.add("UNETLoader", 0, unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.add(
        "DualCLIPLoader",
        0,
        clip_name1="clip_l.safetensors",
        clip_name2="t5xxl_fp16.safetensors",
        type="flux",
        device="default",
    )
    vae = g.add("VAELoader", 0, vae_name="ae.safetensors")
    merged = g.add("TokenMergeSDTM", 0, model=unet, ratio=0.4)
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptySD3LatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        negative="",
        guidance=3.5,
        prompt="a cozy reading nook by a rainy window, warm lamp light, film photograph",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        vae,
        steps=20,
        cfg=1.0,
        sampler="euler",
        scheduler="simple",
        prefix="tokenmerge_flux_sdtm",
    )
    return g


def pixart_ibtm() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        250,
        (
            "Token Merge (Importance) on PixArt-alpha/Sigma: ratio 0.5 on the middle half of the blocks "
            "(block_start 0.25, block_end 0.75 on the Advanced node); it merges the self- and cross-attention queries "
            "and leaves the MLP on every token, as the IBTM authors do. The model file is the transformer of "
            "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS (diffusion_pytorch_model.safetensors): save it as "
            "PixArt-Sigma-XL-2-1024-MS.safetensors in models/diffusion_models."
        ),
    )
    g.group("Models and merging")
    unet = g.add("UNETLoader", 0, unet_name="PixArt-Sigma-XL-2-1024-MS.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", 0, clip_name="t5xxl_fp16.safetensors", type="pixart", device="default")
    vae = g.add("VAELoader", 0, vae_name="sdxl_vae.safetensors")
    merged = g.add("TokenMergeImportance", 0, model=unet, ratio=0.5)
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptyLatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        prompt="an origami crane on a wooden desk, paper texture, studio light",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        vae,
        steps=20,
        cfg=4.5,
        sampler="euler",
        scheduler="normal",
        prefix="tokenmerge_pixart_ibtm",
    )
    return g


def flux2_sdtm() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        250,
        (
            "Flux 2 dev runs at cfg 1 with its guidance embedding (FluxGuidance 4), so there is no uncond pass: SDTM "
            "ratio 0.4, as on Flux. It merges the generated image tokens of every double and single block; the text "
            "tokens, and the tokens of reference images (ReferenceLatent, for editing), pass through untouched."
        ),
    )
    g.group("Models and merging")
    unet = g.add("UNETLoader", 0, unet_name="flux2_dev_fp8mixed.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", 0, clip_name="mistral_3_small_flux2_fp8.safetensors", type="flux2", device="default")
    vae = g.add("VAELoader", 0, vae_name="flux2-vae.safetensors")
    merged = g.add("TokenMergeSDTM", 0, model=unet, ratio=0.4)
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptyFlux2LatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        negative="",
        guidance=4.0,
        prompt="a ceramic teapot shaped like a snail on a sunlit windowsill, product photograph",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        vae,
        steps=20,
        cfg=1.0,
        sampler="euler",
        scheduler="simple",
        prefix="tokenmerge_flux2_sdtm",
    )
    return g


KONTEXT_COLUMNS = (270, 260, 290, 260, 300)


def kontext_editing() -> Graph:
    g = Graph(KONTEXT_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        270,
        (
            "Flux Kontext edits the image you load (LoadImage; example.png ships with ComfyUI): ReferenceLatent hands "
            "it to the model, which appends its tokens after the generated ones. SDTM ratio 0.4 merges only the "
            "generated image tokens; the reference tokens and the text pass through untouched, with their positions. "
            "Kontext runs at cfg 1 with FluxGuidance 2.5. The same holds for Flux 2 and QwenImage-Edit references."
        ),
    )
    g.group("Models and merging")
    unet = g.add("UNETLoader", 0, unet_name="flux1-dev-kontext_fp8_scaled.safetensors", weight_dtype="default")
    clip = g.add(
        "DualCLIPLoader",
        0,
        clip_name1="clip_l.safetensors",
        clip_name2="t5xxl_fp16.safetensors",
        type="flux",
        device="default",
    )
    vae = g.add("VAELoader", 0, vae_name="ae.safetensors")
    merged = g.add("TokenMergeSDTM", 0, model=unet, ratio=0.4)
    g.group("Image to edit", BROWN)
    image = g.add("LoadImage", 1, image="example.png")
    scaled = g.add("FluxKontextImageScale", 1, image=image)
    encoded = g.add("VAEEncode", 1, pixels=scaled, vae=vae)
    g.group("Instruction")
    instruction = g.add(
        "CLIPTextEncode", 2, "Instruction", 120, clip=clip, text="make it a watercolor painting, keep the composition"
    )
    referenced = g.add("ReferenceLatent", 2, conditioning=instruction, latent=encoded)
    positive = g.add("FluxGuidance", 2, conditioning=referenced, guidance=2.5)
    negative = g.add("CLIPTextEncode", 2, "Negative (unused)", 100, clip=clip, text="")
    sample_group(
        g,
        merged,
        positive,
        negative,
        encoded,
        vae,
        steps=20,
        cfg=1.0,
        sampler="euler",
        scheduler="simple",
        prefix="tokenmerge_kontext_sdtm",
        column=3,
    )
    return g


def zimage_sdtm() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        250,
        (
            "Z-Image Turbo samples in 8 steps at cfg 1 (no uncond pass): SDTM ratio 0.4 merges the image tokens of "
            "its main layers (the caption and its pad tokens pass untouched; the refiner layers before them run in "
            "full). Every third step, the first included, runs in full (3 of 8), so the saving per image is smaller "
            "than per merged step."
        ),
    )
    g.group("Models and merging")
    unet = g.add("UNETLoader", 0, unet_name="z_image_turbo_bf16.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", 0, clip_name="qwen_3_4b.safetensors", type="lumina2", device="default")
    vae = g.add("VAELoader", 0, vae_name="ae.safetensors")
    shifted = g.add("ModelSamplingAuraFlow", 0, model=unet, shift=3.0)
    merged = g.add("TokenMergeSDTM", 0, model=shifted, ratio=0.4)
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptySD3LatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        negative="",
        prompt="a street market at dusk with paper lanterns, candid photograph",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        vae,
        steps=8,
        cfg=1.0,
        sampler="res_multistep",
        scheduler="simple",
        prefix="tokenmerge_zimage_sdtm",
    )
    return g

"""The example workflows of the video models (``example_workflows.py`` lists them): Wan 2.1 and Wan 2.2's two
14B experts."""

from __future__ import annotations

from devkit.workflow_graph import GREEN, MIN_HEIGHT, PURPLE, SINGLE_COLUMNS, Graph, prompt_group, sample_group


def wan_video() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        250,
        (
            "Token Merge (Importance) on Wan 2.1, and on the Wan 2.2 14B models (one node on each expert's model): "
            "ratio 0.5. Tokens merge within each latent frame, so every frame keeps its token count; on the Wan 2.2 5B "
            "TI2V model each frame also keeps its own timestep's modulation. The heatmap preview shows a video's map "
            "averaged over its frames. The README's CPU benchmark (Wan 2.1 1.3B, 512x320, 17 frames): 1.38x per step."
        ),
    )
    g.group("Models and merging")
    unet = g.add("UNETLoader", 0, unet_name="wan2.1_t2v_1.3B_fp16.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", 0, clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")
    vae = g.add("VAELoader", 0, vae_name="wan_2.1_vae.safetensors")
    shifted = g.add("ModelSamplingSD3", 0, model=unet, shift=8.0)
    merged = g.add("TokenMergeImportance", 0, model=shifted, ratio=0.5)
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptyHunyuanLatentVideo",
        width=832,
        height=480,
        length=33,
        batch_size=1,
        prompt="a paper boat drifting down a rain gutter, slow motion, shallow depth of field",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        vae,
        steps=30,
        cfg=6.0,
        sampler="uni_pc",
        scheduler="simple",
        prefix="tokenmerge_wan_ibtm",
        save="SaveAnimatedWEBP",
        fps=16.0,
        lossless=False,
        quality=85,
        method="default",
    )
    return g


WAN22_COLUMNS = (270, 290, 300, 300)


def wan22_experts() -> Graph:
    g = Graph(WAN22_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        250,
        (
            "Wan 2.2 14B samples with two experts: the high-noise model for the first half of the steps, the low-noise "
            "model for the rest (two KSamplerAdvanced). Put a Token Merge node on each expert's model: IBTM ratio 0.5 "
            "on both. Each node keeps its own state: on the low-noise expert's first step, before it has an importance "
            "map of its own, tokens merge by similarity alone (as spatial ToMe). Tokens merge within each latent "
            "frame."
        ),
    )
    g.group("Models and merging")
    high = g.add(
        "UNETLoader",
        0,
        "High-noise expert",
        unet_name="wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        weight_dtype="default",
    )
    low = g.add(
        "UNETLoader",
        0,
        "Low-noise expert",
        unet_name="wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        weight_dtype="default",
    )
    clip = g.add("CLIPLoader", 0, clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")
    vae = g.add("VAELoader", 0, vae_name="wan_2.1_vae.safetensors")
    g.group("Merging on each expert", PURPLE)
    merged_high = g.add(
        "TokenMergeImportance",
        1,
        "Token Merge (high-noise)",
        model=g.add("ModelSamplingSD3", 1, model=high, shift=8.0),
        ratio=0.5,
    )
    merged_low = g.add(
        "TokenMergeImportance",
        1,
        "Token Merge (low-noise)",
        model=g.add("ModelSamplingSD3", 1, model=low, shift=8.0),
        ratio=0.5,
    )
    positive, negative, latent = prompt_group(
        g,
        clip,
        "EmptyHunyuanLatentVideo",
        width=832,
        height=480,
        length=33,
        batch_size=1,
        prompt="a kite surfer jumping over a wave at sunset, drone shot",
    )
    g.group("Sample and save", GREEN)
    common = {
        "positive": positive,
        "negative": negative,
        "steps": 20,
        "cfg": 3.5,
        "sampler_name": "euler",
        "scheduler": "simple",
    }
    first = g.add(
        "KSamplerAdvanced",
        2,
        "High-noise expert",
        model=merged_high,
        latent_image=latent,
        add_noise="enable",
        noise_seed=42,
        start_at_step=0,
        end_at_step=10,
        return_with_leftover_noise="enable",
        **common,
    )
    second = g.add(
        "KSamplerAdvanced",
        3,
        "Low-noise expert",
        model=merged_low,
        latent_image=first,
        add_noise="disable",
        noise_seed=42,
        start_at_step=10,
        end_at_step=10000,
        return_with_leftover_noise="disable",
        **common,
    )
    decoded = g.add("VAEDecode", 2, samples=second, vae=vae)
    g.add(
        "SaveAnimatedWEBP",
        3,
        None,
        max(340, MIN_HEIGHT["SaveAnimatedWEBP"]),
        images=decoded,
        filename_prefix="tokenmerge_wan22_ibtm",
        fps=16.0,
        lossless=False,
        quality=85,
        method="default",
    )
    return g


# Comparisons, by stage: notes, models and prompt | merging nodes over the importance preview | a column per method
# (sampler, decoder, saved images), so the images line up side by side.

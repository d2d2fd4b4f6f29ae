"""The example workflows of ``example_workflows/``, written from code so they stay consistent.

Each workflow is a small graph of core nodes plus the pack's nodes, with the model file names users have
(``v1-5-pruned-emaonly.safetensors``, ``flux1-dev.safetensors``, ...), where to download them (the loaders'
``properties.models``, which the graph editor offers when a file is missing) and the recommended settings in a
note. Widget order, output types and link types come from a real server's ``/object_info``, so the UI-format
files are what the graph editor itself would save. Nodes sit in groups that name the stages, laid out on columns
so that no node overlaps another at any zoom (``tests/test_browser.py`` checks it in the frontends). Regenerate
with::

    .comfyui/venv/bin/python -m devkit.example_workflows

The file names are what the template browser shows (Workflow > Browse Templates > Extensions > tokenmerge): it
takes a custom node pack's title, description and thumbnail from the file name alone, so the names are readable
and numbered with two digits, the demo first (the browser's A-Z order). The graph and its layout are
``workflow_graph.py``; tests run every workflow on stand-ins (``example_standins.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devkit import REPO_ROOT
from devkit.examples_image_dits import flux2_sdtm, flux_sdtm, kontext_editing, pixart_ibtm, sd3_sdtm, zimage_sdtm
from devkit.examples_video import wan22_experts, wan_video
from devkit.workflow_graph import (
    BROWN,
    GREEN,
    NEGATIVE,
    PALE_BLUE,
    PURPLE,
    SINGLE_COLUMNS,
    YELLOW,
    Graph,
    Node,
    prompt_group,
    sample_group,
)

EXAMPLES_DIR = REPO_ROOT / "example_workflows"

DEMO = "01 Demo on the shapes model"
SD15_PREVIEW = "02 SD1.5, IBTM with preview"
COMPARISON = "03 SD1.5, ToMe vs IBTM"
SDXL = "04 SDXL, IBTM"
SD3 = "05 SD3.5, SDTM"
FLUX = "06 Flux dev, SDTM at cfg 1"
PIXART = "07 PixArt Sigma, IBTM"
WAN = "08 Wan 2.1 video, IBTM"
FLUX2 = "09 Flux 2 dev, SDTM at cfg 1"
KONTEXT = "10 Flux Kontext image editing, SDTM"
ZIMAGE = "11 Z-Image Turbo, SDTM"
WAN22 = "12 Wan 2.2 14B video, two experts, IBTM"

# The importance previews show two steps of a 20-step run over the first image, early and last: two 192-pixel tiles
# side by side with their labels and the colour bar, 388 x 228 px, drawn at about 0.83 of its size in a 330-pixel
# column (the frontends' image area: the node's width less 8 px, at least 224 px high), its labels still readable.
# Four steps (a 2 x 2 grid) would make the demo too tall for the editor to draw its text when fitted to a 1600x900
# window.
PREVIEW_STEPS = "5,20"
PREVIEW_WIDTH = 330


def sd15_preview() -> Graph:
    g = Graph((*SINGLE_COLUMNS[:3], PREVIEW_WIDTH))  # the preview's column as wide as the comparisons' preview
    g.note(
        0,
        "Recommended settings",
        230,
        (
            "Token Merge (Importance) on SD1.5: ratio 0.5 (0.3 cautious, 0.7 for drafts). It merges the "
            "full-resolution level, and the gain grows with the image: the README's CPU benchmark measured 1.16x per "
            "step at 512x512 and 1.35x at 768x768. The preview shows the CFG importance of each step live while "
            "sampling runs, then of two steps over the first image: bright = prompt-relevant, merged last. Set "
            "view to 'merge assignment' to see which tokens one block kept, merged or used as destinations."
        ),
    )
    g.group("Model and merging")
    ckpt = g.add("CheckpointLoaderSimple", 0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    merged = g.add("TokenMergeImportance", 0, model=(ckpt, 0), ratio=0.5)
    positive, negative, latent = prompt_group(
        g,
        (ckpt, 1),
        "EmptyLatentImage",
        width=512,
        height=512,
        batch_size=1,
        prompt="a red fox sitting in a snowy forest, detailed fur, golden hour",
    )
    decoded = sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        (ckpt, 2),
        steps=20,
        cfg=7.0,
        sampler="euler",
        scheduler="normal",
        prefix="tokenmerge_sd15_ibtm",
    )
    g.group("Importance preview", YELLOW)
    g.add(
        "TokenMergeHeatmapPreview",
        3,
        model=merged,
        images=decoded,
        steps=PREVIEW_STEPS,
        colormap="inferno",
        overlay_alpha=0.6,
        view="importance",
        block=0,
    )
    return g


def sdxl() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        170,
        (
            "Token Merge (Importance) on SDXL: ratio 0.5 at 1024x1024. max_downsample 'auto' merges at the first "
            "level with attention (2x down: SDXL has none at full resolution). The README's CPU benchmark: 1.12x "
            "per step, 1.23x with merge_cross_attention and merge_feed_forward on (Advanced node)."
        ),
    )
    g.group("Model and merging")
    ckpt = g.add("CheckpointLoaderSimple", 0, ckpt_name="sd_xl_base_1.0.safetensors")
    merged = g.add("TokenMergeImportance", 0, model=(ckpt, 0), ratio=0.5)
    positive, negative, latent = prompt_group(
        g,
        (ckpt, 1),
        "EmptyLatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        prompt="a lighthouse on a cliff above a stormy sea, dramatic sky, photograph",
    )
    sample_group(
        g,
        merged,
        positive,
        negative,
        latent,
        (ckpt, 2),
        steps=25,
        cfg=7.0,
        sampler="dpmpp_2m",
        scheduler="karras",
        prefix="tokenmerge_sdxl_ibtm",
    )
    return g


COMPARISON_COLUMNS = (250, PREVIEW_WIDTH, 260, 260, 260)  # the merging nodes above the preview in column 1


def _branches(
    g: Graph,
    base: Any,
    positive: Node,
    negative: Node,
    latent: Node,
    vae: Any,
    *,
    baseline: str,
    prefix: str,
    save_height: int,
    preview_steps: str,
    scheduler: str = "normal",
    **sampler: Any,
) -> None:
    """A column for the ``baseline`` (unpatched or unmerged) and one each for spatial ToMe and IBTM at ratio 0.5 (their
    nodes in a group of their own), same inputs and seed; the IBTM importance preview below the merging nodes."""
    g.group("Token merging", BROWN)
    merged = {
        "spatial_tome": g.add("TokenMergeSpatialToMe", 1, model=base, ratio=0.5),
        "ibtm": g.add("TokenMergeImportance", 1, model=base, ratio=0.5),
    }
    columns = (
        (baseline, baseline, baseline.capitalize(), PALE_BLUE, base),
        ("spatial_tome", "spatial ToMe", "Spatial ToMe", GREEN, merged["spatial_tome"]),
        ("ibtm", "IBTM", "IBTM", PURPLE, merged["ibtm"]),
    )
    for column, (label, name, title, color, model) in enumerate(columns, start=2):
        g.group(title, color)
        sampled = g.add(
            "KSampler",
            column,
            f"KSampler ({name})",
            model=model,
            positive=positive,
            negative=negative,
            latent_image=latent,
            **sampler,
            scheduler=scheduler,
            denoise=1.0,
        )
        decoded = g.add("VAEDecode", column, samples=sampled, vae=vae)
        g.add("SaveImage", column, f"Save ({name})", save_height, images=decoded, filename_prefix=f"{prefix}{label}")
    g.group("Importance preview", PURPLE)
    g.add(
        "TokenMergeHeatmapPreview",
        1,
        model=merged["ibtm"],
        images=decoded,
        steps=preview_steps,
        colormap="inferno",
        overlay_alpha=0.6,
        view="importance",
        block=0,
    )


def comparison() -> Graph:
    g = Graph(COMPARISON_COLUMNS)
    g.note(
        0,
        "How to compare",
        210,
        (
            "Same seed, same prompt: unpatched, spatial ToMe and IBTM at ratio 0.5. Spatial ToMe merges each token "
            "into a random destination in its 2x2 window; IBTM merges the tokens that classifier-free guidance marks "
            "as unimportant first and protects the important ones (the preview shows the map). Compare each merged "
            "image with the unpatched one."
        ),
    )
    g.group("Model and prompt")
    ckpt = g.add("CheckpointLoaderSimple", 0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    positive = g.add(
        "CLIPTextEncode",
        0,
        "Positive",
        110,
        clip=(ckpt, 1),
        text="a bowl of ramen with a soft-boiled egg, steam, overhead photograph",
    )
    negative = g.add("CLIPTextEncode", 0, "Negative", 90, clip=(ckpt, 1), text=NEGATIVE)
    latent = g.add("EmptyLatentImage", 0, width=512, height=512, batch_size=1)
    _branches(
        g,
        (ckpt, 0),
        positive,
        negative,
        latent,
        (ckpt, 2),
        baseline="unpatched",
        prefix="tokenmerge_compare_",
        save_height=300,
        preview_steps="last",
        seed=42,
        steps=20,
        cfg=7.0,
        sampler_name="euler",
    )
    return g


SHAPES_PROMPT = "a large red circle at top left and a small blue square at bottom right on a striped background"


def shapes_demo() -> Graph:
    """The demo (``make demo``): the trained 256x256 shapes DiT (SD3 family) unmerged, with spatial ToMe and with IBTM,
    same seed. The DiT, not the UNet: it is the shapes model that draws the prompted objects; the 256 px one, not the
    128 px one: with 256 image tokens a block merging saves time even on a CPU (devkit/shapes_training/README.md)."""
    g = Graph(COMPARISON_COLUMNS)
    g.note(
        0,
        "About this demo",
        250,
        (
            "Runs as is on the pack's trained shapes models, in demo_models/ of its git repository (registry installs "
            "leave them out): copy tokenmerge_shapes_sd3_256.safetensors to models/diffusion_models and "
            "tokenmerge_shapes_taesd3.safetensors to models/vae. Same seed and prompt: unmerged, spatial ToMe and "
            "IBTM at ratio 0.5; the preview shows where guidance puts the importance.\n"
            "This DiT has 16x16 = 256 image tokens a block (a real model at 1024x1024: 4096): merging saves time even "
            "here. The nodes merge its 2nd and 3rd blocks (README, Speed)."
        ),
    )
    g.group("Models and prompt")
    unet = g.add("UNETLoader", 0, unet_name="tokenmerge_shapes_sd3_256.safetensors", weight_dtype="default")
    vae = g.add("VAELoader", 0, vae_name="tokenmerge_shapes_taesd3.safetensors")
    positive = g.add("TokenMergeDemoPrompt", 0, "Positive", 100, text=SHAPES_PROMPT)
    negative = g.add("TokenMergeDemoPrompt", 0, "Negative (empty)", 90, text="")
    latent = g.add("EmptySD3LatentImage", 0, width=256, height=256, batch_size=4)
    _branches(
        g,
        unet,
        positive,
        negative,
        latent,
        vae,
        baseline="unmerged",
        prefix="tokenmerge_demo_",
        save_height=300,
        preview_steps=PREVIEW_STEPS,
        seed=7,
        steps=20,
        cfg=3.0,
        sampler_name="dpmpp_2m",
        scheduler="simple",
    )
    return g


DEMOS = {DEMO: shapes_demo}


EXAMPLES = {
    SD15_PREVIEW: sd15_preview,
    COMPARISON: comparison,
    SDXL: sdxl,
    SD3: sd3_sdtm,
    FLUX: flux_sdtm,
    PIXART: pixart_ibtm,
    WAN: wan_video,
    FLUX2: flux2_sdtm,
    KONTEXT: kontext_editing,
    ZIMAGE: zimage_sdtm,
    WAN22: wan22_experts,
}


def load_example(name: str) -> dict:
    """The committed UI-format workflow ``example_workflows/<name>.json``."""
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


def write_examples(object_info: dict, out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    written = []
    for name, build in {**EXAMPLES, **DEMOS}.items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(build().ui(object_info), indent=1) + "\n")
        written.append(path)
    return written


def main() -> None:
    import tempfile

    from devkit import comfy_env, standin_files
    from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer

    comfy_env.bootstrap_comfyui()
    standin_files.write_standin_models(str(STANDIN_MODELS_DIR))
    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server:
        for path in write_examples(server.object_info()):
            print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

"""The example workflows of ``example_workflows/``, written from code so they stay consistent.

Each workflow is a small graph of core nodes plus the pack's nodes, with the model file names users have
(``v1-5-pruned-emaonly.safetensors``, ``flux1-dev.safetensors``, ...) and the recommended settings in a
note. Widget order, output types and link types come from a real server's ``/object_info``, so the UI-format
files are what the graph editor itself would save. Regenerate with::

    .comfyui/venv/bin/python -m devkit.example_workflows

Tests run every workflow on stand-ins: see :data:`STANDINS` and :func:`substitute_standins`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit import REPO_ROOT
from devkit.workflow_api import ui_to_api

EXAMPLES_DIR = REPO_ROOT / "example_workflows"
COLUMN_WIDTH = 360
ROW_GAP = 40


@dataclass
class Node:
    id: int
    type: str
    widgets: dict[str, Any]
    links: dict[str, tuple[Node, int]]
    column: int
    size: tuple[int, int]
    title: str | None = None


@dataclass
class Graph:
    """A workflow under construction: ``add`` nodes, then ``ui(object_info)`` gives the UI-format dict."""

    notes: list[str] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    def add(self, kind: str, column: int, title: str | None = None, size: tuple[int, int] = (320, 120),
            **inputs: Any) -> Node:
        """A node; ``inputs`` are widget values, or ``(node, slot)`` / ``node`` (slot 0) links."""
        links, widgets = {}, {}
        for name, value in inputs.items():
            if isinstance(value, Node):
                links[name] = (value, 0)
            elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                links[name] = value
            else:
                widgets[name] = value
        node = Node(len(self.nodes) + 1, kind, widgets, links, column, size, title)
        self.nodes.append(node)
        return node

    def ui(self, object_info: dict) -> dict:
        rows: dict[int, int] = {}
        link_rows, ui_nodes = [], []
        outputs: dict[tuple[int, int], list[int]] = {}
        for node in self.nodes:  # links first, so every output knows its link ids
            for name, (source, slot) in node.links.items():
                kind = object_info[source.type]["output"][slot]
                link_rows.append([len(link_rows) + 1, source.id, slot, node.id, name, kind])
                outputs.setdefault((source.id, slot), []).append(len(link_rows))
        for order, node in enumerate(self.nodes):
            top = rows.get(node.column, 40)
            rows[node.column] = top + node.size[1] + ROW_GAP
            entry: dict[str, Any] = {
                "id": node.id, "type": node.type, "pos": [40 + node.column * COLUMN_WIDTH, top],
                "size": list(node.size), "flags": {}, "order": order, "mode": 0,
                "properties": {"Node name for S&R": node.type},
            }
            if node.title:
                entry["title"] = node.title
            if node.type == "Note":
                entry.update(inputs=[], outputs=[], widgets_values=[node.widgets["text"]],
                             color="#432", bgcolor="#653")
                ui_nodes.append(entry)
                continue
            info = object_info[node.type]
            entry["inputs"] = []
            for name, (source, slot) in node.links.items():
                link_id = next(row[0] for row in link_rows if row[3] == node.id and row[4] == name)
                entry["inputs"].append({"name": name, "type": object_info[source.type]["output"][slot],
                                        "link": link_id})
            entry["outputs"] = [{"name": name, "type": kind, "links": outputs.get((node.id, slot), []),
                                 "slot_index": slot}
                                for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"],
                                                                        strict=True))]
            entry["widgets_values"] = widget_values(info, node.widgets)
            ui_nodes.append(entry)
        # UI links are [id, origin, origin_slot, target, target_slot, type]; target slots index the inputs list.
        for row in link_rows:
            target = next(n for n in ui_nodes if n["id"] == row[3])
            row[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["link"] == row[0])
        return {"last_node_id": len(self.nodes), "last_link_id": len(link_rows), "nodes": ui_nodes,
                "links": link_rows, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


def widget_values(info: dict, widgets: dict[str, Any]) -> list:
    """``widgets_values`` in the node's input order; a seed is followed by its "fixed" control value."""
    spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info.get("input_order", {})
    names = [*order.get("required", spec), *order.get("optional", [])]
    values = []
    for name in names:
        kind, options = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
        if not (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")):
            continue
        if options.get("forceInput"):
            continue
        default = options.get("default", kind[0] if isinstance(kind, list) and kind else None)
        values.append(widgets.pop(name, default))
        if kind == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
            values.append("fixed")
    if widgets:
        raise ValueError(f"{info['name']} has no widget inputs named {sorted(widgets)}")
    return values


NEGATIVE = "blurry, low quality, deformed"


def _sample_and_save(g: Graph, model: Node, clip: Node, vae: Node, latent: Node, *, prompt: str, steps: int,
                     cfg: float, sampler: str, scheduler: str, prefix: str, column: int, negative: str = NEGATIVE,
                     guidance: float | None = None) -> tuple[Node, Node]:
    positive = g.add("CLIPTextEncode", 1, "Positive", (400, 160), clip=clip, text=prompt)
    if guidance is not None:
        positive = g.add("FluxGuidance", 1, None, (320, 60), conditioning=positive, guidance=guidance)
    negative_node = g.add("CLIPTextEncode", 1, "Negative", (400, 120), clip=clip, text=negative)
    sampler_node = g.add("KSampler", column, None, (320, 270), model=model, positive=positive,
                         negative=negative_node, latent_image=latent, seed=42, steps=steps, cfg=cfg,
                         sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    decoded = g.add("VAEDecode", column, None, (220, 50), samples=sampler_node, vae=vae)
    g.add("SaveImage", column + 1, None, (400, 420), images=decoded, filename_prefix=prefix)
    return sampler_node, decoded


def sd15_preview() -> Graph:
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", 0, None, (320, 100), ckpt_name="v1-5-pruned-emaonly.safetensors")
    merged = g.add("TokenMergeImportance", 0, None, (320, 60), model=(ckpt, 0), ratio=0.5)
    latent = g.add("EmptyLatentImage", 0, None, (320, 110), width=512, height=512, batch_size=1)
    _, decoded = _sample_and_save(g, merged, (ckpt, 1), (ckpt, 2), latent, steps=20, cfg=7.0, sampler="euler",
                                  scheduler="normal", prefix="tokenmerge_sd15_ibtm", column=2,
                                  prompt="a red fox sitting in a snowy forest, detailed fur, golden hour")
    g.add("TokenMergeHeatmapPreview", 3, None, (400, 460), model=merged, images=decoded, steps="all",
          colormap="inferno", overlay_alpha=0.6, view="importance", block=0)
    g.add("Note", 0, "Recommended settings", (320, 200), text=(
        "Token Merge (Importance) on SD1.5: ratio 0.5 at 512x512 (0.6 at 768x768). The preview shows the CFG "
        "importance of every step, live while sampling runs: bright = prompt-relevant, merged last. "
        "Set view to 'merge assignment' to see which tokens one block kept, merged or used as destinations."))
    return g


def sdxl() -> Graph:
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", 0, None, (320, 100), ckpt_name="sd_xl_base_1.0.safetensors")
    merged = g.add("TokenMergeImportance", 0, None, (320, 60), model=(ckpt, 0), ratio=0.5)
    latent = g.add("EmptyLatentImage", 0, None, (320, 110), width=1024, height=1024, batch_size=1)
    _sample_and_save(g, merged, (ckpt, 1), (ckpt, 2), latent, steps=25, cfg=7.0, sampler="dpmpp_2m",
                     scheduler="karras", prefix="tokenmerge_sdxl_ibtm", column=2,
                     prompt="a lighthouse on a cliff above a stormy sea, dramatic sky, photograph")
    g.add("Note", 0, "Recommended settings", (320, 180), text=(
        "Token Merge (Importance) on SDXL: ratio 0.5 at 1024x1024. max_downsample 'auto' merges at the first "
        "level with attention (2x down, SDXL has none at full resolution)."))
    return g


def sd3_sdtm() -> Graph:
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", 0, None, (320, 100), ckpt_name="sd3.5_medium.safetensors")
    clip = g.add("TripleCLIPLoader", 0, None, (320, 130), clip_name1="clip_l.safetensors",
                 clip_name2="clip_g.safetensors", clip_name3="t5xxl_fp16.safetensors")
    merged = g.add("TokenMergeSDTM", 0, None, (320, 60), model=(ckpt, 0), ratio=0.4)
    latent = g.add("EmptySD3LatentImage", 0, None, (320, 110), width=1024, height=1024, batch_size=1)
    _sample_and_save(g, merged, clip, (ckpt, 2), latent, steps=40, cfg=4.5, sampler="euler",
                     scheduler="sgm_uniform", prefix="tokenmerge_sd3_sdtm", column=2,
                     prompt="a glass terrarium with a tiny mossy island, macro photograph, soft light")
    g.add("Note", 0, "Recommended settings", (320, 180), text=(
        "Token Merge (SDTM) on SD3/3.5: ratio 0.4 (the run starts at 0.6 and ends at 0.2), structure stage for "
        "the first 40 % of the steps, every third step in full. Expect about 1.3x per step on CPU at 1024x1024."))
    return g


def flux_sdtm() -> Graph:
    g = Graph()
    unet = g.add("UNETLoader", 0, None, (320, 90), unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.add("DualCLIPLoader", 0, None, (320, 130), clip_name1="clip_l.safetensors",
                 clip_name2="t5xxl_fp16.safetensors", type="flux", device="default")
    vae = g.add("VAELoader", 0, None, (320, 60), vae_name="ae.safetensors")
    merged = g.add("TokenMergeSDTM", 0, None, (320, 60), model=unet, ratio=0.4)
    latent = g.add("EmptySD3LatentImage", 0, None, (320, 110), width=1024, height=1024, batch_size=1)
    _sample_and_save(g, merged, clip, vae, latent, steps=20, cfg=1.0, sampler="euler", scheduler="simple",
                     prefix="tokenmerge_flux_sdtm", column=2, negative="", guidance=3.5,
                     prompt="a cozy reading nook by a rainy window, warm lamp light, film photograph")
    g.add("Note", 0, "Recommended settings", (320, 200), text=(
        "Flux-dev runs at cfg 1 (guidance is distilled in), so there is no uncond pass: SDTM needs none. "
        "Token Merge (Importance) also works here: at cfg 1 it falls back to the change of each token's x0 "
        "prediction between steps. SDTM ratio 0.4."))
    return g


def pixart_ibtm() -> Graph:
    g = Graph()
    unet = g.add("UNETLoader", 0, None, (320, 90), unet_name="PixArt-Sigma-XL-2-1024-MS.safetensors",
                 weight_dtype="default")
    clip = g.add("CLIPLoader", 0, None, (320, 110), clip_name="t5xxl_fp16.safetensors", type="pixart",
                 device="default")
    vae = g.add("VAELoader", 0, None, (320, 60), vae_name="sdxl_vae.safetensors")
    merged = g.add("TokenMergeImportance", 0, None, (320, 60), model=unet, ratio=0.5)
    latent = g.add("EmptyLatentImage", 0, None, (320, 110), width=1024, height=1024, batch_size=1)
    _sample_and_save(g, merged, clip, vae, latent, steps=20, cfg=4.5, sampler="euler", scheduler="normal",
                     prefix="tokenmerge_pixart_ibtm", column=2,
                     prompt="an origami crane on a wooden desk, paper texture, studio light")
    g.add("Note", 0, "Recommended settings", (320, 180), text=(
        "Token Merge (Importance) on PixArt-alpha/Sigma: ratio 0.5; the preset merges the middle half of the blocks "
        "(block_start 0.25, block_end 0.75 on the Advanced node)."))
    return g


def wan_video() -> Graph:
    g = Graph()
    unet = g.add("UNETLoader", 0, None, (320, 90), unet_name="wan2.1_t2v_1.3B_fp16.safetensors",
                 weight_dtype="default")
    clip = g.add("CLIPLoader", 0, None, (320, 110), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                 type="wan", device="default")
    vae = g.add("VAELoader", 0, None, (320, 60), vae_name="wan_2.1_vae.safetensors")
    shifted = g.add("ModelSamplingSD3", 0, None, (320, 60), model=unet, shift=8.0)
    merged = g.add("TokenMergeImportance", 0, None, (320, 60), model=shifted, ratio=0.5)
    latent = g.add("EmptyHunyuanLatentVideo", 0, None, (320, 130), width=832, height=480, length=33,
                   batch_size=1)
    positive = g.add("CLIPTextEncode", 1, "Positive", (400, 160), clip=clip,
                     text="a paper boat drifting down a rain gutter, slow motion, shallow depth of field")
    negative = g.add("CLIPTextEncode", 1, "Negative", (400, 120), clip=clip, text=NEGATIVE)
    sampler = g.add("KSampler", 2, None, (320, 270), model=merged, positive=positive, negative=negative,
                    latent_image=latent, seed=42, steps=30, cfg=6.0, sampler_name="uni_pc", scheduler="simple",
                    denoise=1.0)
    decoded = g.add("VAEDecode", 2, None, (220, 50), samples=sampler, vae=vae)
    g.add("SaveAnimatedWEBP", 3, None, (400, 420), images=decoded, filename_prefix="tokenmerge_wan_ibtm",
          fps=16.0, lossless=False, quality=85, method="default")
    g.add("Note", 0, "Recommended settings", (320, 180), text=(
        "Token Merge (Importance) on Wan 2.1/2.2: ratio 0.5, tokens merge within each latent frame (the "
        "Advanced node offers spatio-temporal merging). The map of a video is shown averaged over frames."))
    return g


def _branches(g: Graph, models: dict[str, Any], positive: Node, negative: Node, latent: Node, vae: Any, *,
              prefix: str, save_height: int, scheduler: str = "normal", **sampler: Any) -> dict[str, Node]:
    """One column per model (KSampler, VAEDecode, SaveImage ``<prefix><label>``), same inputs; the decoded nodes."""
    decoded = {}
    for column, (label, model) in enumerate(models.items()):
        node = g.add("KSampler", 2 + column, f"KSampler ({label})", (320, 270), model=model, positive=positive,
                     negative=negative, latent_image=latent, **sampler, scheduler=scheduler, denoise=1.0)
        decoded[label] = g.add("VAEDecode", 2 + column, None, (220, 50), samples=node, vae=vae)
        g.add("SaveImage", 2 + column, f"Save ({label})", (320, save_height), images=decoded[label],
              filename_prefix=f"{prefix}{label}")
    return decoded


def comparison() -> Graph:
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", 0, None, (320, 100), ckpt_name="v1-5-pruned-emaonly.safetensors")
    tome = g.add("TokenMergeSpatialToMe", 0, "Spatial ToMe 0.5", (320, 230), model=(ckpt, 0), ratio=0.5)
    ibtm = g.add("TokenMergeImportance", 0, "IBTM 0.5", (320, 60), model=(ckpt, 0), ratio=0.5)
    latent = g.add("EmptyLatentImage", 0, None, (320, 110), width=512, height=512, batch_size=1)
    positive = g.add("CLIPTextEncode", 1, "Positive", (400, 160), clip=(ckpt, 1),
                     text="a bowl of ramen with a soft-boiled egg, steam, overhead photograph")
    negative = g.add("CLIPTextEncode", 1, "Negative", (400, 120), clip=(ckpt, 1), text=NEGATIVE)
    decoded = _branches(g, {"unpatched": (ckpt, 0), "spatial_tome": tome, "ibtm": ibtm}, positive, negative, latent,
                        (ckpt, 2), prefix="tokenmerge_compare_", save_height=360, seed=42, steps=20, cfg=7.0,
                        sampler_name="euler")
    g.add("TokenMergeHeatmapPreview", 5, None, (400, 460), model=ibtm, images=decoded["ibtm"], steps="last",
          colormap="inferno", overlay_alpha=0.6, view="importance", block=0)
    g.add("Note", 0, "How to compare", (320, 180), text=(
        "Same seed, same prompt: unpatched, spatial ToMe and IBTM at ratio 0.5. IBTM protects the tokens that "
        "CFG marks as important (the preview), so it should stay closer to the unpatched image than spatial "
        "ToMe at the same speed."))
    return g


SHAPES_PROMPT = "a large red circle at top left and a small blue square at bottom right on a striped background"


def shapes_demo() -> Graph:
    """The demo (``make demo``): the trained shapes DiT (SD3 family) unmerged, with spatial ToMe and with IBTM, same
    seed. The DiT, not the UNet: it is the shapes model that draws the prompted objects (devkit/shapes/README.md)."""
    g = Graph()
    unet = g.add("UNETLoader", 0, None, (320, 90), unet_name="tokenmerge_shapes_sd3.safetensors",
                 weight_dtype="default")
    vae = g.add("VAELoader", 0, None, (320, 60), vae_name="tokenmerge_shapes_taesd3.safetensors")
    tome = g.add("TokenMergeSpatialToMe", 0, "Spatial ToMe 0.5", (320, 230), model=unet, ratio=0.5)
    ibtm = g.add("TokenMergeImportance", 0, "IBTM 0.5", (320, 60), model=unet, ratio=0.5)
    latent = g.add("EmptySD3LatentImage", 0, None, (320, 110), width=128, height=128, batch_size=4)
    positive = g.add("TokenMergeDemoPrompt", 1, "Positive", (400, 160), text=SHAPES_PROMPT)
    negative = g.add("TokenMergeDemoPrompt", 1, "Negative (empty: unconditional)", (400, 100), text="")
    decoded = _branches(g, {"unmerged": unet, "spatial_tome": tome, "ibtm": ibtm}, positive, negative, latent, vae,
                        prefix="tokenmerge_demo_", save_height=300, seed=7, steps=20, cfg=3.0,
                        sampler_name="dpmpp_2m", scheduler="simple")
    g.add("TokenMergeHeatmapPreview", 5, None, (400, 460), model=ibtm, images=decoded["ibtm"], steps="1,4,8,12,16,20",
          colormap="inferno", overlay_alpha=0.6, view="importance", block=0)
    g.add("Note", 0, "About this demo", (320, 200), text=(
        "The pack's small trained shapes models (tokenmerge_shapes_*, in demo_models/ of the repository): copy them "
        "to models/diffusion_models and models/vae. This is the SD3-family DiT; the SD1.x UNet is "
        "tokenmerge_shapes_sd15 with tokenmerge_shapes_taesd and EmptyLatentImage. Same seed and prompt: unmerged, "
        "spatial ToMe and IBTM at ratio 0.5. The preview shows where CFG puts the importance: on the prompted "
        "objects."))
    return g


DEMOS = {"tokenmerge_demo_shapes": shapes_demo}


EXAMPLES = {
    "tokenmerge_sd15_ibtm_preview": sd15_preview,
    "tokenmerge_sdxl_ibtm": sdxl,
    "tokenmerge_sd3_sdtm": sd3_sdtm,
    "tokenmerge_flux_sdtm_cfg1": flux_sdtm,
    "tokenmerge_pixart_ibtm": pixart_ibtm,
    "tokenmerge_wan21_video_ibtm": wan_video,
    "tokenmerge_compare_unpatched_tome_ibtm": comparison,
}


# ------------------------------------------------------------------------------- test-side substitution
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
        "tokenmerge_tiny_sd15.safetensors", "stable_diffusion", TAESD_4CH,
        note="ComfyUI recognises an SDXL UNet only at full size (2.6 B parameters) and SDXL's CLIP-G is fixed "
             "at 700 M: the SD1.5 stand-in runs the graph"),
    "sd3.5_medium.safetensors": Standin("tokenmerge_tiny_sd3_clip_l.safetensors", "stable_diffusion", TAESD_16CH),
    "flux1-dev.safetensors": Standin(
        "tokenmerge_tiny_sd3_clip_l.safetensors", "stable_diffusion", TAESD_16CH,
        note="ComfyUI fixes Flux at 24 heads of 128 (3072 wide, 340 M parameters per block) and T5-XXL at "
             "4.7 B: the SD3 stand-in (same 16-channel latent) runs the graph"),
    "PixArt-Sigma-XL-2-1024-MS.safetensors": Standin(
        "tokenmerge_tiny_pixart_sigma.safetensors", "sd3", TAESD_4CH, side=512,
        note="PixArt's sin-cos position base size rounds to 0 below a 64-wide latent in ComfyUI 0.3.75"),
    "wan2.1_t2v_1.3B_fp16.safetensors": Standin("tokenmerge_tiny_wan21.safetensors", "sd3",
                                                "tokenmerge_tiny_wan21_vae.safetensors"),
}
LOADERS = ("CheckpointLoaderSimple", "UNETLoader")
TEXT_LOADERS = ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader")
EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo")
TEST_STEPS = 3
TEST_FRAMES = 5


def load_example(name: str) -> dict:
    """The committed UI-format workflow ``example_workflows/<name>.json``."""
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


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
    latents shrunk to the stand-in's side (5 frames for video) and samplers cut to ``TEST_STEPS`` steps."""
    prompt = copy.deepcopy(prompt)
    names = [n["inputs"].get("ckpt_name") or n["inputs"].get("unet_name") for n in prompt.values()
             if n["class_type"] in LOADERS]
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
            inputs.update(width=standin.side, height=standin.side)
            if "length" in inputs:
                inputs["length"] = TEST_FRAMES
        elif kind == "KSampler":
            inputs["steps"] = TEST_STEPS
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and (str(value[0]), value[1]) in relink:
                node["inputs"][name] = relink[str(value[0]), value[1]]
    return prompt, standin


def write_examples(object_info: dict, out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    written = []
    for name, build in {**EXAMPLES, **DEMOS}.items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(build().ui(object_info), indent=1) + "\n")
        written.append(path)
    return written


def main() -> None:
    import tempfile

    from devkit import comfy_env, tiny_models
    from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer

    comfy_env.bootstrap_comfyui()
    tiny_models.write_standin_models(str(STANDIN_MODELS_DIR))
    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server:
        for path in write_examples(server.object_info()):
            print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

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
and numbered with two digits, the demo first (the browser's A-Z order). Tests run every workflow on stand-ins: see
:data:`STANDINS` and :func:`substitute_standins`.
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

# Geometry in graph units (1 px at 100 % zoom). A node's ``pos`` is the top left of its body; its title bar
# (LiteGraph.NODE_TITLE_HEIGHT) is above it. A group's title bar is its font size (24) x 1.4.
NODE_TITLE = 30
GROUP_TITLE = 34
GROUP_PAD = 12  # inside a group, left, right and below its nodes
NODE_GAP = 30  # above a node's title bar, to the node or group title above: room for the pack's source badge
ITEM_GAP = 24  # between groups (or notes) stacked in a column
COLUMN_GAP = 36  # between columns: two groups' padding and 12 px of canvas
# The view a workflow opens with: 100 % zoom, the graph's top left clear of the editor's side bar and menus.
VIEW = {"scale": 1.0, "offset": [90, 150]}

# The least height each node needs: what ``node.computeSize()`` gives in the frontends (1.32.9 and 1.58.1) for its
# slots and widgets, rounded up. Nodes that show images get the image area they compute once images arrive (the
# frontends' image preview widget: 220 px and a 4 px margin), so a run grows nothing; prompts and notes get more
# where added.
IMAGE_AREA = 224
MIN_HEIGHT = {
    "CheckpointLoaderSimple": 100,
    "UNETLoader": 84,
    "VAELoader": 60,
    "CLIPLoader": 108,
    "DualCLIPLoader": 132,
    "TripleCLIPLoader": 108,
    "ModelSamplingSD3": 60,
    "FluxGuidance": 60,
    "EmptyLatentImage": 108,
    "EmptySD3LatentImage": 108,
    "EmptyHunyuanLatentVideo": 132,
    "KSampler": 264,
    "VAEDecode": 48,
    "TokenMergeImportance": 60,
    "TokenMergeSDTM": 60,
    "TokenMergeSpatialToMe": 276,
    "SaveImage": 58 + IMAGE_AREA,
    "SaveAnimatedWEBP": 154 + IMAGE_AREA,
    "TokenMergeHeatmapPreview": 174 + IMAGE_AREA,
    "EmptyFlux2LatentImage": 108,
    "ModelSamplingAuraFlow": 60,
    "KSamplerAdvanced": 336,
    "LoadImage": 102 + IMAGE_AREA,
    "FluxKontextImageScale": 26,
    "VAEEncode": 48,
    "ReferenceLatent": 48,
}

# Group colours: the frontend's own palette (LGraphCanvas.node_colors[...].groupcolor).
PALE_BLUE, GREEN, BROWN, PURPLE, YELLOW = "#3f789e", "#8A8", "#b06634", "#a1309b", "#b58b2a"

# Where each public model file the examples name can be downloaded: the graph editor reads a loader's
# ``properties.models`` ({name, url, directory}) and offers the download when the file is missing. The URLs are
# those of ComfyUI's own templates where they use the file, else the model's official repository.
HF = "https://huggingface.co/"
MODEL_FILES: dict[str, tuple[str, str]] = {
    "v1-5-pruned-emaonly.safetensors": (
        "checkpoints",
        HF + "Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors",
    ),
    "sd_xl_base_1.0.safetensors": (
        "checkpoints",
        HF + "stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
    ),
    "sd3.5_medium.safetensors": (
        "checkpoints",
        HF + "stabilityai/stable-diffusion-3.5-medium/resolve/main/sd3.5_medium.safetensors",
    ),
    "clip_l.safetensors": ("text_encoders", HF + "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "clip_g.safetensors": (
        "text_encoders",
        HF + "Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/text_encoders/clip_g.safetensors",
    ),
    "t5xxl_fp16.safetensors": (
        "text_encoders",
        HF + "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
    ),
    "flux1-dev.safetensors": ("diffusion_models", HF + "Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors"),
    "ae.safetensors": ("vae", HF + "Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors"),
    # the diffusers-format transformer, which ComfyUI's UNETLoader loads; saved under the example's file name
    "PixArt-Sigma-XL-2-1024-MS.safetensors": (
        "diffusion_models",
        HF + "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS/resolve/main/transformer/diffusion_pytorch_model.safetensors",
    ),
    "sdxl_vae.safetensors": ("vae", HF + "stabilityai/sdxl-vae/resolve/main/sdxl_vae.safetensors"),
    "wan2.1_t2v_1.3B_fp16.safetensors": (
        "diffusion_models",
        HF + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/"
        "wan2.1_t2v_1.3B_fp16.safetensors",
    ),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        "text_encoders",
        HF + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    ),
    "wan_2.1_vae.safetensors": (
        "vae",
        HF + "Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors",
    ),
    "flux2_dev_fp8mixed.safetensors": (
        "diffusion_models",
        HF + "Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/flux2_dev_fp8mixed.safetensors",
    ),
    "mistral_3_small_flux2_fp8.safetensors": (
        "text_encoders",
        HF + "Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/mistral_3_small_flux2_fp8.safetensors",
    ),
    "flux2-vae.safetensors": ("vae", HF + "Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"),
    "flux1-dev-kontext_fp8_scaled.safetensors": (
        "diffusion_models",
        HF + "Comfy-Org/flux1-kontext-dev_ComfyUI/resolve/main/split_files/diffusion_models/"
        "flux1-dev-kontext_fp8_scaled.safetensors",
    ),
    "z_image_turbo_bf16.safetensors": (
        "diffusion_models",
        HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
    ),
    "qwen_3_4b.safetensors": (
        "text_encoders",
        HF + "Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
    ),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": (
        "diffusion_models",
        HF + "Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/"
        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
    ),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": (
        "diffusion_models",
        HF + "Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/"
        "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
    ),
}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict[str, Any]
    links: dict[str, tuple[Node, int]]
    column: int
    height: int
    title: str | None = None


@dataclass
class Group:
    title: str
    color: str
    nodes: list[Node] = field(default_factory=list)


@dataclass
class Graph:
    """A workflow under construction on columns of the given widths: ``group`` opens a group, ``add`` puts a node
    into the open one (stacked in its column), ``note`` puts a note outside any group; ``ui(object_info)`` lays
    them out and gives the UI-format dict. Groups and notes stack in their columns in the order they are made;
    a group spans the columns of its nodes."""

    columns: tuple[int, ...]
    nodes: list[Node] = field(default_factory=list)
    items: list[Group | Node] = field(default_factory=list)

    def group(self, title: str, color: str = PALE_BLUE) -> None:
        self.items.append(Group(title, color))

    def add(
        self, kind: str, column: int, title: str | None = None, node_height: int | None = None, **inputs: Any
    ) -> Node:
        """A node in the open group; ``inputs`` are widget values, or ``(node, slot)`` / ``node`` (slot 0) links."""
        links, widgets = {}, {}
        for name, value in inputs.items():
            if isinstance(value, Node):
                links[name] = (value, 0)
            elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                links[name] = value
            else:
                widgets[name] = value
        node = Node(len(self.nodes) + 1, kind, widgets, links, column, node_height or MIN_HEIGHT[kind], title)
        self.nodes.append(node)
        self.items[-1].nodes.append(node)
        return node

    def note(self, column: int, title: str, height: int, text: str) -> None:
        node = Node(len(self.nodes) + 1, "Note", {"text": text}, {}, column, height, title)
        self.nodes.append(node)
        self.items.append(node)

    def layout(self) -> tuple[dict[int, list[int]], list[dict]]:
        """Each node's ``[x, y, width, height]`` (its body, as ``pos`` and ``size``) and the groups' UI dicts."""
        xs = [sum(self.columns[:c]) + c * COLUMN_GAP for c in range(len(self.columns))]
        free = [0] * len(self.columns)  # the top of the free space in each column
        boxes: dict[int, list[int]] = {}
        groups = []
        for item in self.items:
            if isinstance(item, Node):  # a note: as wide as a group in its column
                top = free[item.column]
                boxes[item.id] = [
                    xs[item.column] - GROUP_PAD,
                    top + NODE_TITLE,
                    self.columns[item.column] + 2 * GROUP_PAD,
                    item.height,
                ]
                free[item.column] = top + NODE_TITLE + item.height + ITEM_GAP
                continue
            first, last = min(n.column for n in item.nodes), max(n.column for n in item.nodes)
            top = max(free[first : last + 1])
            stacks = dict.fromkeys(range(first, last + 1), top + GROUP_TITLE + NODE_GAP)
            for node in item.nodes:
                boxes[node.id] = [
                    xs[node.column],
                    stacks[node.column] + NODE_TITLE,
                    self.columns[node.column],
                    node.height,
                ]
                stacks[node.column] += NODE_TITLE + node.height + NODE_GAP
            bottom = max(stacks.values()) - NODE_GAP + GROUP_PAD
            left = xs[first] - GROUP_PAD
            groups.append(
                {
                    "id": len(groups) + 1,
                    "title": item.title,
                    "bounding": [left, top, xs[last] + self.columns[last] + GROUP_PAD - left, bottom - top],
                    "color": item.color,
                    "font_size": 24,
                    "flags": {},
                }
            )
            for column in range(first, last + 1):
                free[column] = bottom + ITEM_GAP
        return boxes, groups

    def ui(self, object_info: dict) -> dict:
        boxes, groups = self.layout()
        link_rows, ui_nodes = [], []
        outputs: dict[tuple[int, int], list[int]] = {}
        for node in self.nodes:  # links first, so every output knows its link ids
            for name, (source, slot) in node.links.items():
                kind = object_info[source.type]["output"][slot]
                link_rows.append([len(link_rows) + 1, source.id, slot, node.id, name, kind])
                outputs.setdefault((source.id, slot), []).append(len(link_rows))
        for order, node in enumerate(self.nodes):
            x, y, width, height = boxes[node.id]
            entry: dict[str, Any] = {
                "id": node.id,
                "type": node.type,
                "pos": [x, y],
                "size": [width, height],
                "flags": {},
                "order": order,
                "mode": 0,
                "properties": {"Node name for S&R": node.type},
            }
            models = [
                {"name": value, "url": MODEL_FILES[value][1], "directory": MODEL_FILES[value][0]}
                for value in node.widgets.values()
                if isinstance(value, str) and value in MODEL_FILES
            ]
            if models:
                entry["properties"]["models"] = models
            if node.title:
                entry["title"] = node.title
            if node.type == "Note":
                entry.update(inputs=[], outputs=[], widgets_values=[node.widgets["text"]], color="#432", bgcolor="#653")
                ui_nodes.append(entry)
                continue
            info = object_info[node.type]
            entry["inputs"] = []
            for name, (source, slot) in node.links.items():
                link_id = next(row[0] for row in link_rows if row[3] == node.id and row[4] == name)
                entry["inputs"].append(
                    {"name": name, "type": object_info[source.type]["output"][slot], "link": link_id}
                )
            entry["outputs"] = [
                {"name": name, "type": kind, "links": outputs.get((node.id, slot), []), "slot_index": slot}
                for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"], strict=True))
            ]
            entry["widgets_values"] = widget_values(info, dict(node.widgets))
            ui_nodes.append(entry)
        # UI links are [id, origin, origin_slot, target, target_slot, type]; target slots index the inputs list.
        for row in link_rows:
            target = next(n for n in ui_nodes if n["id"] == row[3])
            row[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["link"] == row[0])
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(link_rows),
            "nodes": ui_nodes,
            "links": link_rows,
            "groups": groups,
            "config": {},
            "extra": {"ds": copy.deepcopy(VIEW)},
            "version": 0.4,
        }


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
# Single-path examples: notes and models | prompt and latent | sampler | save (and preview).
SINGLE_COLUMNS = (270, 290, 260, 300)


def _prompt_group(
    g: Graph,
    clip: Any,
    latent_kind: str,
    *,
    prompt: str,
    negative: str = NEGATIVE,
    guidance: float | None = None,
    **latent: Any,
) -> tuple[Node, Node, Node]:
    """The group of column 1: positive (with FluxGuidance), negative, empty latent."""
    g.group("Prompt and image size")
    positive = g.add("CLIPTextEncode", 1, "Positive", 120, clip=clip, text=prompt)
    if guidance is not None:
        positive = g.add("FluxGuidance", 1, conditioning=positive, guidance=guidance)
    negative_node = g.add("CLIPTextEncode", 1, "Negative", 100, clip=clip, text=negative)
    return positive, negative_node, g.add(latent_kind, 1, **latent)


def _sample_group(
    g: Graph,
    model: Node,
    positive: Node,
    negative: Node,
    latent: Node,
    vae: Any,
    *,
    steps: int,
    cfg: float,
    sampler: str,
    scheduler: str,
    prefix: str,
    save: str = "SaveImage",
    column: int = 2,
    **save_inputs: Any,
) -> Node:
    """The group of columns ``column`` and the next (2 and 3 by default): KSampler (seed 42) and VAEDecode, then the
    save node; the decoded images."""
    g.group("Sample and save", GREEN)
    sampled = g.add(
        "KSampler",
        column,
        model=model,
        positive=positive,
        negative=negative,
        latent_image=latent,
        seed=42,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler,
        scheduler=scheduler,
        denoise=1.0,
    )
    decoded = g.add("VAEDecode", column, samples=sampled, vae=vae)
    g.add(save, column + 1, None, max(340, MIN_HEIGHT[save]), images=decoded, filename_prefix=prefix, **save_inputs)
    return decoded


def sd15_preview() -> Graph:
    g = Graph(SINGLE_COLUMNS)
    g.note(
        0,
        "Recommended settings",
        230,
        (
            "Token Merge (Importance) on SD1.5: ratio 0.5 (0.3 cautious, 0.7 for drafts). It merges the "
            "full-resolution level, and the gain grows with the image: the README's CPU benchmark measured 1.16x per "
            "step at 512x512 and 1.35x at 768x768. The preview shows the CFG importance of every step, live while "
            "sampling runs: bright = prompt-relevant, merged last. Set view to 'merge assignment' to see which tokens "
            "one block kept, merged or used as destinations."
        ),
    )
    g.group("Model and merging")
    ckpt = g.add("CheckpointLoaderSimple", 0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    merged = g.add("TokenMergeImportance", 0, model=(ckpt, 0), ratio=0.5)
    positive, negative, latent = _prompt_group(
        g,
        (ckpt, 1),
        "EmptyLatentImage",
        width=512,
        height=512,
        batch_size=1,
        prompt="a red fox sitting in a snowy forest, detailed fur, golden hour",
    )
    decoded = _sample_group(
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
        steps="all",
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
    positive, negative, latent = _prompt_group(
        g,
        (ckpt, 1),
        "EmptyLatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        prompt="a lighthouse on a cliff above a stormy sea, dramatic sky, photograph",
    )
    _sample_group(
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
    positive, negative, latent = _prompt_group(
        g,
        clip,
        "EmptySD3LatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        prompt="a glass terrarium with a tiny mossy island, macro photograph, soft light",
    )
    _sample_group(
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
    positive, negative, latent = _prompt_group(
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
    _sample_group(
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
    positive, negative, latent = _prompt_group(
        g,
        clip,
        "EmptyLatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        prompt="an origami crane on a wooden desk, paper texture, studio light",
    )
    _sample_group(
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
    positive, negative, latent = _prompt_group(
        g,
        clip,
        "EmptyHunyuanLatentVideo",
        width=832,
        height=480,
        length=33,
        batch_size=1,
        prompt="a paper boat drifting down a rain gutter, slow motion, shallow depth of field",
    )
    _sample_group(
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
    positive, negative, latent = _prompt_group(
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
    _sample_group(
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
    negative = g.add("CLIPTextEncode", 2, "Negative (unused at cfg 1)", 100, clip=clip, text="")
    _sample_group(
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
    positive, negative, latent = _prompt_group(
        g,
        clip,
        "EmptySD3LatentImage",
        width=1024,
        height=1024,
        batch_size=1,
        negative="",
        prompt="a street market at dusk with paper lanterns, candid photograph",
    )
    _sample_group(
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
    positive, negative, latent = _prompt_group(
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
        "High-noise steps 0-10",
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
        "Low-noise steps 10-20",
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
COMPARISON_COLUMNS = (250, 290, 260, 260, 260)


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
    """The demo (``make demo``): the trained shapes DiT (SD3 family) unmerged, with spatial ToMe and with IBTM, same
    seed. The DiT, not the UNet: it is the shapes model that draws the prompted objects (devkit/shapes/README.md)."""
    g = Graph(COMPARISON_COLUMNS)
    g.note(
        0,
        "About this demo",
        250,
        (
            "Runs as is on the pack's trained shapes models, in demo_models/ of its git repository (registry installs "
            "leave them out): copy tokenmerge_shapes_sd3.safetensors to models/diffusion_models and "
            "tokenmerge_shapes_taesd3.safetensors to models/vae. Same seed and prompt: unmerged, spatial ToMe and "
            "IBTM at ratio 0.5; the preview shows where guidance puts the importance.\n"
            "This DiT has 8x8 = 64 image tokens: merging shows what it does to the image but cannot make so small a "
            "model faster. The speed-up shows on real models (README, Speed)."
        ),
    )
    g.group("Models and prompt")
    unet = g.add("UNETLoader", 0, unet_name="tokenmerge_shapes_sd3.safetensors", weight_dtype="default")
    vae = g.add("VAELoader", 0, vae_name="tokenmerge_shapes_taesd3.safetensors")
    positive = g.add("TokenMergeDemoPrompt", 0, "Positive", 100, text=SHAPES_PROMPT)
    negative = g.add("TokenMergeDemoPrompt", 0, "Negative (empty)", 90, text="")
    latent = g.add("EmptySD3LatentImage", 0, width=128, height=128, batch_size=4)
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
        preview_steps="1,4,8,12,16,20",
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

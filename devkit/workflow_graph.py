"""The UI-format workflow graph of the example workflows (``example_workflows.py``): nodes in groups on columns,
laid out so that no node overlaps another at any zoom, widget values and links from a real server's
``/object_info``, and each public model file's download entry (``properties.models``) on its loader."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

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


# ------------------------------------------------------------------ parts the examples share
NEGATIVE = "blurry, low quality, deformed"
# Single-path examples: notes and models | prompt and latent | sampler | save (and preview).
SINGLE_COLUMNS = (270, 290, 260, 300)


def prompt_group(
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


def sample_group(
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

"""Thumbnails of ``example_workflows/`` and the README screenshots, from real runs of the pack's trained shapes models.

    .comfyui/venv/bin/python -m devkit.screenshots

* ``example_workflows/<name>.jpg``, the template browser's square thumbnails: the example's merging node(s), with
  their settings, run on the shapes model of the example's family (the SD1.x-family UNet for the UNet examples,
  the SD3-family DiT for the DiT ones: the families' own weights are not to be had here) next to the unmerged
  image of the same seed, with the preview's importance map of one step (Flux, at cfg 1: its merge assignment); a
  caption names the model the images come from.
* ``docs/images/live_heatmap.png``: the demo workflow in the graph editor, on the shapes UNet (slower than the DiT,
  so the live map can be caught), the preview node drawing the live map while sampling runs;
* ``docs/images/comparison_output.png``: the demo workflow (the shapes DiT) in the graph editor after a run.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit import REPO_ROOT, comfy_env
from devkit.browser import load_workflow, open_frontend
from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer
from devkit.example_workflows import (
    COMPARISON,
    DEMO,
    EXAMPLES_DIR,
    FLUX,
    FLUX2,
    KONTEXT,
    PIXART,
    SD3,
    SD15_PREVIEW,
    SDXL,
    SHAPES_PROMPT,
    WAN,
    WAN22,
    ZIMAGE,
    load_example,
)
from devkit.workflow_api import ui_to_api

DOCS_IMAGES = REPO_ROOT / "docs" / "images"

# The shapes models of each family: diffusion model, VAE, empty latent node.
SHAPES_MODELS = {  # name -> (model file, VAE file, empty-latent node, the side in px it samples at)
    "sd15": ("tokenmerge_shapes_sd15.safetensors", "tokenmerge_shapes_taesd.safetensors", "EmptyLatentImage", 128),
    "sd3": ("tokenmerge_shapes_sd3.safetensors", "tokenmerge_shapes_taesd3.safetensors", "EmptySD3LatentImage", 128),
    "sd3-256": (
        "tokenmerge_shapes_sd3_256.safetensors",
        "tokenmerge_shapes_taesd3.safetensors",
        "EmptySD3LatentImage",
        256,
    ),
}
# The demo's sampler settings, the shapes models' own (what they were judged with).
SAMPLER = {"steps": 20, "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "simple", "denoise": 1.0}
PREVIEW_STEP = 8  # the step whose importance map a thumbnail shows
MERGING_LABELS = {"TokenMergeImportance": "IBTM", "TokenMergeSpatialToMe": "spatial ToMe", "TokenMergeSDTM": "SDTM"}


@dataclass(frozen=True)
class Thumbnail:
    family: str  # a key of SHAPES_MODELS
    prompt: str  # in the shapes models' grammar
    seed: int
    caption: str  # the bottom line: which model made the images
    cfg: float = 3.0  # the example's own cfg where it matters (Flux runs at 1)
    view: str = "importance"  # the preview's view: "importance" needs cfg > 1, "merge assignment" does not


THUMBNAILS = {
    DEMO: Thumbnail("sd3-256", SHAPES_PROMPT, 7, "256 px shapes demo DiT, as the demo runs it"),
    SD15_PREVIEW: Thumbnail(
        "sd15",
        "a large yellow circle at center on a gradient background",
        1,
        "shapes demo UNet (SD1.x family), not SD1.5",
    ),
    COMPARISON: Thumbnail(
        "sd15",
        "a large green square at top left and a small magenta circle at bottom right on a checkered background",
        2,
        "shapes demo UNet (SD1.x family), not SD1.5",
    ),
    SDXL: Thumbnail(
        "sd15", "a large cyan triangle at center on a plain background", 3, "shapes demo UNet (SD1.x family), not SDXL"
    ),
    SD3: Thumbnail(
        "sd3",
        "a large blue diamond at top right and a small yellow square at bottom left on a striped background",
        4,
        "shapes demo DiT (SD3 family), not SD3.5",
    ),
    FLUX: Thumbnail(
        "sd3",
        "a large magenta circle at center on a gradient background",
        5,
        "shapes demo DiT (SD3 family) at cfg 1, not Flux",
        cfg=1.0,
        view="merge assignment",
    ),
    PIXART: Thumbnail(
        "sd3",
        "a large red triangle at bottom left and a small cyan diamond at top right on a striped background",
        6,
        "shapes demo DiT (SD3 family), not PixArt",
    ),
    WAN: Thumbnail(
        "sd3",
        "a large green diamond at center on a checkered background",
        8,
        "shapes demo DiT (an image model), not Wan",
    ),
    FLUX2: Thumbnail(
        "sd3",
        "a large yellow square at top left and a small red circle at bottom right on a gradient background",
        9,
        "shapes demo DiT (SD3 family) at cfg 1, not Flux 2",
        cfg=1.0,
        view="merge assignment",
    ),
    KONTEXT: Thumbnail(
        "sd3",
        "a large cyan circle at center on a striped background",
        10,
        "shapes demo DiT at cfg 1, text to image, not Kontext",
        cfg=1.0,
        view="merge assignment",
    ),
    ZIMAGE: Thumbnail(
        "sd3",
        "a large red square at bottom right and a small green triangle at top left on a plain background",
        11,
        "shapes demo DiT (SD3 family) at cfg 1, not Z-Image",
        cfg=1.0,
        view="merge assignment",
    ),
    WAN22: Thumbnail(
        "sd3",
        "a large blue circle at top left and a small yellow diamond at bottom right on a checkered background",
        12,
        "shapes demo DiT (an image model), not Wan 2.2",
    ),
}

SIDE, TILE, GAP = 400, 180, 8  # a square thumbnail: 2x2 tiles at the top, a caption line below them
BACKGROUND, TEXT, MUTED = (24, 24, 27), (236, 236, 236), (170, 170, 176)


def thumbnail_prompt(example: dict[str, Any], spec: Thumbnail) -> tuple[dict[str, Any], list[str]]:
    """An API prompt that samples ``spec.prompt`` on the shapes model unmerged and through each merging node of the
    API-format ``example`` (same type and settings), with the importance preview of the last merged branch; and the
    branches' labels, in the order of their SaveImage nodes ``"<i + 10>"``."""
    unet, vae, latent, side = SHAPES_MODELS[spec.family]
    prompt: dict[str, Any] = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "3": {"class_type": "TokenMergeDemoPrompt", "inputs": {"text": spec.prompt}},
        "4": {"class_type": "TokenMergeDemoPrompt", "inputs": {"text": ""}},
        "5": {"class_type": latent, "inputs": {"width": side, "height": side, "batch_size": 1}},
    }
    distinct: dict[str, dict[str, Any]] = {}  # one branch per merging setup (Wan 2.2: the same on both experts)
    for node in example.values():
        if node["class_type"] in MERGING_LABELS:
            settings = {k: v for k, v in node["inputs"].items() if k != "model"}
            distinct.setdefault(json.dumps([node["class_type"], settings], sort_keys=True), node)
    merging = list(distinct.values())
    labels = ["unmerged", *(f"{MERGING_LABELS[n['class_type']]} {n['inputs']['ratio']:g}" for n in merging)]
    model = ["1", 0]
    for branch, node in enumerate([None, *merging]):
        if node is not None:
            merged = {**node["inputs"], "model": ["1", 0]}
            prompt[str(20 + branch)] = {"class_type": node["class_type"], "inputs": merged}
            model = [str(20 + branch), 0]
        prompt[str(30 + branch)] = {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "positive": ["3", 0],
                "negative": ["4", 0],
                "latent_image": ["5", 0],
                "seed": spec.seed,
                **SAMPLER,
                "cfg": spec.cfg,
            },
        }
        prompt[str(40 + branch)] = {
            "class_type": "VAEDecode",
            "inputs": {"samples": [str(30 + branch), 0], "vae": ["2", 0]},
        }
        prompt[str(10 + branch)] = {
            "class_type": "SaveImage",
            "inputs": {"images": [str(40 + branch), 0], "filename_prefix": "tokenmerge_thumbnail"},
        }
    prompt["9"] = {
        "class_type": "TokenMergeHeatmapPreview",
        "inputs": {
            "model": model,
            "images": [str(40 + len(merging)), 0],
            "steps": str(PREVIEW_STEP),
            "colormap": "inferno",
            "overlay_alpha": 0.6,
            "view": spec.view,
            "block": 0,
        },
    }
    return prompt, labels


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _lines(draw, text: str, font, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width``, at spaces."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def compose_thumbnail(tiles: list[tuple[str, Any]], title: str, caption: str) -> bytes:
    """A square JPEG: up to four labelled image tiles on a 2x2 grid (a free fourth cell shows ``title``), and
    ``caption`` on the line below them."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (SIDE, SIDE), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    left = (SIDE - 2 * TILE - GAP) // 2
    cells = [(left + column * (TILE + GAP), GAP + row * (TILE + GAP)) for row in (0, 1) for column in (0, 1)]
    for (x, y), (label, image) in zip(cells, tiles, strict=False):
        sheet.paste(image.convert("RGB").resize((TILE, TILE), Image.LANCZOS), (x, y))
        draw.rectangle((x, y + TILE - 22, x + draw.textlength(label, font=_font(14)) + 12, y + TILE), fill=(0, 0, 0))
        draw.text((x + 6, y + TILE - 20), label, fill=TEXT, font=_font(14))
    if len(tiles) < len(cells):
        x, y = cells[-1]
        for line, text in enumerate(_lines(draw, title, _font(22), TILE - 20)):
            draw.text((x + 10, y + 30 + line * 30), text, fill=TEXT, font=_font(22))
    draw.text((left, 2 * TILE + 2 * GAP + 3), caption, fill=MUTED, font=_font(14))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=82, optimize=True)
    return out.getvalue()


def write_thumbnails(server: ComfyServer, names: list[str] | None = None) -> None:
    """The thumbnails of ``names`` (every example's when ``None``)."""
    from PIL import Image

    from merging.heatmap import tile_size

    object_info = server.object_info()
    for name, spec in THUMBNAILS.items():
        if names is not None and name not in names:
            continue
        prompt, labels = thumbnail_prompt(ui_to_api(load_example(name), object_info), spec)
        outputs = server.run(prompt, timeout=600)["outputs"]
        tiles = [
            (label, Image.open(io.BytesIO(server.view(outputs[str(10 + i)]["images"][0]))))
            for i, label in enumerate(labels)
        ]
        preview = Image.open(io.BytesIO(server.view(outputs["9"]["images"][0])))
        side = SHAPES_MODELS[spec.family][3]
        first_tile = tile_size((1, 1), (side, side), 1)  # the preview grid's tile of one step, at its top left: (h, w)
        tiles.append((f"{spec.view}, step {PREVIEW_STEP}", preview.crop((0, 0, *reversed(first_tile)))))
        path = EXAMPLES_DIR / f"{name}.jpg"
        path.write_bytes(compose_thumbnail(tiles, name.split(" ", 1)[1].replace(",", ""), spec.caption))
        print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size // 1024} KB)")


def on_shapes_unet(workflow: dict[str, Any], steps: int) -> dict[str, Any]:
    """The demo workflow (UI format) on the shapes UNet, one image at ``steps`` steps, only its IBTM column queued
    (the other save nodes muted): the layout is the demo's."""
    unet, vae, latent, _ = SHAPES_MODELS["sd15"]
    for node in workflow["nodes"]:
        values = node.get("widgets_values")
        if node["type"] == "UNETLoader":
            values[0] = unet
        elif node["type"] == "VAELoader":
            values[0] = vae
        elif node["type"] == "EmptySD3LatentImage":
            node["type"] = node["properties"]["Node name for S&R"] = latent
            values[2] = 1  # width, height, batch_size
        elif node["type"] == "KSampler":
            values[2] = steps  # seed, its control, steps, ...
        elif node["type"] == "SaveImage" and not values[0].endswith("ibtm"):
            node["mode"] = NEVER
    return workflow


# The boxes of the named groups, or of the nodes of the named types (title bars included).
GROUP_BOXES = "(titles) => titles.map((t) => [...window.app.graph._groups.find((g) => g.title === t)._bounding])"
NODE_BOXES = "(types) => window.app.graph._nodes.filter((n) => types.includes(n.type)).map((n) => [...n.getBounding()])"


def frame(page, boxes: list[list[float]], margin: int = 10) -> dict[str, float]:
    """Move the canvas (100 % zoom) so the ``boxes`` sit near the top left of the viewport, clear of the editor's
    menus and notifications; the screenshot clip around them."""
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    screen = (90, 170)
    page.evaluate(
        """([x, y]) => { const canvas = window.app.canvas;
        canvas.ds.scale = 1; canvas.ds.offset = [x, y]; canvas.setDirty(true, true); }""",
        [screen[0] - left, screen[1] - top],
    )
    page.wait_for_timeout(500)
    origin = page.evaluate("() => { const r = window.app.canvas.canvas.getBoundingClientRect(); return [r.x, r.y]; }")
    return {
        "x": origin[0] + screen[0] - margin,
        "y": origin[1] + screen[1] - margin,
        "width": right - left + 2 * margin,
        "height": bottom - top + 2 * margin,
    }


def save_png(png: bytes, path: Path) -> None:
    """``png`` reduced to 256 colours (the editor's flat colours survive; the images dither a little)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    image.save(path, optimize=True)
    print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size // 1024} KB)")


NEVER = 2  # a node mode: the node never runs (muted)
COMPARISON_GROUPS = ["Token merging", "Unmerged", "Spatial ToMe", "IBTM", "Importance preview"]
LIVE_STEPS = 30  # on the shapes UNet: long enough to catch the live map mid-run


VIEWPORT = {"width": 1600, "height": 1300}


def write_live_heatmap(server: ComfyServer) -> None:
    with open_frontend(server.url, viewport=VIEWPORT) as page:
        load_workflow(page, on_shapes_unet(load_example(DEMO), LIVE_STEPS))
        clip = frame(page, page.evaluate(NODE_BOXES, ["TokenMergeHeatmapPreview"]), margin=30)  # its badge too
        preview = page.evaluate("() => window.app.graph._nodes.find((n) => n.type === 'TokenMergeHeatmapPreview').id")
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function(
            "(id) => (window.app.graph.getNodeById(id).tokenmergeLive?.frames ?? 0) >= 12", arg=preview, timeout=600_000
        )
        save_png(page.screenshot(clip=clip), DOCS_IMAGES / "live_heatmap.png")
        page.wait_for_function(
            "(id) => window.app.graph.getNodeById(id).tokenmergeLive?.done", arg=preview, timeout=600_000
        )


def write_comparison(server: ComfyServer) -> None:
    with open_frontend(server.url, viewport=VIEWPORT) as page:
        load_workflow(page, load_example(DEMO))
        clip = frame(page, page.evaluate(GROUP_BOXES, COMPARISON_GROUPS))
        shown = page.evaluate(
            "() => window.app.graph._nodes.filter((n) => ['SaveImage', "
            "'TokenMergeHeatmapPreview'].includes(n.type)).map((n) => n.id)"
        )
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function(
            "(ids) => ids.every((id) => (window.app.graph.getNodeById(id).imgs?.length ?? 0) > 0)",
            arg=shown,
            timeout=600_000,
        )
        page.wait_for_timeout(1000)
        save_png(page.screenshot(clip=clip), DOCS_IMAGES / "comparison_output.png")


def main(argv: list[str] | None = None) -> None:
    import argparse

    from devkit.shapes_training.training import link_demo_models

    parser = argparse.ArgumentParser(description="Thumbnails of the examples and the README screenshots.")
    parser.add_argument(
        "--thumbnails",
        nargs="+",
        metavar="EXAMPLE",
        choices=list(THUMBNAILS),
        help="write only the thumbnails of these examples (no screenshots)",
    )
    parser.add_argument(
        "--screenshots-only",
        action="store_true",
        help="write only the README screenshots (committed thumbnails stay as they are: every version is kept)",
    )
    args = parser.parse_args(argv)
    comfy_env.bootstrap_comfyui()
    link_demo_models(STANDIN_MODELS_DIR)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server:
        if not args.screenshots_only:
            write_thumbnails(server, args.thumbnails)
        if args.thumbnails:
            return
        write_live_heatmap(server)
        write_comparison(server)  # a fresh editor: no outputs of the live run on the same node ids


if __name__ == "__main__":
    main()

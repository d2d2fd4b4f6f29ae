"""The pack's main job, end to end on a real ComfyUI: compare unmerged, spatial ToMe and IBTM on a trained model.

Run through ``make demo`` (which sets the environment up first). Steps:

1. link the pack's small trained shapes models (``demo_models/``: the 256x256 SD3-family DiT the workflow samples,
   its TAESD-format VAE and the others, see ``devkit/shapes_training``) into the server's models folder;
2. start a real ComfyUI server (``main.py --cpu``) with this pack installed;
3. convert ``example_workflows/01 Demo on the shapes model.json`` to API format and queue it: the same prompt and
   seed sampled unmerged, with spatial ToMe and with IBTM (ratio 0.5), plus the IBTM importance preview;
4. write into the output folder (default ``demo_output/``): ``unmerged.png``, ``spatial_tome.png``,
   ``ibtm.png`` (4 samples each), ``side_by_side.png`` (a row per method), ``heatmap.png`` (the importance
   of chosen steps over the first IBTM image) and ``timing.txt`` (each sampler's seconds, from the server's
   execution events);
5. the shapes DiT has 256 image tokens a block, a sixteenth of a real model's at 1024², so time the same three
   conditions on a real-size model with random weights too (``benchmarks/real_size.py``: SD3-medium's width at
   1024², 2 of its 24 blocks, one 2-step run each: 1-3 min on a 2-core CPU) and add its seconds per step to
   ``timing.txt``, each figure labelled with the model it comes from.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw

from devkit import REPO_ROOT, comfy_env
from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer
from devkit.example_workflows import DEMO, EXAMPLES_DIR
from devkit.server_events import ServerEvents
from devkit.shapes_training.train_denoiser import PX_PER_TOKEN
from devkit.shapes_training.training import link_demo_models
from devkit.workflow_api import ui_to_api

DEMO_WORKFLOW = EXAMPLES_DIR / f"{DEMO}.json"
METHODS = ("unmerged", "spatial_tome", "ibtm")
LABELS = {"unmerged": "unmerged", "spatial_tome": "spatial ToMe 0.5", "ibtm": "IBTM 0.5"}


def side_by_side(rows: dict[str, list[bytes]]) -> bytes:
    """One labelled row of images per method, as PNG bytes."""
    images = {name: [Image.open(io.BytesIO(data)).convert("RGB") for data in pngs] for name, pngs in rows.items()}
    width, height = next(iter(images.values()))[0].size
    label_width, gap = 120, 4
    columns = max(len(row) for row in images.values())
    sheet = Image.new("RGB", (label_width + columns * (width + gap), len(images) * (height + gap)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for r, (name, row) in enumerate(images.items()):
        draw.text((6, r * (height + gap) + height // 2 - 6), LABELS[name], fill=(235, 235, 235))
        for c, image in enumerate(row):
            sheet.paste(image, (label_width + c * (width + gap), r * (height + gap)))
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def sampler_of(prompt: dict, method: str) -> str:
    """The id of the KSampler whose images the method's SaveImage saves (SaveImage <- VAEDecode <- KSampler)."""
    save = next(
        node
        for node in prompt.values()
        if node["class_type"] == "SaveImage" and node["inputs"]["filename_prefix"] == f"tokenmerge_demo_{method}"
    )
    decode = prompt[save["inputs"]["images"][0]]
    return decode["inputs"]["samples"][0]


def real_size_lines(out: Path, model: str, steps: int, rounds: int) -> list[str]:
    """Time the demo's three conditions on a real-size model (``benchmarks/real_size.py``, its own process: the
    attention backend is fixed when ComfyUI is imported) and describe its figures."""
    print(f"[demo] timing a real-size model with random weights ({model}), {rounds} rounds of {steps} steps")
    path = out / "real_size.json"
    command = [sys.executable, "-m", "benchmarks.real_size", "--model", model, "--steps", str(steps)]
    subprocess.run([*command, "--rounds", str(rounds), "--json", str(path)], cwd=REPO_ROOT, check=True)
    timed = json.loads(path.read_text())
    runs = (
        f"median of {timed['rounds']} alternating runs of {timed['steps']} steps (min-max)"
        if timed["rounds"] > 1
        else f"one run of {timed['steps']} steps each (the speed benchmark's reports have medians of repeated runs)"
    )
    lines = [
        (
            f"real-size model, random weights: {timed['model']} ({timed['cut']}), batch 1, cfg 5, PyTorch attention, "
            f"seconds per step, {runs}:"
        )
    ]
    for row in timed["rows"]:
        spread = (
            f" ({min(row['seconds_per_step']):.2f}-{max(row['seconds_per_step']):.2f})" if timed["rounds"] > 1 else ""
        )
        lines.append(f"  {row['name']}: {row['median']:.2f} s/step{spread}, {row['speedup']:.2f}x vs unmerged")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo_output", help="output folder")
    parser.add_argument(
        "--real-size-model",
        default="sd3-1024",
        help="the speed benchmark's model timed after the demo (benchmarks/speed_models.py; 'smoke' for a test)",
    )
    parser.add_argument("--real-size-steps", type=int, default=2, help="steps per timed run of it")
    parser.add_argument(
        "--real-size-rounds", type=int, default=1, help="timed runs of it per condition (a step is 6-30 s on a CPU)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    comfy_env.bootstrap_comfyui()
    link_demo_models(STANDIN_MODELS_DIR)
    workflow = json.loads(DEMO_WORKFLOW.read_text())
    with ComfyServer(out / "server") as server:
        prompt = ui_to_api(workflow, server.object_info())
        (out / "workflow_api.json").write_text(json.dumps(prompt, indent=1))
        with ServerEvents(server.url, server.client_id) as events:
            entry = server.run(prompt)
        seconds = events.node_seconds()
        rows: dict[str, list[bytes]] = {}
        for node_id, node in prompt.items():
            images = entry["outputs"].get(node_id, {}).get("images", [])
            if node["class_type"] == "TokenMergeHeatmapPreview":
                (out / "heatmap.png").write_bytes(server.view(images[0]))
            elif node["class_type"] == "SaveImage":
                method = node["inputs"]["filename_prefix"].removeprefix("tokenmerge_demo_")
                rows[method] = [server.view(image) for image in images]
                (out / f"{method}.png").write_bytes(rows[method][0])
        (out / "side_by_side.png").write_bytes(side_by_side({m: rows[m] for m in METHODS}))

    settings = next(node for node in prompt.values() if node["class_type"] == "KSampler")["inputs"]
    model = next(node for node in prompt.values() if node["class_type"] == "UNETLoader")["inputs"]["unet_name"]
    side = next(node for node in prompt.values() if node["class_type"] == "EmptySD3LatentImage")["inputs"]["width"]
    grid = side // PX_PER_TOKEN
    lines = [
        (
            f"tokenmerge demo: {model} ({grid}x{grid} = {grid * grid} image tokens), {side}x{side}, batch 4, "
            f"{settings['steps']} steps {settings['sampler_name']}, cfg {settings['cfg']}, CPU; seconds per KSampler "
            "(server events):"
        )
    ]
    base = None
    for method in METHODS:
        took = seconds.get(sampler_of(prompt, method))
        base = base or took
        ratio = f", {base / took:.2f}x vs unmerged" if took and base else ""
        lines.append(f"  {LABELS[method]}: {took:.2f} s{ratio}" if took else f"  {LABELS[method]}: not measured")
    lines.append(
        f"  (one run each, on a trained model with {grid * grid} image tokens a block; the real-size model below has "
        "4096)"
    )
    lines += real_size_lines(out, args.real_size_model, args.real_size_steps, args.real_size_rounds)
    (out / "timing.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(f"[demo] {line}" for line in lines))
    print(
        f"[demo] files in {out}: side_by_side.png, unmerged.png, spatial_tome.png, ibtm.png, heatmap.png, "
        "timing.txt, real_size.json, workflow_api.json, server/server.log"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

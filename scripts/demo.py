"""The pack's main job, end to end on a real ComfyUI: queue the demo workflow, save what it made.

Run through ``make demo`` (which sets the environment up first). Steps:

1. write the small stand-in models into ``.comfyui/standin_models`` (once);
2. start a real ComfyUI server (``main.py --cpu``) with this pack installed;
3. convert ``example_workflows/tokenmerge_demo_tiny_sd15.json`` to API format and queue it;
4. write the output image, the heatmap grid and a timing line into the output folder (default ``demo_output/``).

The workflow merges tokens with the importance node (IBTM, ratio 0.5) and shows its importance maps with
the heatmap preview node, whose grid over all steps is written as ``heatmap.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit import REPO_ROOT, comfy_env, tiny_models
from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer
from devkit.workflow_api import ui_to_api

DEMO_WORKFLOW = REPO_ROOT / "example_workflows" / "tokenmerge_demo_tiny_sd15.json"


def execution_seconds(history_entry: dict) -> float:
    """Server-side time from execution start to success, from the prompt's status messages (ms stamps)."""
    stamps = {kind: data["timestamp"] for kind, data in history_entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo_output", help="output folder")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    comfy_env.bootstrap_comfyui()
    written = tiny_models.write_standin_models(str(STANDIN_MODELS_DIR))
    if written:
        print(f"[demo] wrote {len(written)} stand-in model files to {STANDIN_MODELS_DIR}")

    workflow = json.loads(DEMO_WORKFLOW.read_text())
    with ComfyServer(out / "server") as server:
        prompt = ui_to_api(workflow, server.object_info())
        (out / "workflow_api.json").write_text(json.dumps(prompt, indent=1))
        started = time.perf_counter()
        entry = server.run(prompt)
        wall = time.perf_counter() - started
        image_path, heatmap_path = out / "output.png", out / "heatmap.png"
        for node_id, node in prompt.items():
            images = entry["outputs"].get(node_id, {}).get("images")
            if node["class_type"] == "TokenMergeHeatmapPreview":
                heatmap_path.write_bytes(server.view(images[0]))
            elif images:
                image_path.write_bytes(server.view(images[0]))

    sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")["inputs"]
    merge = next(node for node in prompt.values() if node["class_type"].startswith("TokenMerge"))
    timing = (f"{merge['class_type']} ratio {merge['inputs']['ratio']}: "
              f"{sampler['steps']} steps, cfg {sampler['cfg']}, "
              f"{sampler['sampler_name']}, tiny SD1.5 stand-in at 256x256 on CPU: "
              f"prompt executed in {execution_seconds(entry):.2f} s on the server, {wall:.2f} s wall")
    (out / "timing.txt").write_text(timing + "\n")
    print(f"[demo] {timing}")
    print(f"[demo] files in {out}: {image_path.name}, {heatmap_path.name}, timing.txt, workflow_api.json, "
          "server/server.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())

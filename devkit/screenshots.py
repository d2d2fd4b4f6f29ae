"""Thumbnails of ``example_workflows/`` and the README screenshots, taken in the real frontend.

    .comfyui/venv/bin/python -m devkit.screenshots

* ``example_workflows/<name>.jpg``: each example as the graph editor shows it (ComfyUI's template
  convention: a same-name image beside the workflow);
* ``docs/images/live_heatmap.png``: the preview node drawing the live map while the SD1.5 example samples;
* ``docs/images/comparison_output.png``: the comparison workflow after a run.

The runs use the stand-in models (``devkit.example_workflows.STANDINS``).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from devkit import REPO_ROOT, comfy_env, tiny_models
from devkit.browser import focus_node, load_api_prompt, load_workflow, open_frontend
from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer
from devkit.example_workflows import EXAMPLES, EXAMPLES_DIR, load_example, standin_prompt

DOCS_IMAGES = REPO_ROOT / "docs" / "images"
CANVAS_CLIP = {"x": 60, "y": 80, "width": 1540, "height": 820}  # below the tabs, right of the side bar
THUMBNAIL_WIDTH = 768


def _save_jpeg(png: bytes, path: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((THUMBNAIL_WIDTH, round(image.height * THUMBNAIL_WIDTH / image.width)), Image.LANCZOS)
    image.save(path, quality=80)


def main() -> None:
    comfy_env.bootstrap_comfyui()
    tiny_models.write_standin_models(str(STANDIN_MODELS_DIR))
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server, \
            open_frontend(server.url) as page:
        for name in EXAMPLES:
            load_workflow(page, load_example(name))
            _save_jpeg(page.screenshot(clip=CANVAS_CLIP), EXAMPLES_DIR / f"{name}.jpg")
            print(f"wrote example_workflows/{name}.jpg")

        prompt = standin_prompt(server.object_info(), "tokenmerge_sd15_ibtm_preview", steps=24, side=256)
        preview = int(next(k for k, n in prompt.items() if n["class_type"] == "TokenMergeHeatmapPreview"))
        load_api_prompt(page, prompt, "tokenmerge_sd15_ibtm_preview")
        focus_node(page, preview, scale=1.2)
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function("(id) => (window.app.graph.getNodeById(id).tokenmergeLive?.frames ?? 0) >= 8",
                               arg=preview)
        page.screenshot(path=str(DOCS_IMAGES / "live_heatmap.png"), clip=CANVAS_CLIP)
        page.wait_for_function("(id) => window.app.graph.getNodeById(id).tokenmergeLive?.done", arg=preview)
        print("wrote docs/images/live_heatmap.png")

    with tempfile.TemporaryDirectory() as base, ComfyServer(Path(base)) as server, \
            open_frontend(server.url) as page:  # a fresh editor: no outputs of the run above on reused ids
        prompt = standin_prompt(server.object_info(), "tokenmerge_compare_unpatched_tome_ibtm", steps=12, side=256)
        load_api_prompt(page, prompt, "tokenmerge_compare_unpatched_tome_ibtm")
        page.evaluate("() => window.app.graph.arrange()")
        shown = [int(k) for k, n in prompt.items() if n["class_type"] in ("SaveImage", "TokenMergeHeatmapPreview")]
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function("(ids) => ids.every((id) => (window.app.graph.getNodeById(id).imgs?.length ?? 0) > 0)",
                               arg=shown)
        focus_node(page, shown[1], scale=0.55)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(DOCS_IMAGES / "comparison_output.png"), clip=CANVAS_CLIP)
        print("wrote docs/images/comparison_output.png")


if __name__ == "__main__":
    main()

"""Every workflow of ``example_workflows/`` runs on the real server, on stand-ins of the model files it names
(``devkit.example_standins.STANDINS`` documents each substitution), and the heatmap preview streams live."""

from __future__ import annotations

import base64
import io
import json
import urllib.parse

import pytest
from conftest import png_size

from devkit import REPO_ROOT
from devkit.comfy_server import PACK_DIR_NAME
from devkit.example_standins import STANDINS, TEST_STEPS, substitute_standins
from devkit.example_workflows import DEMO, DEMOS, EXAMPLES, SD15_PREVIEW, load_example
from devkit.server_events import ServerEvents
from devkit.workflow_api import ui_to_api

EXAMPLES_DIR = REPO_ROOT / "example_workflows"
SAVE_NODES = ("SaveImage", "SaveAnimatedWEBP")
THUMBNAIL_BUDGET = 40_000  # bytes: thumbnails are committed for good
# The folder each loader reads its files from: where the graph editor puts a file it downloads for the loader.
LOADER_FOLDERS = {
    "CheckpointLoaderSimple": "checkpoints",
    "UNETLoader": "diffusion_models",
    "VAELoader": "vae",
    "CLIPLoader": "text_encoders",
    "DualCLIPLoader": "text_encoders",
    "TripleCLIPLoader": "text_encoders",
}
# The hosts the graph editor downloads from (its missing-models list refuses others).
DOWNLOAD_HOSTS = ("https://huggingface.co/",)


def test_every_example_is_committed_with_a_thumbnail_and_a_settings_note():
    from PIL import Image

    for name in [*DEMOS, *EXAMPLES]:
        workflow = load_example(name)
        notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
        assert notes, f"{name} has no note with its recommended settings"
        assert "ratio" in notes[0]["widgets_values"][0]
        path = EXAMPLES_DIR / f"{name}.jpg"
        assert path.stat().st_size < THUMBNAIL_BUDGET, f"{path.name} is {path.stat().st_size} bytes"
        with Image.open(path) as image:  # the template browser shows thumbnails square, cropped to fill
            assert (image.format, image.width) == ("JPEG", image.height), path.name


def test_no_title_carries_a_value_that_could_go_stale():
    """Titles name a node's or group's role; the values are in the widgets (a title like "IBTM 0.5" stays when
    the ratio moves to 0.8)."""
    for name in [*DEMOS, *EXAMPLES]:
        workflow = load_example(name)
        titles = [n["title"] for n in workflow["nodes"] if "title" in n] + [g["title"] for g in workflow["groups"]]
        assert titles, name
        assert not [t for t in titles if any(c.isdigit() for c in t)], name


def test_every_public_model_file_an_example_names_can_be_downloaded_from_the_editor():
    """Each loader declares the files it names in ``properties.models`` (name, url, directory), which the graph
    editor offers to download when a file is missing: the name the widget holds, a Hugging Face URL, the folder the
    loader reads. The demo's files are the pack's own (demo_models/): no URL, its note says where they are."""
    for name in EXAMPLES:
        for node in load_example(name)["nodes"]:
            if node["type"] not in LOADER_FOLDERS:
                continue
            files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")]
            declared = node["properties"].get("models", [])
            assert [m["name"] for m in declared] == files, f"{name}: {node['type']}"
            for model in declared:
                assert model["url"].startswith(DOWNLOAD_HOSTS), f"{name}: {model}"
                assert model["directory"] == LOADER_FOLDERS[node["type"]], f"{name}: {model}"
    demo = load_example(DEMO)
    assert not [n for n in demo["nodes"] if "models" in n["properties"]]
    note = next(n for n in demo["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "demo_models/" in note
    assert "tokenmerge_shapes_sd3_256.safetensors" in note


def test_the_template_browser_gets_every_example_with_its_thumbnail(comfy_server):
    """ComfyUI's template routes: ``/workflow_templates`` names the pack's examples by file name (the template
    browser's titles and descriptions; its A-Z order puts the demo first), and each workflow and its same-name .jpg
    thumbnail are served from the pack's folder."""
    listed = comfy_server.get_json("/workflow_templates")[PACK_DIR_NAME]
    assert sorted(listed) == sorted([*DEMOS, *EXAMPLES])
    assert min(listed) == DEMO
    for name in listed:
        path = f"/api/workflow_templates/{PACK_DIR_NAME}/{urllib.parse.quote(name)}"
        assert json.loads(comfy_server.request(f"{path}.json")) == load_example(name)
        assert comfy_server.request(f"{path}.jpg") == (EXAMPLES_DIR / f"{name}.jpg").read_bytes()


def test_committed_examples_match_their_generator(comfy_server):
    """The files are what ``python -m devkit.example_workflows`` writes (nobody edited one by hand), on the ComfyUI
    release they are generated on; the other tests of this module load and run them on every release."""
    from devkit import EXPECTED_COMFYUI, PINNED_COMFYUI

    if EXPECTED_COMFYUI != PINNED_COMFYUI:
        pytest.skip(
            f"the committed examples are generated on ComfyUI {PINNED_COMFYUI}; {EXPECTED_COMFYUI}'s "
            "object_info adds node outputs (SaveImage IMAGE), so only loading and running them is checked"
        )
    object_info = comfy_server.object_info()
    for name, build in {**EXAMPLES, **DEMOS}.items():
        assert load_example(name) == json.loads(json.dumps(build().ui(object_info))), name


def expected_preview_size(inputs: dict, side: int, steps: int) -> tuple[int, int]:
    from tokenmerge.merging.heatmap import GAP, GLYPH_H, grid_shape, label_scale, tile_size
    from tokenmerge.nodes.preview import select_steps

    shown = len(select_steps(inputs["steps"], list(range(steps))))  # the chosen steps a short run recorded
    assert grid_shape(shown)[0] == 1, "a test run this short shows one row of tiles"
    height, width = tile_size((1, 1), (side, side), shown)
    label = len(f"step {steps}/{steps} sigma 00.00")
    strip = (GLYPH_H + 2) * label_scale(width, label) + 2
    return shown * (width + GAP) - GAP, height + 2 * strip + GAP


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs_on_the_server(comfy_server, pack, name):
    prompt, standin = substitute_standins(ui_to_api(load_example(name), comfy_server.object_info()))
    entry = comfy_server.run(prompt, timeout=600)
    outputs = entry["outputs"]
    for node_id, node in prompt.items():
        if node["class_type"] in SAVE_NODES:
            assert outputs[node_id]["images"], f"{name}: {node['class_type']} {node_id} saved nothing"
        if node["class_type"] == "TokenMergeHeatmapPreview":
            images = outputs[node_id]["images"]
            assert len(images) == 1
            size = png_size(comfy_server.view(images[0]))
            assert size == expected_preview_size(node["inputs"], standin.side, TEST_STEPS), name


def test_every_model_file_an_example_names_has_a_standin(comfy_server):
    object_info = comfy_server.object_info()
    for name in EXAMPLES:
        prompt = ui_to_api(load_example(name), object_info)
        files = {
            n["inputs"].get("ckpt_name") or n["inputs"].get("unet_name")
            for n in prompt.values()
            if n["class_type"] in ("CheckpointLoaderSimple", "UNETLoader")
        }
        assert files <= set(STANDINS), name


def test_live_heatmap_frames_reach_the_preview_node(comfy_server, pack):
    from PIL import Image

    prompt, _ = substitute_standins(ui_to_api(load_example(SD15_PREVIEW), comfy_server.object_info()))
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")
    sampler["inputs"]["seed"] = 4242  # a fresh seed, so the sampler is not served from the cache
    preview_id = next(k for k, n in prompt.items() if n["class_type"] == "TokenMergeHeatmapPreview")
    with ServerEvents(comfy_server.url, comfy_server.client_id) as events:
        comfy_server.run(prompt)
    frames = events.of_type("tokenmerge.heatmap")
    assert [f["step"] for f in frames] == list(range(1, TEST_STEPS + 1))
    assert {f["node"] for f in frames} == {preview_id}
    assert all(f["steps"] == TEST_STEPS and f["sigma"] > 0 for f in frames)
    header = "data:image/png;base64,"
    assert frames[-1]["image"].startswith(header)
    image = Image.open(io.BytesIO(base64.b64decode(frames[-1]["image"][len(header) :])))
    assert max(image.size) == 256
    executed = events.of_type("executed")
    assert any(e["node"] == preview_id and e["output"]["images"] for e in executed)

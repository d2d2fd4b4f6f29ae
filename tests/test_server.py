"""The pack inside a real ComfyUI server: it imports cleanly, its JS is served, workflows run over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest
from conftest import png_size, sd3_prompt

from devkit import REPO_ROOT
from devkit.workflow_api import ui_to_api

pytestmark = pytest.mark.server

TINY_WORKFLOW = REPO_ROOT / "tests" / "workflows" / "tiny_sd15_ibtm_preview.json"  # random stand-ins


def test_server_imports_the_pack_without_errors(comfy_server):
    log = comfy_server.log()
    timings = log.split("Import times for custom nodes:", 1)[1].split("\n\n", 1)[0]
    pack_lines = [line for line in timings.splitlines() if line.rstrip().endswith("/custom_nodes/tokenmerge")]
    assert len(pack_lines) == 1
    assert "IMPORT FAILED" not in pack_lines[0]
    assert not [line for line in log.splitlines() if "Cannot import" in line and "tokenmerge" in line]
    assert "custom_nodes/tokenmerge" not in log.replace(pack_lines[0], "")  # no traceback through the pack


def test_server_serves_the_web_extension(comfy_server):
    assert "/extensions/tokenmerge/tokenmerge.js" in comfy_server.get_json("/extensions")
    script = comfy_server.request("/extensions/tokenmerge/tokenmerge.js").decode()
    assert "app.registerExtension" in script
    assert script == (REPO_ROOT / "web" / "tokenmerge.js").read_text()


def test_object_info_lists_exactly_the_pack_nodes(comfy_server, pack):
    extension = asyncio.run(pack.comfy_entrypoint())
    pack_node_ids = {node.GET_SCHEMA().node_id for node in asyncio.run(extension.get_node_list())}
    served = {
        name for name, info in comfy_server.object_info().items() if info["python_module"] == "custom_nodes.tokenmerge"
    }
    assert served == pack_node_ids
    assert {"TokenMergeImportance", "TokenMergeImportanceAdvanced", "TokenMergeSpatialToMe"} <= served


def test_tiny_workflow_with_the_merging_node_runs_through_prompt(comfy_server):
    prompt = ui_to_api(json.loads(TINY_WORKFLOW.read_text()), comfy_server.object_info())
    assert {"class_type": "TokenMergeImportance", "inputs": {"model": ["1", 0], "ratio": 0.5}} in prompt.values()
    entry = comfy_server.run(prompt)
    log = comfy_server.log()
    assert "tokenmerge: merged" in log  # the end-of-run summary of the patch
    images = {prompt[node]["class_type"]: out["images"] for node, out in entry["outputs"].items()}
    assert len(images["SaveImage"]) == 1
    assert png_size(comfy_server.view(images["SaveImage"][0])) == (256, 256)
    assert len(images["TokenMergeHeatmapPreview"]) == 1  # the importance grid, in the temp folder
    assert images["TokenMergeHeatmapPreview"][0]["type"] == "temp"


def test_prompt_with_a_bad_model_name_is_refused(comfy_server):
    prompt = ui_to_api(json.loads(TINY_WORKFLOW.read_text()), comfy_server.object_info())
    loader = next(node for node in prompt.values() if node["class_type"] == "UNETLoader")
    loader["inputs"]["unet_name"] = "does_not_exist.safetensors"
    with pytest.raises(Exception, match="value_not_in_list"):
        comfy_server.queue(prompt)


def test_make_demo_produces_its_files(tmp_path, standin_models):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--out", str(out), "--real-size-model", "smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for method in ("unmerged", "spatial_tome", "ibtm"):
        assert png_size((out / f"{method}.png").read_bytes()) == (256, 256)  # the 256x256 shapes DiT
    width, height = png_size((out / "side_by_side.png").read_bytes())
    assert width > 4 * 256
    assert height >= 3 * 256  # a row per method, 4 samples each
    timing = (out / "timing.txt").read_text()
    for label in ("unmerged", "spatial ToMe 0.5", "IBTM 0.5"):
        assert re.search(rf"{label}: \d+\.\d\d s", timing), timing
    assert re.search(r"IBTM 0.5: .*\d\.\d\dx vs unmerged", timing)
    # then the real-size timing (here the speed benchmark's smoke model), each figure under the model it is of
    shapes, real = timing.split("real-size model, random weights: ")
    assert "tokenmerge_shapes_sd3_256.safetensors (16x16 = 256 image tokens), 256x256" in shapes
    for label in ("unmerged", "spatial ToMe 0.5", "IBTM 0.5"):
        assert re.search(rf"  {label}: \d+\.\d\d s/step, \d\.\d\dx vs unmerged", real)
    heatmap = png_size((out / "heatmap.png").read_bytes())  # two labelled steps over the first IBTM image
    assert heatmap[0] > 2 * 256
    assert heatmap[1] > 256
    assert f"files in {out}" in done.stdout


@pytest.mark.parametrize(
    ("node", "inputs"),
    [
        ("TokenMergeImportance", {"ratio": 0.5}),
        (
            "TokenMergeSpatialToMe",
            {
                "ratio": 0.5,
                "max_downsample": "auto",
                "window_y": 2,
                "window_x": 2,
                "merge_cross_attention": False,
                "merge_feed_forward": False,
                "seed": 0,
            },
        ),
    ],
)
def test_merging_nodes_run_on_a_dit_through_prompt(comfy_server, node, inputs):
    prompt = sd3_prompt(node, inputs, cfg=4.0, steps=4, width=192, height=128, batch=2)
    before = comfy_server.log().count("tokenmerge: merged")
    entry = comfy_server.run(prompt)
    images = entry["outputs"]["10"]["images"]
    assert len(images) == 2
    assert png_size(comfy_server.view(images[0])) == (192, 128)
    assert comfy_server.log().count("tokenmerge: merged") == before + 1


def test_sdtm_node_runs_through_prompt_at_cfg_one(comfy_server):
    before = comfy_server.log().count("SDTM ran")
    entry = comfy_server.run(
        sd3_prompt("TokenMergeSDTM", {"ratio": 0.4}, cfg=1.0, steps=6, width=128, height=128, batch=1)
    )
    assert len(entry["outputs"]["10"]["images"]) == 1
    assert comfy_server.log().count("SDTM ran") == before + 1  # the run summary of the protected steps


def test_removing_the_merging_node_gives_exactly_the_unpatched_output(comfy_server):
    """Bypass: without the node, with it (merging the feed-forward too), then without it again; the last run is
    recomputed (not served from the cache) and its image is bitwise the first one."""
    base = ui_to_api(json.loads(TINY_WORKFLOW.read_text()), comfy_server.object_info())
    merge_id = next(k for k, n in base.items() if n["class_type"] == "TokenMergeImportance")
    sampler_id = next(k for k, n in base.items() if n["class_type"] == "KSampler")
    save_id = next(k for k, n in base.items() if n["class_type"] == "SaveImage")
    base[sampler_id]["inputs"]["seed"] = 777
    unpatched = {k: n for k, n in base.items() if n["class_type"] != "TokenMergeHeatmapPreview" and k != merge_id}
    unpatched[sampler_id] = {
        **base[sampler_id],
        "inputs": {**base[sampler_id]["inputs"], "model": base[merge_id]["inputs"]["model"]},
    }
    patched = {k: n for k, n in base.items() if n["class_type"] != "TokenMergeHeatmapPreview"}
    patched[merge_id] = {
        "class_type": "TokenMergeImportanceAdvanced",
        "inputs": {
            **base[merge_id]["inputs"],
            "max_downsample": "auto",
            "dst_fraction": 0.25,
            "pool_factor": 1.4,
            "dst_mode": "random",
            "merge_cross_attention": True,
            "merge_feed_forward": True,
            "prune_until": 0.1,
            "start_percent": 0.0,
            "end_percent": 1.0,
            "seed": 0,
        },
    }

    def image_and_cached(prompt: dict) -> tuple[bytes, set]:
        entry = comfy_server.run(prompt)
        cached = {
            node for kind, data in entry["status"]["messages"] if kind == "execution_cached" for node in data["nodes"]
        }
        return comfy_server.view(entry["outputs"][save_id]["images"][0]), cached

    first, _ = image_and_cached(unpatched)
    merged, _ = image_and_cached(patched)
    again, cached = image_and_cached(unpatched)
    assert sampler_id not in cached
    assert merged != first
    assert again == first

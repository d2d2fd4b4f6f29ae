"""The heatmap preview: the recorder (off unless read, bounded), the prompt scan that turns recording on, the labels'
glyphs, and the preview node on UNet, DiT and video models sampled through the real ComfyUI (the pure rendering:
``tests/unit/test_heatmap_rendering.py``)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import sample, state_of

from devkit import tiny_models


@pytest.fixture(scope="module")
def heatmap(pack):
    from tokenmerge.merging import heatmap

    return heatmap


@pytest.fixture(scope="module")
def nodes(pack):
    from tokenmerge.nodes import importance, preview, sdtm

    return importance, sdtm, preview


def test_every_character_of_the_labels_and_legends_has_a_glyph(heatmap, nodes):
    preview = nodes[2]
    labels = [
        preview.step_label(step, steps, sigma)
        for steps in (1, 20, 1000)
        for step in (0, steps - 1)
        for sigma in (0.0, 0.029, 1.0, 14.6146, 80.0, 1234.5)
    ]
    assert labels[0] == "step 1/1 sigma 0.00"
    used = set("".join(labels + list(heatmap.LEGEND_WORDS) + list(heatmap.COLORBAR_WORDS)))
    assert used - set(heatmap._GLYPHS) == set()
    assert all(len(bits) == 15 and set(bits) <= {"0", "1"} for bits in heatmap._GLYPHS.values())
    drawn = [bits for char, bits in heatmap._GLYPHS.items() if char != " "]
    assert "0" * 15 not in drawn
    assert len(set(drawn)) == len(drawn)  # no two characters look the same


# ---------------------------------------------------------------- recorder


@pytest.fixture(scope="module")
def sd15():
    return tiny_models.build_patcher("sd15", seed=0, scale=0.5)


def test_recorder_keeps_nothing_when_no_preview_is_attached(nodes, sd15):
    importance, _sdtm, _ = nodes
    patched = importance.TokenMergeImportance.execute(sd15, 0.5)[0]
    sample(patched, tiny_models.FAMILIES["sd15"], steps=3)
    state = state_of(patched)
    assert not state.recorder.enabled
    assert state.recorder.records == {}
    assert state.recorder.block_order == []
    assert state.counters["maps_captured"] > 0  # IBTM itself still captured its maps


def test_spatial_tome_computes_no_maps_unless_recording(nodes, sd15):
    importance, _, _ = nodes
    patched = importance.TokenMergeSpatialToMe.execute(
        sd15, 0.5, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]
    state = state_of(patched)
    sample(patched, tiny_models.FAMILIES["sd15"], steps=2)
    assert state.counters["maps_captured"] == 0
    assert state.importance is None
    state.recorder.request()
    sample(patched, tiny_models.FAMILIES["sd15"], steps=2)
    assert state.counters["maps_captured"] == 2
    assert len(state.recorder.records) == 2


def test_recorder_stays_bounded_and_spans_a_100_step_run(pack):
    from tokenmerge.patching.recorder import MAX_SIDE, MAX_STEPS, HeatmapRecorder

    recorder = HeatmapRecorder()
    recorder.request()
    recorder.begin_run()
    for step in range(100):
        recorder.add_importance(step, 100, 1.0, torch.rand(2, 128, 96))
        recorder.add_assignment(step, 100, 1.0, ("block", 0), torch.zeros(2, 128, 96, dtype=torch.uint8))
    kept = sorted(recorder.records)
    assert len(kept) <= MAX_STEPS
    assert kept[0] == 0
    assert kept[-1] == 99
    assert max(b - a for a, b in itertools.pairwise(kept)) <= 4
    record = recorder.records[99]
    assert record.importance.shape == (2, MAX_SIDE, 48)
    assert record.importance.dtype == torch.float16
    assert record.assignments["block", 0].shape == (2, MAX_SIDE, 48)


def test_a_run_no_preview_read_turns_recording_off(pack):
    from tokenmerge.patching.recorder import HeatmapRecorder

    recorder = HeatmapRecorder()
    recorder.request({"5": "inferno"})
    for read in (True, False):
        recorder.begin_run()
        assert recorder.enabled
        recorder.add_importance(0, 1, 1.0, torch.rand(1, 4, 4))
        if read:
            assert list(recorder.take()) == [0]
    recorder.begin_run()
    assert not recorder.enabled
    assert recorder.targets == {}


def test_records_of_a_previous_run_are_never_shown(nodes, sd15):
    importance, _, _preview = nodes
    family = tiny_models.FAMILIES["sd15"]
    patched = importance.TokenMergeImportance.execute(sd15, 0.5)[0]
    state_of(patched).recorder.request()
    sample(patched, family, steps=4, height=64, width=64)
    assert sorted(state_of(patched).recorder.take()) == [0, 1, 2, 3]  # read, so the next run records too
    sample(patched, family, steps=2, height=64, width=96)
    records = state_of(patched).recorder.take()
    assert sorted(records) == [0, 1]
    assert all(r.steps == 2 and r.importance.shape == (1, 8, 12) for r in records.values())


# ---------------------------------------------------------------- prompt scan


def test_preview_consumers_follow_the_model_chain(pack):
    from tokenmerge.patching.graph import preview_consumers

    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "x"}},
        "2": {"class_type": "TokenMergeImportance", "inputs": {"model": ["1", 0], "ratio": 0.5}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0], "strength_model": 1.0}},
        "4": {"class_type": "TokenMergeSpatialToMe", "inputs": {"model": ["1", 0], "ratio": 0.5}},
        "5": {
            "class_type": "TokenMergeHeatmapPreview",
            "inputs": {"model": ["3", 0], "images": ["9", 0], "colormap": "viridis"},
        },
        "6": {
            "class_type": "TokenMergeHeatmapPreview",
            "inputs": {"model": ["2", 0], "images": ["9", 0], "colormap": ["8", 0]},
        },
    }
    assert preview_consumers(prompt, "2") == {"5": "viridis", "6": "inferno"}
    assert preview_consumers(prompt, "4") == {}
    assert preview_consumers(None, "2") == {}
    assert preview_consumers(prompt, None) == {}


# ---------------------------------------------------------------- the node


def test_steps_selection(nodes):
    preview = nodes[2]
    for good in ("last", "ALL", "3", "1, 5,10-12"):
        assert preview.check_steps(good) is None, good
    assert "steps='first' is not valid" in preview.check_steps("first")
    assert "empty" in preview.check_steps("5-2")
    assert "start at 1" in preview.check_steps("0")
    assert preview.TokenMergeHeatmapPreview.validate_inputs(steps="x") == preview.check_steps("x")
    assert preview.TokenMergeHeatmapPreview.validate_inputs(steps="all") is True
    recorded = [0, 4, 8, 12]
    assert preview.select_steps("last", recorded) == [12]
    assert preview.select_steps("1,6-7,13", recorded) == [0, 4, 12]  # nearest kept steps, deduplicated


def test_preview_node_has_tooltips_and_is_an_output_node(nodes):
    schema = nodes[2].TokenMergeHeatmapPreview.GET_SCHEMA()
    assert schema.node_id == "TokenMergeHeatmapPreview"
    assert schema.is_output_node
    assert all(inp.tooltip for inp in schema.inputs)


def run_preview(preview, patched, images, steps="all", view="importance", block=0, alpha=0.5):
    return preview.TokenMergeHeatmapPreview.execute(patched, images, steps, "inferno", alpha, view, block)


@pytest.mark.parametrize(
    ("name", "node", "height", "width", "batch"),
    [
        ("sd15", "importance", 64, 96, 2),
        ("sdxl", "importance", 96, 64, 1),
        ("sd3", "sdtm", 64, 96, 2),
        ("flux", "importance", 64, 64, 1),
        ("pixart_alpha", "importance", 256, 320, 1),
        ("wan21", "importance", 64, 96, 1),
    ],
)
def test_preview_renders_every_family(nodes, name, node, height, width, batch):
    importance, sdtm, preview = nodes
    family = tiny_models.FAMILIES[name]
    model = tiny_models.build_patcher(name, seed=0, scale=0.5)
    patched = (importance.TokenMergeImportance if node == "importance" else sdtm.TokenMergeSDTM).execute(model, 0.5)[0]
    state_of(patched).recorder.request()
    sample(patched, family, steps=3, height=height, width=width, batch=batch)
    images = torch.rand(batch * (3 if name == "wan21" else 1), height, width, 3)
    output = run_preview(preview, patched, images)
    grid = output.args[0]
    assert grid.shape[0] == batch
    assert grid.shape[-1] == 3
    assert torch.isfinite(grid).all()
    from tokenmerge.merging.heatmap import GAP, label_scale, label_strip, label_width, tile_size

    records = state_of(patched).recorder.records.values()
    longest = max(len(preview.step_label(r.step, r.steps, r.sigma)) for r in records)
    tile_h, tile_w = tile_size((1, 1), (height, width), len(records))  # the image's aspect, long side 192..256
    assert max(tile_h, tile_w) == min(256, max(192, height, width))
    scale = label_scale(tile_w, longest)
    cell_w = max(tile_w, label_width(longest, scale))  # wider than a portrait tile (sdxl here)
    assert grid.shape[1:3] == (tile_h + label_strip(scale) + GAP + label_strip(scale), 3 * (cell_w + GAP) - GAP)
    assert output.ui is not None
    assert len(output.ui.as_dict()["images"]) == 1  # the node shows the first sample's grid; the output has all
    assignment = run_preview(preview, patched, images, steps="last", view="merge assignment").args[0]
    assert assignment.shape[0] == batch


def test_preview_of_the_last_step_is_the_upscaled_image_with_its_label_and_colour_bar(nodes, sd15):
    importance, _, preview = nodes
    from tokenmerge.merging.heatmap import resize_rgb

    patched = importance.TokenMergeImportance.execute(sd15, 0.5)[0]
    state_of(patched).recorder.request()
    sample(patched, tiny_models.FAMILIES["sd15"], steps=3, height=64, width=96, batch=2)
    images = torch.rand(2, 64, 96, 3)
    grid = run_preview(preview, patched, images, steps="last", alpha=0.0).args[0]
    assert grid.shape[:3] == (2, 128 + 16 + 4 + 16, 192)  # 64 x 96 upscaled to 192 wide; labels at scale 2
    assert torch.equal(grid[:, :128], resize_rgb(images, 128, 192))  # alpha 0: the images themselves


def test_preview_asks_for_recording_and_explains_an_empty_record(nodes, sd15, caplog):
    importance, _, preview = nodes
    patched = importance.TokenMergeImportance.execute(sd15, 0.5)[0]
    sample(patched, tiny_models.FAMILIES["sd15"], steps=2)  # no preview yet: nothing recorded
    images = torch.rand(1, 64, 64, 3)
    with caplog.at_level("WARNING"):
        output = run_preview(preview, patched, images)
    assert output.args[0] is images
    assert "nothing was recorded" in caplog.text
    assert state_of(patched).recorder.enabled  # the next run records
    sample(patched, tiny_models.FAMILIES["sd15"], steps=2)
    assert run_preview(preview, patched, images).args[0].shape[0] == 1


def test_preview_of_an_unpatched_model_passes_images_through(nodes, sd15, caplog):
    images = torch.rand(1, 8, 8, 3)
    with caplog.at_level("WARNING"):
        output = run_preview(nodes[2], sd15, images)
    assert output.args[0] is images
    assert "not patched by a Token Merge node" in caplog.text


def test_assignment_block_out_of_range_names_the_input(nodes, sd15):
    importance, _, preview = nodes
    patched = importance.TokenMergeImportance.execute(sd15, 0.5)[0]
    state_of(patched).recorder.request()
    sample(patched, tiny_models.FAMILIES["sd15"], steps=2)
    blocks = len(state_of(patched).recorder.block_order)
    with pytest.raises(ValueError, match=rf"block=99 is out of range: allowed 0 to {blocks - 1}"):
        run_preview(preview, patched, torch.rand(1, 64, 64, 3), view="merge assignment", block=99)

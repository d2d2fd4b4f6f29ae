"""The heatmap preview: pure rendering (golden values), the recorder (off unless read, bounded), the prompt scan
that turns recording on, and the preview node on UNet, DiT and video models sampled through the real ComfyUI."""

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


def rgb(value: int) -> list[float]:
    return [((value >> shift) & 255) / 255 for shift in (16, 8, 0)]


# ---------------------------------------------------------------- rendering


def test_colormap_endpoints_and_midpoint(heatmap):
    values = torch.tensor([0.0, 1.0, 0.5])
    inferno = heatmap.colorize(values, "inferno")
    assert inferno[0].tolist() == pytest.approx(rgb(0x000004))
    assert inferno[1].tolist() == pytest.approx(rgb(0xFCFFA4))
    gray = heatmap.colorize(values, "gray")
    assert gray[2].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert heatmap.colorize(torch.tensor([-3.0, 7.0]), "gray").tolist() == [[0, 0, 0], [1, 1, 1]]  # clamped


def test_unknown_colormap_is_refused_by_name(heatmap):
    with pytest.raises(ValueError, match="colormap='jet' is unknown: allowed inferno, viridis, gray"):
        heatmap.colorize(torch.zeros(2), "jet")


def test_normalize_is_min_max_per_map_and_zero_for_constant_maps(heatmap):
    maps = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = heatmap.normalize(maps)
    assert out[0].tolist() == [[0.0, 0.25], [0.5, 1.0]]
    assert out[1].abs().sum() == 0


def test_overlay_is_alpha_blend(heatmap):
    heat, image = torch.ones(1, 2, 2, 3), torch.zeros(1, 2, 2, 3)
    assert heatmap.overlay(heat, image, 0.25).unique().tolist() == [0.25]
    assert heatmap.overlay(heat, None, 0.25) is heat


def test_assignment_colours(heatmap):
    categories = torch.tensor([[heatmap.INDEPENDENT, heatmap.MERGED, heatmap.DESTINATION]])
    assert torch.equal(heatmap.assignment_rgb(categories)[0], heatmap.ASSIGNMENT_COLORS)


def test_draw_text_writes_the_glyph_bits(heatmap):
    canvas = torch.zeros(7, 5, 3)
    heatmap.draw_text(canvas, "7", 1, 1, color=(1.0, 1.0, 1.0))
    expected = torch.tensor([int(b) for b in "111001010010010"], dtype=torch.float32).view(5, 3)
    assert torch.equal(canvas[1:6, 1:4, 0], expected)
    assert canvas[0].sum() == 0
    assert canvas[:, 0].sum() == 0
    heatmap.draw_text(canvas, "77777", 3, 5)  # clipped at the canvas border, no error


def test_tile_grid_layout_and_labels(heatmap):
    tiles = torch.stack([torch.full((8, 20, 3), float(i + 1) / 4) for i in range(3)])  # 3 tiles of 8 x 20
    grid = heatmap.tile_grid(tiles, ["1", "2", "3"], columns=2)
    scale = heatmap.label_scale(20, 1)
    strip = (heatmap.GLYPH_H + 2) * scale + 2
    cell_h, cell_w = 8 + strip + heatmap.GAP, 20 + heatmap.GAP
    assert grid.shape == (2 * cell_h - heatmap.GAP, 2 * cell_w - heatmap.GAP, 3)
    for index in range(3):
        top, left = (index // 2) * cell_h, (index % 2) * cell_w
        assert torch.equal(grid[top:top + 8, left:left + 20], tiles[index])
        label = grid[top + 8:top + 8 + strip, left:left + 20]
        assert (label == torch.tensor(heatmap.LABEL_COLOR)).all(-1).any(), f"label {index} missing"
    assert (grid[cell_h:, cell_w:] == heatmap.BACKGROUND).all()  # the empty fourth cell


def test_render_steps_overlays_each_sample_on_its_own_image(heatmap):
    maps = [torch.rand(2, 4, 6), torch.rand(2, 4, 6)]
    images = torch.stack([torch.zeros(12, 18, 3), torch.ones(12, 18, 3)])
    grid = heatmap.render_steps(maps, ["step 1", "step 2"], images=images, alpha=0.0)
    assert grid.shape[0] == 2
    assert torch.equal(grid[0, :12, :18], images[0])
    assert torch.equal(grid[1, :12, :18], images[1])
    heat_only = heatmap.render_steps(maps, ["a", "b"], images=images, alpha=1.0)
    expected = heatmap.resize_rgb(heatmap.colorize(heatmap.normalize(maps[1][:1]), "inferno"), 12, 18)[0]
    left = 18 + heatmap.GAP
    assert torch.allclose(heat_only[0, :12, left:left + 18], expected)


def test_render_steps_tiles_shrink_to_256_when_several_steps_share_the_grid(heatmap):
    images = torch.rand(1, 512, 768, 3)
    one = heatmap.render_steps([torch.rand(1, 8, 12)], ["x"], images=images)
    assert one.shape[1:3] == (512 + (heatmap.GLYPH_H + 2) * 4 + 2, 768)  # one step: full image size
    several = heatmap.render_steps([torch.rand(1, 8, 12)] * 3, ["x"] * 3, images=images)
    assert several.shape[2] == 3 * (256 + heatmap.GAP) - heatmap.GAP


def test_video_images_overlay_the_first_frame_of_each_sample(heatmap):
    frames = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 4, 4, 3) / 6  # 2 samples x 3 frames
    assert torch.equal(heatmap.image_of_sample(frames, 1, 2), frames[3])


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
    patched = importance.TokenMergeSpatialToMe.execute(sd15, 0.5, "auto", 2, 2, merge_cross_attention=False,
                                                       merge_feed_forward=False, seed=0)[0]
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
        "5": {"class_type": "TokenMergeHeatmapPreview", "inputs": {"model": ["3", 0], "images": ["9", 0],
                                                                   "colormap": "viridis"}},
        "6": {"class_type": "TokenMergeHeatmapPreview", "inputs": {"model": ["2", 0], "images": ["9", 0],
                                                                   "colormap": ["8", 0]}},
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


@pytest.mark.parametrize(("name", "node", "height", "width", "batch"), [
    ("sd15", "importance", 64, 96, 2),
    ("sdxl", "importance", 96, 64, 1),
    ("sd3", "sdtm", 64, 96, 2),
    ("flux", "importance", 64, 64, 1),
    ("pixart_alpha", "importance", 256, 320, 1),
    ("wan21", "importance", 64, 96, 1),
])
def test_preview_renders_every_family(nodes, name, node, height, width, batch):
    importance, sdtm, preview = nodes
    family = tiny_models.FAMILIES[name]
    model = tiny_models.build_patcher(name, seed=0, scale=0.5)
    patched = (importance.TokenMergeImportance if node == "importance" else sdtm.TokenMergeSDTM).execute(model,
                                                                                                         0.5)[0]
    state_of(patched).recorder.request()
    sample(patched, family, steps=3, height=height, width=width, batch=batch)
    images = torch.rand(batch * (3 if name == "wan21" else 1), height, width, 3)
    output = run_preview(preview, patched, images)
    grid = output.args[0]
    assert grid.shape[0] == batch
    assert grid.shape[-1] == 3
    assert torch.isfinite(grid).all()
    from tokenmerge.merging.heatmap import GAP, tile_size

    steps = len(state_of(patched).recorder.records)
    _, tile_w = tile_size((1, 1), (height, width), steps)  # the image's aspect ratio, long side <= 256
    assert grid.shape[2] == steps * (tile_w + GAP) - GAP
    assert output.ui is not None
    assert output.ui.as_dict()["images"]
    assignment = run_preview(preview, patched, images, steps="last", view="merge assignment").args[0]
    assert assignment.shape[0] == batch


def test_preview_of_the_last_step_is_the_image_size_with_a_label_strip(nodes, sd15):
    importance, _, preview = nodes
    patched = importance.TokenMergeImportance.execute(sd15, 0.5)[0]
    state_of(patched).recorder.request()
    sample(patched, tiny_models.FAMILIES["sd15"], steps=3, height=64, width=96, batch=2)
    images = torch.rand(2, 64, 96, 3)
    grid = run_preview(preview, patched, images, steps="last", alpha=0.0).args[0]
    assert grid.shape[:3] == (2, 64 + 9, 96)
    assert torch.equal(grid[:, :64], images)  # alpha 0: the images themselves


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


def test_assignment_categories_match_the_plan(pack):
    from tokenmerge.merging.heatmap import DESTINATION, INDEPENDENT, MERGED
    from tokenmerge.merging.plan import MergePlan
    from tokenmerge.patching.recorder import plan_categories

    plan = MergePlan(keep_idx=torch.tensor([[0, 3]]), dst_idx=torch.tensor([[1]]), src_idx=torch.tensor([[2]]),
                     src_to_dst=torch.tensor([[0]]), num_tokens=4)
    assert plan_categories(plan, 1, 1, 2, 2).tolist() == [[[INDEPENDENT, DESTINATION], [MERGED, INDEPENDENT]]]

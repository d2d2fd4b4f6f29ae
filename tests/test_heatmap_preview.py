"""The heatmap preview: pure rendering (golden values), the recorder (off unless read, bounded), the prompt scan
that turns recording on, and the preview node on UNet, DiT and video models sampled through the real ComfyUI."""

from __future__ import annotations

import itertools
import math

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


# Golden grid shapes (rows, columns) and the number of tiles in each row.
GOLDEN_GRIDS = {
    1: (1, 1, [1]),
    2: (1, 2, [2]),
    3: (1, 3, [3]),
    4: (2, 2, [2, 2]),
    5: (2, 3, [3, 2]),
    6: (2, 3, [3, 3]),
    7: (2, 4, [4, 3]),
    9: (3, 3, [3, 3, 3]),
    10: (3, 4, [4, 3, 3]),
    20: (4, 5, [5] * 4),
    26: (5, 6, [6, 5, 5, 5, 5]),
    32: (5, 7, [7, 7, 6, 6, 6]),
}


@pytest.mark.parametrize("count", range(1, 33))
def test_grid_is_square_or_a_bit_wide_and_its_rows_are_filled_evenly(heatmap, count):
    rows, columns = heatmap.grid_shape(count)
    cells = [heatmap.cell_of(index, count) for index in range(count)]
    lengths = [sum(1 for row, _ in cells if row == r) for r in range(rows)]
    assert rows == math.isqrt(count)
    assert rows <= columns <= rows + 2
    assert cells == sorted(set(cells))  # distinct cells in reading order
    assert all(0 <= column < columns for _, column in cells)
    assert set(lengths) <= {columns, columns - 1}  # at most one unused cell per row, at the row's end
    assert lengths == sorted(lengths, reverse=True)
    assert count == 1 or min(lengths) >= 2  # never a lone tile beside empty cells
    if count in GOLDEN_GRIDS:
        assert (rows, columns, lengths) == GOLDEN_GRIDS[count]


def test_tiles_are_readable_and_bounded(heatmap):
    assert heatmap.tile_size((8, 8), (128, 128), 6) == (192, 192)  # the shapes demo: upscaled to MIN_TILE
    assert heatmap.tile_size((8, 12), (64, 96), 3) == (128, 192)
    assert heatmap.tile_size((8, 12), (512, 768), 3) == (171, 256)  # several steps: at most max_tile
    assert heatmap.tile_size((8, 12), (512, 768), 1) == (512, 768)  # one step: the image's own size
    assert heatmap.tile_size((8, 12), (64, 96), 1) == (128, 192)
    assert heatmap.tile_size((8, 12), None, 2) == (171, 256)  # no image: the map's aspect at max_tile
    assert heatmap.tile_size((8, 8), (512, 512), 32) == (216, 216)  # 7 columns within MAX_GRID = 1536
    assert heatmap.tile_size((8, 8), (128, 128), 32) == (192, 192)  # never below MIN_TILE
    for count, side in itertools.product(range(1, 33), (64, 128, 200, 256, 512, 1024)):
        long_side = max(heatmap.tile_size((8, 8), (side, side * 3 // 2), count))
        assert long_side >= heatmap.MIN_TILE
        assert count == 1 or long_side <= 256


def test_labels_are_drawn_at_scale_2_or_more(heatmap):
    assert heatmap.label_scale(192, len("step 20/20 sigma 14.61")) == 2
    assert heatmap.label_scale(10, 30) == 2  # too narrow even at 2: never 1 (the cell widens instead)
    assert heatmap.label_scale(768, len("step 1/1 sigma 14.61")) == 4
    assert heatmap.label_scale(256, len("step 1/3 sigma 1.00")) == 3
    assert all(heatmap.label_scale(width, length) >= 2 for width in range(1, 800, 7) for length in range(1, 40))


def glyph_block(heatmap, text: str, scale: int, width: int) -> torch.Tensor:
    """A label strip ``width`` wide holding ``text`` where the grid draws it: at (scale + 1, scale + 1)."""
    strip = torch.full((heatmap.label_strip(scale), width, 3), heatmap.BACKGROUND)
    heatmap.draw_text(strip, text, scale + 1, scale + 1, scale)
    return strip


def test_tile_grid_layout_labels_and_unused_cells(heatmap):
    tiles = torch.stack([torch.full((8, 40, 3), float(i + 1) / 6) for i in range(5)])  # 5 tiles of 8 x 40
    labels = ["1", "2", "3", "4", "5"]
    grid = heatmap.tile_grid(tiles, labels, 2)
    strip = (heatmap.GLYPH_H + 2) * 2 + 2
    assert strip == heatmap.label_strip(2) == 16
    cell_h, cell_w = 8 + 16 + heatmap.GAP, 40 + heatmap.GAP
    assert grid.shape == (2 * 28 - 4, 3 * 44 - 4, 3) == (52, 128, 3)  # 2 rows of 3 and 2 tiles
    for index, (row, column) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        top, left = row * cell_h, column * cell_w
        assert torch.equal(grid[top : top + 8, left : left + 40], tiles[index])
        assert torch.equal(
            grid[top + 8 : top + 8 + strip, left : left + 40], glyph_block(heatmap, labels[index], 2, 40)
        )
    assert (grid[cell_h:, 2 * cell_w :] == heatmap.BACKGROUND).all()  # the unused sixth cell: background
    gaps = torch.cat([grid[:, 40:44].flatten(), grid[cell_h - 4 : cell_h].flatten()])
    assert (gaps == heatmap.BACKGROUND).all()


def test_a_tile_narrower_than_its_label_is_centred_in_a_wider_cell(heatmap):
    tiles = torch.ones(2, 30, 20, 3)
    grid = heatmap.tile_grid(tiles, ["step 1/2", "step 2/2"], 2)
    cell = heatmap.label_width(8, 2)
    assert cell == (8 * 4 - 1) * 2 + 6 == 68
    assert grid.shape[1] == 2 * (cell + heatmap.GAP) - heatmap.GAP
    inset = (cell - 20) // 2
    assert (grid[:30, inset : inset + 20] == 1).all()
    assert (grid[:30, :inset] == heatmap.BACKGROUND).all()
    assert torch.equal(grid[30:46, :cell], glyph_block(heatmap, "step 1/2", 2, cell))


def six_steps(heatmap, colormap="inferno", samples=1, side=128):
    maps = [torch.rand(samples, 8, 8) if colormap else torch.randint(0, 3, (samples, 8, 8)) for _ in range(6)]
    labels = [f"step {i + 1}/6 sigma {14.6 - 2 * i:.2f}" for i in range(6)]  # 19 or 20 characters
    images = torch.rand(samples, side, side, 3)
    return heatmap.render_steps(maps, labels, images=images, colormap=colormap), labels


def test_golden_size_of_six_steps_on_the_shapes_demo_images(heatmap):
    out, labels = six_steps(heatmap)
    # 2 x 3 tiles of 192 x 192 (128 upscaled), label strips of (5 + 2) * 2 + 2 = 16 under them, 4 pixels apart;
    # then a gap of 4 and the colour bar's line of 16.
    grid_h, grid_w = 2 * (192 + 16 + 4) - 4, 3 * (192 + 4) - 4
    assert (grid_h, grid_w) == (420, 584)
    assert out.shape == (1, 420 + 4 + 16, 584, 3)
    assert torch.equal(out[0, 192:208, :192], glyph_block(heatmap, labels[0], 2, 192))  # scale 2, under tile 1
    assert (out[0, 420 + 2] == heatmap.RULE).all()  # the rule between the grid and the legend


@pytest.mark.parametrize(
    ("count", "side", "expected"),
    [
        (1, 128, (192 + 16 + 4 + 16, 192)),  # one step: upscaled to 192
        (1, 512, (512 + 30 + 4 + 30, 512)),  # one step: the image's size, labels at scale 4 (strip 30)
        (4, 64, (2 * (192 + 16 + 4) - 4 + 4 + 16, 2 * 196 - 4)),  # 2 x 2
        (20, 256, (4 * (256 + 16 + 4) - 4 + 4 + 16, 5 * 260 - 4)),  # 4 x 5 of 256
        (32, 512, (5 * (216 + 16 + 4) - 4 + 4 + 16, 7 * 220 - 4)),  # 5 x 7 of 216: 1536 wide
    ],
)
def test_golden_output_sizes(heatmap, count, side, expected):
    labels = [f"step {i + 1}/{count} sigma 14.61" for i in range(count)]
    out = heatmap.render_steps([torch.rand(1, 4, 4)] * count, labels, images=torch.rand(1, side, side, 3))
    assert out.shape == (1, *expected, 3)


@pytest.mark.parametrize("image_hw", [(128, 128), (512, 768), (768, 512)])
def test_output_stays_within_max_grid_up_to_32_steps(heatmap, image_hw):
    images = torch.rand(1, *image_hw, 3)
    for count in range(2, 33):
        labels = ["x" * 26] * count  # the longest label that never widens a cell past the bound
        out = heatmap.render_steps([torch.rand(1, 4, 4)] * count, labels, images=images)
        rows, _ = heatmap.grid_shape(count)
        assert out.shape[2] <= heatmap.MAX_GRID, count
        assert out.shape[1] <= heatmap.MAX_GRID + (rows + 1) * heatmap.label_strip(2) + heatmap.GAP, count


def test_assignment_view_has_a_legend_of_its_three_colours(heatmap):
    out, _ = six_steps(heatmap, colormap=None)
    assert out.shape == (1, 440, 584, 3)  # the three items fit one line of 16 under the 584-pixel grid
    key = out[0, 424:]
    assert (out[0, 422] == heatmap.RULE).all()
    assert torch.equal(key, heatmap.assignment_legend(584, 2))
    for color, word in zip(heatmap.ASSIGNMENT_COLORS, heatmap.LEGEND_WORDS, strict=True):
        swatch = (key == color).all(-1)
        assert swatch.sum() == 10 * 10, word  # a square of the glyph height at scale 2
        rows, columns = swatch.nonzero().unbind(1)
        words = glyph_block(heatmap, word, 2, 200)[:, 3 : 3 + heatmap.text_width(word, 2)]
        right = int(columns.max()) + 1 + 4  # the word starts 2 * scale after its swatch
        assert torch.equal(key[:, right : right + words.shape[1]], words), word
        assert int(rows.min()) == 3
    assert not any((key == color).all(-1).any() for color in heatmap.colorize(torch.tensor([0.0, 1.0])))


def test_a_narrow_assignment_legend_wraps_onto_a_second_line(heatmap):
    key = heatmap.assignment_legend(192, 2)
    assert key.shape == (32, 192, 3)  # kept and merged fit the first line, destination goes on the second
    destination = (key == heatmap.ASSIGNMENT_COLORS[heatmap.DESTINATION]).all(-1).nonzero()
    assert int(destination[:, 0].min()) == 16 + 3
    assert int(destination[:, 1].min()) == 3


def test_importance_view_has_a_colour_bar_and_no_category_swatches(heatmap):
    out, _ = six_steps(heatmap, colormap="viridis")
    key = out[0, 424:]
    assert torch.equal(key, heatmap.colour_bar("viridis", 584, 2))
    low, high = heatmap.colorize(torch.tensor([0.0, 1.0]), "viridis")
    left = 3 + heatmap.text_width("low", 2) + 4
    assert torch.allclose(key[3:13, left], low.expand(10, 3))
    assert torch.allclose(key[3:13, left + 95], high.expand(10, 3))  # a bar of 48 * 2 pixels
    assert torch.equal(key[:, :left], glyph_block(heatmap, "low", 2, left))
    assert not any((key == color).all(-1).any() for color in heatmap.ASSIGNMENT_COLORS)


def test_each_sample_gets_its_own_image(heatmap):
    out, _ = six_steps(heatmap, samples=4)
    assert out.shape == (4, 440, 584, 3)
    assert not torch.equal(out[0, :192, :192], out[1, :192, :192])


def test_render_steps_overlays_each_sample_on_its_own_image(heatmap):
    maps = [torch.rand(2, 4, 6), torch.rand(2, 4, 6)]
    images = torch.stack([torch.zeros(12, 18, 3), torch.ones(12, 18, 3)])
    grid = heatmap.render_steps(maps, ["step 1", "step 2"], images=images, alpha=0.0)
    assert grid.shape[0] == 2
    assert (grid[0, :128, :192] == 0).all()  # tiles of 128 x 192: the images upscaled
    assert torch.allclose(grid[1, :128, :192], torch.ones(128, 192, 3))
    heat_only = heatmap.render_steps(maps, ["a", "b"], images=images, alpha=1.0)
    expected = heatmap.resize_rgb(heatmap.colorize(heatmap.normalize(maps[1][:1]), "inferno"), 128, 192)[0]
    left = 192 + heatmap.GAP
    assert torch.allclose(heat_only[0, :128, left : left + 192], expected)


def test_render_steps_tiles_shrink_to_256_when_several_steps_share_the_grid(heatmap):
    images = torch.rand(1, 512, 768, 3)
    one = heatmap.render_steps([torch.rand(1, 8, 12)], ["x"], images=images)
    strip = heatmap.label_strip(4)  # one short label on a 768-pixel tile: the largest scale
    assert one.shape[1:3] == (512 + strip + heatmap.GAP + strip, 768)  # one step: full image size
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
    assert output.ui.as_dict()["images"]
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


def test_assignment_categories_match_the_plan(pack):
    from tokenmerge.merging.heatmap import DESTINATION, INDEPENDENT, MERGED
    from tokenmerge.merging.plan import MergePlan
    from tokenmerge.patching.recorder import plan_categories

    plan = MergePlan(
        keep_idx=torch.tensor([[0, 3]]),
        dst_idx=torch.tensor([[1]]),
        src_idx=torch.tensor([[2]]),
        src_to_dst=torch.tensor([[0]]),
        num_tokens=4,
    )
    assert plan_categories(plan, 1, 1, 2, 2).tolist() == [[[INDEPENDENT, DESTINATION], [MERGED, INDEPENDENT]]]

"""Heatmap rendering (``merging/heatmap.py``), pure torch: colour maps, glyphs and labels, the tile grid shaped
for the step count, legends and colour bars, with golden values and sizes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch


@pytest.fixture(scope="module")
def heatmap(pack):
    from tokenmerge.merging import heatmap

    return heatmap


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


def test_assignment_categories_match_the_plan(heatmap):
    from tokenmerge.merging.plan import MergePlan

    INDEPENDENT, MERGED, DESTINATION = heatmap.INDEPENDENT, heatmap.MERGED, heatmap.DESTINATION

    plan = MergePlan(
        keep_idx=torch.tensor([[0, 3]]),
        dst_idx=torch.tensor([[1]]),
        src_idx=torch.tensor([[2]]),
        src_to_dst=torch.tensor([[0]]),
        num_tokens=4,
    )
    assert heatmap.plan_categories(plan, 1, 1, 2, 2).tolist() == [[[INDEPENDENT, DESTINATION], [MERGED, INDEPENDENT]]]

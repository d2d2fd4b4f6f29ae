"""Rendering of importance maps and merge assignments into IMAGE tensors, for the heatmap preview.

The maps are IBTM's importance signal (Wu et al., arXiv 2411.16720, section 3: mean_C |cond - uncond|
of classifier-free guidance per latent position) and the token partition of a merge plan
(``plan.py``: destination / merged / independent, :func:`plan_categories`). Pure torch: a piecewise-linear
colormap, alpha overlay on the decoded image, and a grid of tiles over steps, each with a label drawn in a built-in
3x5 pixel font (no matplotlib, no PIL), and a legend of the colours. The grid is shaped for the step count
(:func:`grid_shape`: square or a little wider, rows filled evenly) and readable (:func:`tile_size`: tiles of at
least 192 pixels on the long side, at most 256 when several steps share the grid; :func:`label_scale`: text at
font scale 2 or more). Images are ComfyUI's layout: ``[B, H, W, 3]`` float in 0..1.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .plan import MergePlan

# 10 evenly spaced samples of each colormap (0 = low importance); values in between are interpolated.
COLORMAPS: dict[str, tuple[int, ...]] = {
    "inferno": (0x000004, 0x1B0C41, 0x4A0C6B, 0x781C6D, 0xA52C60, 0xCF4446, 0xED6925, 0xFB9B06, 0xF7D13D, 0xFCFFA4),
    "viridis": (0x440154, 0x482878, 0x3E4989, 0x31688E, 0x26828E, 0x1F9E89, 0x35B779, 0x6ECE58, 0xB5DE2B, 0xFDE725),
    "gray": (0x000000, 0xFFFFFF),
}

# Colours of a merge assignment, indexed by the categories below.
INDEPENDENT, MERGED, DESTINATION = 0, 1, 2
ASSIGNMENT_COLORS = torch.tensor(
    [
        [0.55, 0.55, 0.55],  # independent: kept, untouched
        [0.12, 0.25, 0.65],  # merged away into a destination
        [1.00, 0.72, 0.10],
    ]
)  # destination: absorbs merged tokens
LEGEND_WORDS = ("kept", "merged", "destination")  # the legend's word for each row of ASSIGNMENT_COLORS
COLORBAR_WORDS = ("low", "high")  # the ends of the importance view's colour bar

BACKGROUND = 0.15  # grey level of the label strips, the legend, the gaps and the unused cells
LABEL_COLOR = (0.92, 0.92, 0.92)
RULE = 0.4  # grey level of the line between the grid and its legend
GAP = 4  # pixels between tiles
MIN_TILE = 192  # readable long side of a tile: smaller images and maps are upscaled to it
MAX_GRID = 1536  # tiles shrink (down to MIN_TILE) so that a row of them fits this many pixels
MIN_LABEL_SCALE, MAX_LABEL_SCALE = 2, 4  # font scales of the labels and the legend

# 3x5 glyphs, one string of 15 bits (rows top to bottom) per character the labels and legends use.
_GLYPHS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
    ".": "000000000000010",
    "/": "001001010100100",
    "-": "000000111000000",
    "=": "000111000111000",
    " ": "000000000000000",
    ":": "000010000010000",
    "a": "000011101101011",
    "b": "100110101101110",
    "c": "000011100100011",
    "d": "001011101101011",
    "e": "000111111100011",
    "g": "011101101011110",
    "h": "100110101101101",
    "i": "010000010010010",
    "k": "100101110101101",
    "l": "100100100100011",
    "m": "000111111101101",
    "n": "000110101101101",
    "o": "000010101101010",
    "p": "000110101110100",
    "r": "000011100100100",
    "s": "000011110001110",
    "t": "010111010010001",
    "w": "000101101111111",
}
GLYPH_W, GLYPH_H = 3, 5


def normalize(maps: torch.Tensor) -> torch.Tensor:
    """[N, H, W] -> [N, H, W] in 0..1, min-max per map (a constant map becomes all zeros)."""
    flat = maps.float().flatten(1)  # [N, H * W]
    low = flat.min(dim=1, keepdim=True).values
    span = (flat.max(dim=1, keepdim=True).values - low).clamp_min(1e-12)
    return ((flat - low) / span).view_as(maps)


def colorize(values: torch.Tensor, colormap: str = "inferno") -> torch.Tensor:
    """Values in 0..1 of any shape ``[...]`` -> RGB ``[..., 3]`` through the named colormap."""
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap={colormap!r} is unknown: allowed {', '.join(COLORMAPS)}")
    stops = (
        torch.tensor([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in COLORMAPS[colormap]], dtype=torch.float32)
        / 255
    )  # [K, 3]
    position = values.float().clamp(0, 1) * (len(stops) - 1)
    low = position.floor().long().clamp(max=len(stops) - 2)
    frac = (position - low).unsqueeze(-1)  # [..., 1]
    return stops[low] * (1 - frac) + stops[low + 1] * frac  # [..., 3]


def plan_categories(plan: MergePlan, samples: int, frames: int, h: int, w: int) -> torch.Tensor:
    """A merge plan of ``samples * frames`` grids -> [samples, h, w] uint8 categories of each sample's first frame."""
    categories = torch.zeros(
        plan.keep_idx.shape[0], plan.num_tokens, dtype=torch.uint8, device=plan.keep_idx.device
    )  # [S * T, n], all independent
    categories.scatter_(1, plan.src_idx, MERGED)
    categories.scatter_(1, plan.dst_idx, DESTINATION)
    return categories.view(samples, frames, h, w)[:, 0].cpu()  # [S * T, n] -> [S, h, w] of frame 0


def assignment_rgb(categories: torch.Tensor) -> torch.Tensor:
    """Category map ``[...]`` (INDEPENDENT / MERGED / DESTINATION) -> RGB ``[..., 3]``."""
    return ASSIGNMENT_COLORS[categories.long()]


def resize_rgb(rgb: torch.Tensor, height: int, width: int, *, smooth: bool = True) -> torch.Tensor:
    """[N, h, w, 3] -> [N, height, width, 3]; bilinear for heatmaps, nearest for category maps."""
    chw = rgb.permute(0, 3, 1, 2)  # [N, h, w, 3] -> [N, 3, h, w]
    if smooth:
        chw = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False)
    else:
        chw = F.interpolate(chw, size=(height, width), mode="nearest")
    return chw.permute(0, 2, 3, 1).clamp(0, 1)  # [N, 3, H, W] -> [N, H, W, 3]


def overlay(heat: torch.Tensor, image: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``alpha * heat + (1 - alpha) * image`` on [N, H, W, 3]; the heat alone when there is no image."""
    if image is None:
        return heat
    return alpha * heat + (1 - alpha) * image.to(heat)


def text_width(text: str, scale: int) -> int:
    return len(text) * (GLYPH_W + 1) * scale - scale


def draw_text(
    canvas: torch.Tensor, text: str, x: int, y: int, scale: int = 1, color: tuple[float, float, float] = LABEL_COLOR
) -> None:
    """Draw ``text`` (lower case, digits and ``. / - = :``) into ``canvas`` [H, W, 3] in place, top-left at (x, y).

    Unknown characters draw as blanks; glyphs that fall outside the canvas are clipped.
    """
    rgb = torch.tensor(color, dtype=canvas.dtype)
    for i, char in enumerate(text.lower()):
        bits = torch.tensor([b == "1" for b in _GLYPHS.get(char, _GLYPHS[" "])]).view(GLYPH_H, GLYPH_W)
        mask = bits.repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # [5s, 3s]
        left = x + i * (GLYPH_W + 1) * scale
        h = max(0, min(mask.shape[0], canvas.shape[0] - y))
        w = max(0, min(mask.shape[1], canvas.shape[1] - left))
        if h and w and left >= 0 and y >= 0:
            region = canvas[y : y + h, left : left + w]
            region[mask[:h, :w]] = rgb


def label_width(length: int, scale: int) -> int:
    """Pixels a label of ``length`` characters needs across: its text and a margin of ``scale + 1`` either side."""
    return text_width("x" * max(1, length), scale) + 2 * (scale + 1)


def label_strip(scale: int) -> int:
    """Height of the strip under a tile that holds its label: the glyphs and ``scale + 1`` pixels above and below."""
    return (GLYPH_H + 2) * scale + 2


def label_scale(tile_width: int, longest_label: int) -> int:
    """The font scale of the labels: the largest of 2..4 at which a label of ``longest_label`` characters fits
    ``tile_width`` (:func:`label_width`), else 2: scale 1 of the 3x5 font is unreadable, so a tile too narrow for
    the label at 2 gets a wider cell instead (see :func:`tile_grid`)."""
    fits = [s for s in range(MIN_LABEL_SCALE, MAX_LABEL_SCALE + 1) if label_width(longest_label, s) <= tile_width]
    return max(fits, default=MIN_LABEL_SCALE)


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of the grid for ``count`` tiles: ``rows = floor(sqrt(count))``, ``columns = ceil(count /
    rows)``, so the grid is square or up to two columns wider than tall (6 -> 2 x 3, 5 -> 2 x 3, 32 -> 5 x 7).

    The tiles fill the rows evenly (:func:`cell_of`): every row holds ``columns`` or ``columns - 1`` tiles, the
    longer rows first, so at most one cell per row is unused and no row is a lone tile beside empty cells.
    """
    rows = max(1, math.isqrt(count))
    return rows, math.ceil(max(1, count) / rows)


def cell_of(index: int, count: int) -> tuple[int, int]:
    """(row, column) of tile ``index`` of ``count``, in reading order over the rows of :func:`grid_shape`: the first
    ``count - rows * (columns - 1)`` rows hold ``columns`` tiles, the others one fewer."""
    rows, columns = grid_shape(count)
    full = count - rows * (columns - 1)  # rows that hold `columns` tiles
    if index < full * columns:
        return divmod(index, columns)
    row, column = divmod(index - full * columns, columns - 1)
    return full + row, column


def tile_grid(tiles: torch.Tensor, labels: list[str], scale: int) -> torch.Tensor:
    """Tiles [T, H, W, 3] with one label each -> one image [H', W', 3] laid out by :func:`grid_shape` and
    :func:`cell_of`: each tile above a strip that holds its label at font ``scale``, cells ``GAP`` pixels apart on
    the background colour, which also fills the unused cells.

    A cell is the tile's width, or the label's when that is wider (a narrow portrait tile): the tile is then
    centred in it. ``H' = rows * (H + strip + GAP) - GAP`` and ``W' = columns * (cell + GAP) - GAP``.
    """
    count, height, width, _ = tiles.shape
    rows, columns = grid_shape(count)
    cell_w = max(width, label_width(max((len(label) for label in labels), default=1), scale))
    cell_h = height + label_strip(scale) + GAP
    canvas = torch.full((rows * cell_h - GAP, columns * (cell_w + GAP) - GAP, 3), BACKGROUND, dtype=tiles.dtype)
    for index in range(count):
        row, column = cell_of(index, count)
        top, left = row * cell_h, column * (cell_w + GAP)
        inset = (cell_w - width) // 2
        canvas[top : top + height, left + inset : left + inset + width] = tiles[index]
        draw_text(canvas, labels[index], left + scale + 1, top + height + scale + 1, scale)
    return canvas


def assignment_legend(width: int, scale: int) -> torch.Tensor:
    """The merge-assignment legend [h, W, 3] under a grid ``width`` pixels wide, text at font ``scale``: a square
    swatch of each colour of ``ASSIGNMENT_COLORS`` and its word of ``LEGEND_WORDS``, left to right, flowing onto
    further lines of ``label_strip(scale)`` pixels when the width is short. ``W = width`` unless one item needs more.
    """
    margin, swatch = scale + 1, GLYPH_H * scale
    sizes = [swatch + 2 * scale + text_width(word, scale) for word in LEGEND_WORDS]
    width = max(width, max(sizes) + 2 * margin)
    places, x, y = [], margin, 0  # top-left of each item's swatch
    for size in sizes:
        if x > margin and x + size + margin > width:
            x, y = margin, y + label_strip(scale)
        places.append((x, y + margin))
        x += size + 3 * (GLYPH_W + 1) * scale  # three characters' room between items
    strip = torch.full((y + label_strip(scale), width, 3), BACKGROUND)
    for color, word, (left, top) in zip(ASSIGNMENT_COLORS, LEGEND_WORDS, places, strict=True):
        strip[top : top + swatch, left : left + swatch] = color
        draw_text(strip, word, left + swatch + 2 * scale, top, scale)
    return strip


def colour_bar(colormap: str, width: int, scale: int) -> torch.Tensor:
    """The importance legend [label_strip(scale), W, 3] under a grid ``width`` pixels wide: "low", a bar of
    ``colormap`` from 0 to 1 (48 * ``scale`` pixels long, down to 16 * ``scale`` when the width is short), "high".
    ``W = width`` unless the shortest bar needs more."""
    margin, space = scale + 1, 2 * scale
    low, high = COLORBAR_WORDS
    words = text_width(low, scale) + text_width(high, scale) + 2 * space + 2 * margin
    bar = max(16 * scale, min(48 * scale, width - words))
    strip = torch.full((label_strip(scale), max(width, words + bar), 3), BACKGROUND)
    draw_text(strip, low, margin, margin, scale)
    left = margin + text_width(low, scale) + space
    strip[margin : margin + GLYPH_H * scale, left : left + bar] = colorize(
        torch.linspace(0, 1, bar), colormap
    )  # [bar, 3]
    draw_text(strip, high, left + bar + space, margin, scale)
    return strip


def stack_rows(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """[h1, w1, 3] above [h2, w2, 3] -> [h1 + GAP + h2, max(w1, w2), 3]: the narrower one padded on the right with
    the background, a rule of ``RULE`` grey across the middle of the ``GAP`` between them."""
    width = max(top.shape[1], bottom.shape[1])
    canvas = torch.full((top.shape[0] + GAP + bottom.shape[0], width, 3), BACKGROUND, dtype=top.dtype)
    canvas[: top.shape[0], : top.shape[1]] = top
    canvas[top.shape[0] + GAP // 2] = RULE
    canvas[top.shape[0] + GAP :, : bottom.shape[1]] = bottom
    return canvas


def tile_size(
    map_hw: tuple[int, int], image_hw: tuple[int, int] | None, count: int, max_tile: int = 256
) -> tuple[int, int]:
    """(height, width) of one of ``count`` tiles, in the image's aspect ratio (the map's without an image).

    The long side is the image's (``max_tile`` without an image), then, when several steps share the grid, at most
    ``max_tile`` and at most what lets a row of the grid's columns fit ``MAX_GRID`` pixels; and finally at least
    ``MIN_TILE``, the readable size: smaller images and maps are upscaled to it. One step keeps a large image's size.
    So the grid of several steps is at most ``MAX_GRID`` pixels wide, and as tall plus a label strip per row (it has
    no more rows than columns), unless its columns of ``MIN_TILE`` tiles need more: from 8 columns (43 steps) on,
    beyond the recorder's 32. Labels of up to 26 characters never widen a cell past these bounds.
    """
    height, width = image_hw or map_hw
    long_side = max(height, width) if image_hw else max_tile
    if count > 1:
        columns = grid_shape(count)[1]
        long_side = min(long_side, max_tile, (MAX_GRID - (columns - 1) * GAP) // columns)
    factor = max(long_side, MIN_TILE) / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def image_of_sample(images: torch.Tensor, sample: int, samples: int) -> torch.Tensor:
    """The decoded image [H, W, 3] that belongs to latent ``sample`` of ``samples``: the same index when the
    counts match, the sample's first frame when each sample decoded to several (video)."""
    count = images.shape[0]
    if count % samples == 0:
        return images[sample * (count // samples)]
    return images[min(sample, count - 1)]


def render_steps(
    maps: list[torch.Tensor],
    labels: list[str],
    *,
    images: torch.Tensor | None = None,
    alpha: float = 0.6,
    colormap: str | None = "inferno",
    max_tile: int = 256,
) -> torch.Tensor:
    """One image per sample: the grid of :func:`tile_grid`, a labelled tile per step (sizes: :func:`tile_size`,
    :func:`label_scale`), above the legend of its colours (:func:`colour_bar` or :func:`assignment_legend`), a
    ``GAP`` apart. Returns ``[B, H', W', 3]``.

    ``maps`` holds one ``[B, h, w]`` map per step: importance values (colour-mapped after per-map min-max
    normalisation; the legend is a colour bar) or, with ``colormap=None``, assignment categories (fixed colours,
    nearest resize; the legend names them). ``images`` ``[N, H, W, 3]`` are laid under the tiles with ``alpha``
    (the heat's weight).
    """
    samples = maps[0].shape[0]
    height, width = tile_size(
        tuple(maps[0].shape[-2:]), None if images is None else tuple(images.shape[1:3]), len(maps), max_tile
    )
    scale = label_scale(width, max((len(label) for label in labels), default=1))
    base = None
    if images is not None:
        chosen = torch.stack([image_of_sample(images, b, samples) for b in range(samples)]).float().cpu()
        base = resize_rgb(chosen, height, width)  # [B, H, W, 3] at the tile size
    grids = []
    for b in range(samples):
        tiles = []
        for step_map in maps:
            if colormap is None:
                rgb = resize_rgb(assignment_rgb(step_map[b : b + 1]), height, width, smooth=False)
            else:
                rgb = resize_rgb(colorize(normalize(step_map[b : b + 1]), colormap), height, width)
            tiles.append(overlay(rgb, None if base is None else base[b : b + 1], alpha)[0])
        grid = tile_grid(torch.stack(tiles), labels, scale)
        key = assignment_legend if colormap is None else partial(colour_bar, colormap)
        grids.append(stack_rows(grid, key(grid.shape[1], scale)))
    return torch.stack(grids)  # [B, H', W', 3]

"""Rendering of importance maps and merge assignments into IMAGE tensors, for the heatmap preview.

The maps are IBTM's importance signal (Wu et al., arXiv 2411.16720, section 3: mean_C |cond - uncond|
of classifier-free guidance per latent position) and the token partition of a merge plan
(``plan.py``: destination / merged / independent). Pure torch: a piecewise-linear colormap, alpha
overlay on the decoded image, and a grid of tiles over steps, each with a label drawn in a built-in
3x5 pixel font (no matplotlib, no PIL). Images are ComfyUI's layout: ``[B, H, W, 3]`` float in 0..1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# 10 evenly spaced samples of each colormap (0 = low importance); values in between are interpolated.
COLORMAPS: dict[str, tuple[int, ...]] = {
    "inferno": (0x000004, 0x1B0C41, 0x4A0C6B, 0x781C6D, 0xA52C60, 0xCF4446, 0xED6925, 0xFB9B06, 0xF7D13D,
                0xFCFFA4),
    "viridis": (0x440154, 0x482878, 0x3E4989, 0x31688E, 0x26828E, 0x1F9E89, 0x35B779, 0x6ECE58, 0xB5DE2B,
                0xFDE725),
    "gray": (0x000000, 0xFFFFFF),
}

# Colours of a merge assignment, indexed by the categories below.
INDEPENDENT, MERGED, DESTINATION = 0, 1, 2
ASSIGNMENT_COLORS = torch.tensor([[0.55, 0.55, 0.55],   # independent: kept, untouched
                                  [0.12, 0.25, 0.65],   # merged away into a destination
                                  [1.00, 0.72, 0.10]])  # destination: absorbs merged tokens

BACKGROUND = 0.08  # grey level of the label strips and the gaps between tiles
LABEL_COLOR = (0.92, 0.92, 0.92)
GAP = 4  # pixels between tiles

# 3x5 glyphs, one string of 15 bits (rows top to bottom) per character the labels use.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "/": "001001010100100",
    "-": "000000111000000", "=": "000111000111000", " ": "000000000000000", ":": "000010000010000",
    "a": "000011101101011", "b": "100110101101110", "c": "000011100100011", "d": "001011101101011",
    "e": "000111111100011", "g": "011101101011110", "i": "010000010010010", "k": "100101110101101",
    "l": "100100100100011", "m": "000111111101101", "n": "000110101101101", "o": "000010101101010",
    "p": "000110101110100", "r": "000011100100100", "s": "000011110001110", "t": "010111010010001",
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
    stops = torch.tensor([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in COLORMAPS[colormap]],
                         dtype=torch.float32) / 255  # [K, 3]
    position = values.float().clamp(0, 1) * (len(stops) - 1)
    low = position.floor().long().clamp(max=len(stops) - 2)
    frac = (position - low).unsqueeze(-1)  # [..., 1]
    return stops[low] * (1 - frac) + stops[low + 1] * frac  # [..., 3]


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


def draw_text(canvas: torch.Tensor, text: str, x: int, y: int, scale: int = 1,
              color: tuple[float, float, float] = LABEL_COLOR) -> None:
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
            region = canvas[y:y + h, left:left + w]
            region[mask[:h, :w]] = rgb


def label_scale(tile_width: int, longest_label: int) -> int:
    """The largest integer font scale (1..4) at which the longest label fits the tile width."""
    fits = tile_width // max(1, text_width("x" * longest_label, 1) + 2)
    return max(1, min(4, fits))


def tile_grid(tiles: torch.Tensor, labels: list[str], columns: int) -> torch.Tensor:
    """Tiles [T, H, W, 3] with one label each -> one image [H', W', 3]: rows of ``columns`` tiles, each
    tile above a strip that holds its label, separated by ``GAP`` pixels of background."""
    count, height, width, _ = tiles.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    scale = label_scale(width, max((len(label) for label in labels), default=1))
    strip = (GLYPH_H + 2) * scale + 2
    cell_h, cell_w = height + strip + GAP, width + GAP
    canvas = torch.full((rows * cell_h - GAP, columns * cell_w - GAP, 3), BACKGROUND, dtype=tiles.dtype)
    for index in range(count):
        top, left = (index // columns) * cell_h, (index % columns) * cell_w
        canvas[top:top + height, left:left + width] = tiles[index]
        draw_text(canvas, labels[index], left + 1, top + height + scale + 1, scale)
    return canvas


def tile_size(map_hw: tuple[int, int], image_hw: tuple[int, int] | None, count: int,
              max_tile: int = 256) -> tuple[int, int]:
    """(height, width) of one tile: the image's size (or the map's aspect at ``max_tile``), shrunk so the long
    side is at most ``max_tile`` when several steps share the grid."""
    height, width = image_hw or (map_hw[0] * max_tile / max(map_hw), map_hw[1] * max_tile / max(map_hw))
    if count > 1 and max(height, width) > max_tile:
        factor = max_tile / max(height, width)
        height, width = height * factor, width * factor
    return max(1, round(height)), max(1, round(width))


def image_of_sample(images: torch.Tensor, sample: int, samples: int) -> torch.Tensor:
    """The decoded image [H, W, 3] that belongs to latent ``sample`` of ``samples``: the same index when the
    counts match, the sample's first frame when each sample decoded to several (video)."""
    count = images.shape[0]
    if count % samples == 0:
        return images[sample * (count // samples)]
    return images[min(sample, count - 1)]


def render_steps(maps: list[torch.Tensor], labels: list[str], *, images: torch.Tensor | None = None,
                 alpha: float = 0.6, colormap: str | None = "inferno", columns: int = 5,
                 max_tile: int = 256) -> torch.Tensor:
    """One grid image per sample: a tile per step, each labelled. Returns ``[B, H', W', 3]``.

    ``maps`` holds one ``[B, h, w]`` map per step: importance values (colour-mapped after per-map min-max
    normalisation) or, with ``colormap=None``, assignment categories (fixed colours, nearest resize).
    ``images`` ``[N, H, W, 3]`` are laid under the tiles with ``alpha`` (the heat's weight).
    """
    samples = maps[0].shape[0]
    height, width = tile_size(tuple(maps[0].shape[-2:]), None if images is None else tuple(images.shape[1:3]),
                              len(maps), max_tile)
    base = None
    if images is not None:
        chosen = torch.stack([image_of_sample(images, b, samples) for b in range(samples)]).float().cpu()
        base = resize_rgb(chosen, height, width)  # [B, H, W, 3] at the tile size
    grids = []
    for b in range(samples):
        tiles = []
        for step_map in maps:
            if colormap is None:
                rgb = resize_rgb(assignment_rgb(step_map[b:b + 1]), height, width, smooth=False)
            else:
                rgb = resize_rgb(colorize(normalize(step_map[b:b + 1]), colormap), height, width)
            tiles.append(overlay(rgb, None if base is None else base[b:b + 1], alpha)[0])
        grids.append(tile_grid(torch.stack(tiles), labels, columns))
    return torch.stack(grids)  # [B, H', W', 3]

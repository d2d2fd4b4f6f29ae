"""Procedural, deterministic scenes for the demo models: 1-3 coloured shapes on a textured background.

A scene is drawn from a seed (:func:`sample_scenes`), rendered in pure torch (:func:`render`) and described
by a prompt in the demo grammar (:mod:`shapes.prompt`). Nothing is stored: the same seed gives the same
scenes, images, masks and prompts on every machine. Each object sits in its own position slot (the four
quadrant centres and the centre, with a little jitter), so a classifier can name the object of each slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokenmerge.shapes.prompt import (
    BACKGROUNDS,
    COLOURS,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    SIZES,
    ObjectPhrase,
    ScenePrompt,
)

SIDE = 128
# Slot centres as fractions of the side (x, y).
SLOT_CENTRES = {
    "top left": (0.26, 0.26),
    "top right": (0.74, 0.26),
    "bottom left": (0.26, 0.74),
    "bottom right": (0.74, 0.74),
    "center": (0.5, 0.5),
}
RADIUS = {"small": 0.11, "large": 0.16}  # half-extent as a fraction of the side
JITTER = 0.03
OBJECT_COUNT_WEIGHTS = (0.5, 0.3, 0.2)  # 1, 2, 3 objects
# Classifier labels per slot: 0 = empty, 1 + shape * len(COLOURS) + colour.
SLOT_CLASSES = 1 + len(SHAPES) * len(COLOURS)


@dataclass(frozen=True)
class PlacedObject:
    """An object with its exact placement (pixels are fractions of the side)."""

    phrase: ObjectPhrase
    cx: float
    cy: float
    radius: float
    angle: float  # rotation of squares, triangles and diamonds, radians

    @property
    def label(self) -> int:
        return 1 + SHAPES.index(self.phrase.shape) * len(COLOURS) + list(COLOURS).index(self.phrase.colour)


@dataclass(frozen=True)
class Scene:
    objects: tuple[PlacedObject, ...]
    background: str
    background_colours: tuple[tuple[float, float, float], tuple[float, float, float]]
    background_angle: float
    background_period: float  # stripe / checker period as a fraction of the side

    @property
    def prompt(self) -> ScenePrompt:
        return ScenePrompt(tuple(o.phrase for o in self.objects), self.background)

    def slot_labels(self) -> torch.Tensor:
        """Classifier target [len(POSITIONS)]: the label of the object in each slot, 0 where empty."""
        labels = torch.zeros(len(POSITIONS), dtype=torch.long)
        for obj in self.objects:
            labels[POSITIONS.index(obj.phrase.position)] = obj.label
        return labels


def _muted(gen: torch.Generator) -> tuple[float, float, float]:
    """A desaturated background colour, so the saturated objects stand out."""
    grey = 0.25 + 0.5 * torch.rand((), generator=gen).item()
    tint = (torch.rand(3, generator=gen) - 0.5) * 0.2
    return tuple(min(max(grey + t, 0.0), 1.0) for t in tint.tolist())


def _choice(seq, gen: torch.Generator):
    return seq[int(torch.randint(len(seq), (), generator=gen))]


def sample_scene(gen: torch.Generator) -> Scene:
    """One random scene from ``gen``."""
    count = int(torch.multinomial(torch.tensor(OBJECT_COUNT_WEIGHTS), 1, generator=gen)) + 1
    slots = torch.randperm(len(POSITIONS), generator=gen)[:count].tolist()
    objects = []
    for slot in slots:
        position = POSITIONS[slot]
        phrase = ObjectPhrase(_choice(list(COLOURS), gen), _choice(SHAPES, gen), position, _choice(SIZES, gen))
        jx, jy = ((torch.rand(2, generator=gen) * 2 - 1) * JITTER).tolist()
        cx, cy = SLOT_CENTRES[position]
        angle = (torch.rand((), generator=gen).item() - 0.5) * 0.6
        objects.append(PlacedObject(phrase, cx + jx, cy + jy, RADIUS[phrase.size], angle))
    return Scene(
        tuple(objects),
        _choice(BACKGROUNDS, gen),
        (_muted(gen), _muted(gen)),
        torch.rand((), generator=gen).item() * math.pi,
        0.08 + 0.1 * torch.rand((), generator=gen).item(),
    )


def sample_scenes(seed: int, count: int) -> list[Scene]:
    """``count`` scenes, fully determined by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return [sample_scene(gen) for _ in range(count)]


def _grid(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # [side, side] each
    return x, y


def _background(scene: Scene, side: int) -> torch.Tensor:
    x, y = _grid(side)
    a, b = (torch.tensor(c).view(3, 1, 1) for c in scene.background_colours)
    u = x * math.cos(scene.background_angle) + y * math.sin(scene.background_angle)
    if scene.background == "plain":
        t = torch.zeros_like(x)
    elif scene.background == "gradient":
        t = (u - u.min()) / (u.max() - u.min())
    elif scene.background == "striped":
        t = (torch.sin(2 * math.pi * u / scene.background_period) > 0).float()
    else:  # checkered, axis-aligned
        t = ((torch.floor(x / scene.background_period) + torch.floor(y / scene.background_period)) % 2).float()
    return a + (b - a) * t  # [3, side, side]


def _signed_distance(obj: PlacedObject, side: int) -> torch.Tensor:
    """Approximate signed distance to the shape's edge, in pixels (negative inside) [side, side]."""
    x, y = _grid(side)
    dx, dy = x - obj.cx, y - obj.cy
    cos, sin = math.cos(obj.angle), math.sin(obj.angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos  # rotated frame
    r = obj.radius
    shape = obj.phrase.shape
    if shape == "circle":
        dist = torch.sqrt(dx * dx + dy * dy) - r
    elif shape == "square":
        dist = torch.maximum(u.abs(), v.abs()) - r * 0.9
    elif shape == "diamond":
        dist = (u.abs() + v.abs()) / math.sqrt(2) - r * 0.8
    else:  # triangle pointing up in its frame: three half-planes
        normals = [(0.0, 1.0), (math.sqrt(3) / 2, -0.5), (-math.sqrt(3) / 2, -0.5)]
        dist = torch.stack([u * nx + v * ny for nx, ny in normals]).amax(0) - r * 0.6
    return dist * side


def render(scenes: list[Scene], side: int = SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 3, side, side] in [0, 1] and object masks [B, MAX_OBJECTS, side, side] (soft, in [0, 1])."""
    images = torch.empty(len(scenes), 3, side, side)
    masks = torch.zeros(len(scenes), MAX_OBJECTS, side, side)
    for i, scene in enumerate(scenes):
        image = _background(scene, side)
        for j, obj in enumerate(scene.objects):
            cover = (0.5 - _signed_distance(obj, side)).clamp(0, 1)  # 1 px anti-aliased edge
            colour = torch.tensor(COLOURS[obj.phrase.colour]).view(3, 1, 1)
            image = image * (1 - cover) + colour * cover
            masks[i, j] = cover
        images[i] = image
    return images, masks

"""Prompt grammar and fixed encoder of the shapes demo models (pure torch, no ComfyUI imports).

Grammar (case and extra spaces ignored)::

    scene  := object (" and " object){0,2} [" on a " background " background"]
    object := ("a" | "an") [size] colour shape " at " position

for example ``a large red circle at top left and a small blue square at center on a striped background``.

Why not a text encoder: SD1.x's stock CLIP-L alone is 246 MB, far over the demo's 60 MB budget, and a
small CLIP cannot be loaded by the stock CLIPLoader (its size is fixed by ComfyUI's config). The demo world
has a closed vocabulary, so each word gets a fixed random vector (seeded, never trained) and the denoisers
learned to read those through cross-attention. Each object is four tokens (size, colour, shape, position),
each the word's vector plus a role vector and an object-slot vector; the background is one more token.
Missing words and the empty prompt are zero tokens; the empty prompt is the unconditional input that
classifier-free guidance needs. The pooled vector (SD3's ``y``) is the mean of the used tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10), "green": (0.15, 0.75, 0.20), "blue": (0.12, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10), "magenta": (0.85, 0.15, 0.85), "cyan": (0.10, 0.85, 0.90),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("plain", "gradient", "striped", "checkered")
MAX_OBJECTS = 3

CONTEXT_DIM = 768  # the SD1.x UNet's cross-attention width (ComfyUI detects SD1.x by it); SD3 demo uses it too
TOKENS_PER_OBJECT = 4
CONTEXT_TOKENS = 16  # 3 objects x 4 tokens + 1 background token, padded
_ROLES = ("size", "colour", "shape", "position", "background")
_SEED = 20261121


@dataclass(frozen=True)
class ObjectPhrase:
    """One object of a prompt; ``size`` is ``None`` when the prompt leaves it open."""

    colour: str
    shape: str
    position: str
    size: str | None = None

    def text(self) -> str:
        words = [self.size] if self.size else []
        words += [self.colour, self.shape]
        article = "an" if words[0][0] in "aeiou" else "a"
        return f"{article} {' '.join(words)} at {self.position}"


@dataclass(frozen=True)
class ScenePrompt:
    """A parsed prompt: 0-3 objects (0 is the empty, unconditional prompt) and an optional background."""

    objects: tuple[ObjectPhrase, ...] = ()
    background: str | None = None

    def text(self) -> str:
        text = " and ".join(obj.text() for obj in self.objects)
        if self.background:
            text += f" on a {self.background} background"
        return text


def _vocabulary_help() -> str:
    return (f"sizes {', '.join(SIZES)}; colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}; "
            f"positions {', '.join(POSITIONS)}; backgrounds {', '.join(BACKGROUNDS)}")


_OBJECT = re.compile(
    rf"an? (?:(?P<size>{'|'.join(SIZES)}) )?(?P<colour>\w+) (?P<shape>\w+) at (?P<position>[a-z ]+?)$")


def parse(text: str) -> ScenePrompt:
    """Parse ``text`` in the demo grammar; a ValueError names the part it cannot read and the vocabulary."""
    clean = " ".join(text.lower().replace(",", " ").split())
    if not clean:
        return ScenePrompt()
    background = None
    match = re.search(r" ?on an? (\w+) background$", clean)
    if match:
        background, clean = match.group(1), clean[: match.start()]
        if background not in BACKGROUNDS:
            raise ValueError(f"prompt: unknown background {background!r}; {_vocabulary_help()}")
    objects = []
    for part in (p for p in clean.split(" and ") if p):
        found = _OBJECT.match(part)
        if not found:
            raise ValueError(f"prompt: cannot read {part!r}; write e.g. 'a large red circle at top left' "
                             f"({_vocabulary_help()})")
        obj = ObjectPhrase(found["colour"], found["shape"], found["position"], found["size"])
        for word, allowed in ((obj.colour, COLOURS), (obj.shape, SHAPES), (obj.position, POSITIONS)):
            if word not in allowed:
                raise ValueError(f"prompt: unknown word {word!r} in {part!r}; {_vocabulary_help()}")
        objects.append(obj)
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"prompt: {len(objects)} objects, at most {MAX_OBJECTS}")
    return ScenePrompt(tuple(objects), background)


def _table() -> dict[str, torch.Tensor]:
    """The fixed vectors: one per word, role and object slot (seeded; identical on every machine)."""
    gen = torch.Generator().manual_seed(_SEED)
    words = [*SIZES, *COLOURS, *SHAPES, *POSITIONS, *BACKGROUNDS]
    table = {f"word:{w}": torch.randn(CONTEXT_DIM, generator=gen) for w in words}
    table |= {f"role:{r}": 0.5 * torch.randn(CONTEXT_DIM, generator=gen) for r in _ROLES}
    table |= {f"slot:{i}": 0.5 * torch.randn(CONTEXT_DIM, generator=gen) for i in range(MAX_OBJECTS)}
    return table


_TABLE = _table()


def encode(prompt: ScenePrompt) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditioning of one prompt: context [CONTEXT_TOKENS, CONTEXT_DIM] and pooled [CONTEXT_DIM] (float32)."""
    context = torch.zeros(CONTEXT_TOKENS, CONTEXT_DIM)
    used = torch.zeros(CONTEXT_TOKENS, dtype=torch.bool)
    for slot, obj in enumerate(prompt.objects):
        for role_index, (role, word) in enumerate(zip(_ROLES, (obj.size, obj.colour, obj.shape, obj.position),
                                                      strict=False)):
            if word is None:
                continue
            row = slot * TOKENS_PER_OBJECT + role_index
            context[row] = _TABLE[f"word:{word}"] + _TABLE[f"role:{role}"] + _TABLE[f"slot:{slot}"]
            used[row] = True
    if prompt.background:
        row = MAX_OBJECTS * TOKENS_PER_OBJECT
        context[row] = _TABLE[f"word:{prompt.background}"] + _TABLE["role:background"]
        used[row] = True
    pooled = context[used].mean(0) if used.any() else torch.zeros(CONTEXT_DIM)
    return context, pooled


def encode_batch(prompts: list[ScenePrompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`encode`: context [B, CONTEXT_TOKENS, CONTEXT_DIM], pooled [B, CONTEXT_DIM]."""
    pairs = [encode(p) for p in prompts]
    return torch.stack([c for c, _ in pairs]), torch.stack([p for _, p in pairs])

"""Prompt grammar and fixed encoder of the shapes demo models (pure torch, no ComfyUI imports).

Grammar (case and extra spaces ignored)::

    scene  := object (" and " object){0,2} [" on a " background " background"]
    object := ("a" | "an") [size] colour shape " at " position

for example ``a large red circle at top left and a small blue square at center on a striped background``.

Why not a text encoder: SD1.x's stock CLIP-L alone is 246 MB, far over the demo's 60 MB budget, and a
small CLIP cannot be loaded by the stock CLIPLoader (its size is fixed by ComfyUI's config). The demo world
has a closed vocabulary, so each word gets a fixed random vector (seeded, never trained) and the denoisers
learned to read those through cross-attention. Each object is **one token**: the normalised sum of its words'
vectors (colour, shape, position and the optional size), so a single cross-attention lookup binds them: an
image location that matches an object's position reads that object's colour and shape from the same token.
(A first design gave every word its own token, tagged with role and object-slot vectors; binding a colour to
its position then took two attention hops, and the models trained on it placed the right colours in the wrong
places.) The background is one more token. Missing objects and the empty prompt are zero tokens; the empty
prompt is the unconditional input that classifier-free guidance needs. The pooled vector (SD3's ``y``) is the
mean of the used tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.12, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.85, 0.15, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("plain", "gradient", "striped", "checkered")
MAX_OBJECTS = 3

CONTEXT_DIM = 768  # the SD1.x UNet's cross-attention width (ComfyUI detects SD1.x by it); SD3 demo uses it too
CONTEXT_TOKENS = MAX_OBJECTS + 1  # one token per object, then the background token
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


def vocabulary_help() -> str:
    return (
        f"sizes {', '.join(SIZES)}; colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}; "
        f"positions {', '.join(POSITIONS)}; backgrounds {', '.join(BACKGROUNDS)}"
    )


_OBJECT = re.compile(rf"an? (?:(?P<size>{'|'.join(SIZES)}) )?(?P<colour>\w+) (?P<shape>\w+) at (?P<position>[a-z ]+?)$")


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
            raise ValueError(f"unknown background {background!r}; {vocabulary_help()}")
    objects = []
    for part in (p for p in clean.split(" and ") if p):
        found = _OBJECT.match(part)
        if not found:
            raise ValueError(f"cannot read {part!r}; write e.g. 'a large red circle at top left' ({vocabulary_help()})")
        obj = ObjectPhrase(found["colour"], found["shape"], found["position"], found["size"])
        for word, allowed in ((obj.colour, COLOURS), (obj.shape, SHAPES), (obj.position, POSITIONS)):
            if word not in allowed:
                raise ValueError(f"unknown word {word!r} in {part!r}; {vocabulary_help()}")
        objects.append(obj)
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"{len(objects)} objects, at most {MAX_OBJECTS}")
    return ScenePrompt(tuple(objects), background)


def _table() -> dict[str, torch.Tensor]:
    """The fixed vectors: one per word (seeded; identical on every machine)."""
    gen = torch.Generator().manual_seed(_SEED)
    words = [*SIZES, *COLOURS, *SHAPES, *POSITIONS, *BACKGROUNDS]
    return {word: torch.randn(CONTEXT_DIM, generator=gen) for word in words}


_TABLE = _table()


def object_token(obj: ObjectPhrase) -> torch.Tensor:
    """The token [CONTEXT_DIM] of one object: its words' vectors summed, scaled back to unit variance."""
    words = [word for word in (obj.colour, obj.shape, obj.position, obj.size) if word is not None]
    return torch.stack([_TABLE[word] for word in words]).sum(0) / len(words) ** 0.5


def encode(prompt: ScenePrompt) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditioning of one prompt: context [CONTEXT_TOKENS, CONTEXT_DIM] and pooled [CONTEXT_DIM] (float32)."""
    context = torch.zeros(CONTEXT_TOKENS, CONTEXT_DIM)
    for row, obj in enumerate(prompt.objects):
        context[row] = object_token(obj)
    if prompt.background:
        context[MAX_OBJECTS] = _TABLE[prompt.background]
    used = context.abs().sum(1) > 0
    pooled = context[used].mean(0) if used.any() else torch.zeros(CONTEXT_DIM)
    return context, pooled


def encode_batch(prompts: list[ScenePrompt]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`encode`: context [B, CONTEXT_TOKENS, CONTEXT_DIM], pooled [B, CONTEXT_DIM]."""
    pairs = [encode(p) for p in prompts]
    return torch.stack([c for c, _ in pairs]), torch.stack([p for _, p in pairs])

"""The robustness matrix's factors, its pairwise cell selection and its entry points (real ComfyUI nodes).

Used by ``tests/test_robustness_matrix.py``; kept apart so the selection can be read (and checked) without
running any sampling.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING, Any

import torch

from devkit import EXPECTED_COMFYUI, PINNED_COMFYUI

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from devkit.tiny_models import TinyFamily

UNET_FAMILIES = ("sd15", "sdxl")
FACTORS: dict[str, tuple[Any, ...]] = {
    "family": ("sd15", "sdxl", "sd3", "flux", "flux2", "pixart_alpha", "zimage", "wan21", "hunyuan_video"),
    "method": ("importance", "tome", "sdtm"),
    "resolution": ("square", "16:9", "9:16", "odd_grid", "tiny"),
    "batch": (1, 2, 3),
    "cfg": ("cfg1", "cfg", "cfg1_no_optimization"),
    "sampler": ("euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc", "lcm"),
    "entry": (
        "ksampler",
        "ksampler_advanced_two_pass",
        "cfg_guider",
        "basic_guider",
        "dual_cfg_guider",
        "perpneg_guider",
        "img2img",
        "area_two_conds",
    ),
}
# Pairs no cell may hold, with the reason: they fail in ComfyUI itself, patched or not.
FORBIDDEN_PAIRS = {
    (("family", "pixart_alpha"), ("resolution", "tiny")): "PixArt's sin-cos position embedding divides by "
    "round(latent side / 64), which is 0 below ~264 px",
}
# Every triple of factor values is in some cell on the release the pack pins; on the newer release the suite also
# runs on, every pair (the pairs hold each family with each entry point, sampler and method; the triples are what
# the pinned run adds, and keep the second release's run within CI's time).
STRENGTH = 3 if EXPECTED_COMFYUI == PINNED_COMFYUI else 2
SEED = 8

# Image sizes in pixels (height, width). "odd_grid": a 17x25 latent (UNets) or a 9x13 / 17x25 token grid (DiTs),
# not divisible by the 2x2 window at any level; "tiny": a 3x3 latent (2x2 DiT tokens): merging switches itself off.
RESOLUTIONS = {"square": (96, 96), "16:9": (72, 128), "9:16": (128, 72), "odd_grid": (136, 200), "tiny": (24, 24)}
# PixArt needs larger sides (see FORBIDDEN_PAIRS) and an even latent (its patch embedding does not pad). Flux 2's
# latent is 1/16 of the image, one token per latent cell: the same odd 9x13 and tiny 2x2 token grids need other sizes.
# HunyuanVideo does not pad an odd latent either (its unpatchify fails, merged or not): even latents of the same
# shapes (10x18 and 18x10 for 16:9 and 9:16; 18x26 and 4x4 for the same 9x13 and 2x2 token grids).
FAMILY_RESOLUTIONS = {
    "pixart_alpha": {"square": (320, 320), "16:9": (288, 512), "9:16": (512, 288), "odd_grid": (272, 400)},
    "flux2": {**RESOLUTIONS, "odd_grid": (144, 208), "tiny": (32, 32)},
    "hunyuan_video": {**RESOLUTIONS, "16:9": (80, 144), "9:16": (144, 80), "odd_grid": (144, 208), "tiny": (32, 32)},
}

STEPS = 4
CFG = 4.0
FRAMES = 5  # Wan: 2 latent frames


Combination = tuple[tuple[str, Any], ...]  # (factor, value) pairs, in FACTORS order


def _forbidden(values: Combination) -> bool:
    return any(pair in FORBIDDEN_PAIRS for pair in itertools.combinations(values, 2))


def cell_combinations(cell: dict[str, Any], strength: int = STRENGTH) -> Iterator[Combination]:
    """The ``strength``-tuples of (factor, value) a cell holds."""
    return itertools.combinations(((name, cell[name]) for name in FACTORS), strength)


def all_combinations(strength: int = STRENGTH) -> set[Combination]:
    """Every ``strength``-tuple of values of different factors that some allowed cell can hold."""
    found = set()
    for names in itertools.combinations(FACTORS, strength):
        for values in itertools.product(*(FACTORS[name] for name in names)):
            combination = tuple(zip(names, values, strict=True))
            if not _forbidden(combination):
                found.add(combination)
    return found


def covering_cells(strength: int = STRENGTH, seed: int = SEED, candidates: int = 48) -> list[dict[str, Any]]:
    """A deterministic covering array of the given strength (greedy, AETG-style): every allowed ``strength``-tuple
    of factor values is in at least one cell. Each new cell fixes the first uncovered tuple of the factors with the
    most value combinations (which bound the number of cells from below: family x sampler x entry point) and takes,
    of ``candidates`` seeded random fillings of the other factors, the one covering the most uncovered tuples."""
    rng = random.Random(seed)
    uncovered = all_combinations(strength)
    cells = []
    while uncovered:
        fixed = min(uncovered, key=lambda values: (-math.prod(len(FACTORS[name]) for name, _ in values), repr(values)))
        best, gain = None, -1
        for _ in range(candidates):
            cell = {name: rng.choice(values) for name, values in FACTORS.items()} | dict(fixed)
            if _forbidden(tuple(cell.items())):
                continue
            covered = sum(combination in uncovered for combination in cell_combinations(cell, strength))
            if covered > gain:
                best, gain = cell, covered
        cells.append(best)
        uncovered -= set(cell_combinations(best, strength))
    return cells


def cell_id(cell: dict[str, Any]) -> str:
    return "-".join(f"b{v}" if k == "batch" else str(v).replace(":", "x") for k, v in cell.items())


def image_size(cell: dict[str, Any]) -> tuple[int, int]:
    return FAMILY_RESOLUTIONS.get(cell["family"], RESOLUTIONS)[cell["resolution"]]


def has_uncond(cell: dict[str, Any]) -> bool:
    """Whether the guider runs an uncond/negative pass (what the importance capture needs)."""
    if cell["entry"] == "basic_guider":
        return False
    return cell["cfg"] != "cfg1" or cell["entry"] == "perpneg_guider"  # PerpNeg with neg_scale 1 always does


# ------------------------------------------------------------------------------------------- entry points
class Inputs:
    """Conditioning and latents of one cell, in the family's shapes."""

    def __init__(self, family: TinyFamily, cell: dict[str, Any]) -> None:
        self.height, self.width = image_size(cell)
        self.latent = family.empty_latent(self.height, self.width, batch=cell["batch"], frames=FRAMES)
        self.positive = family.conditioning(1)
        self.negative = family.conditioning(2)
        self.second = family.conditioning(4)
        self.empty = family.conditioning(5)
        self.cfg = 1.0 if cell["cfg"] in ("cfg1", "cfg1_no_optimization") else CFG

    def area(self) -> list:
        """The third positive cond, restricted to an area 16 px smaller than the image (its own model call)."""
        import nodes

        height, width = max(8, self.height - 16), max(8, self.width - 16)
        return nodes.ConditioningSetArea().append(self.empty, width, height, 0, 0, 1.0)[0]


def _custom_advanced(model, guider, sampler: str, latent: dict) -> torch.Tensor:
    from comfy_extras import nodes_custom_sampler as custom

    sigmas = custom.BasicScheduler.execute(model, "normal", STEPS, 1.0)[0]
    noise = custom.RandomNoise.execute(0)[0]
    return custom.SamplerCustomAdvanced.execute(
        noise, guider, custom.KSamplerSelect.execute(sampler)[0], sigmas, latent
    )[0]["samples"]


def run_entry(model, cell: dict[str, Any], inputs: Inputs, after_pass: Callable[[], None]) -> torch.Tensor:
    """Sample ``model`` through the cell's entry point (the real ComfyUI node classes); ``after_pass`` runs after
    each sampling run (KSamplerAdvanced two-pass: twice)."""
    from comfy_extras import nodes_custom_sampler as custom
    from comfy_extras import nodes_perpneg

    import nodes

    sampler, entry, cfg = cell["sampler"], cell["entry"], inputs.cfg
    latent = {"samples": inputs.latent}
    pos, neg = inputs.positive, inputs.negative
    if entry in ("ksampler", "img2img", "area_two_conds"):
        denoise = 1.0
        if entry == "img2img":
            latent = {"samples": torch.randn(inputs.latent.shape, generator=torch.Generator().manual_seed(3))}
            denoise = 0.5
        if entry == "area_two_conds":
            pos = inputs.positive + inputs.second + inputs.area()
        out = nodes.KSampler().sample(model, 0, STEPS, cfg, sampler, "normal", pos, neg, latent, denoise)[0]
        after_pass()
        return out["samples"]
    if entry == "ksampler_advanced_two_pass":
        first = nodes.KSamplerAdvanced().sample(
            model, "enable", 0, STEPS, cfg, sampler, "normal", pos, neg, latent, 0, STEPS // 2, "enable"
        )[0]
        after_pass()
        second = nodes.KSamplerAdvanced().sample(
            model, "disable", 0, STEPS, cfg, sampler, "normal", pos, neg, first, STEPS // 2, 10000, "disable"
        )[0]
        after_pass()
        return second["samples"]
    guiders = {
        "cfg_guider": lambda: custom.CFGGuider.execute(model, pos, neg, cfg)[0],
        "basic_guider": lambda: custom.BasicGuider.execute(model, pos)[0],
        "dual_cfg_guider": lambda: custom.DualCFGGuider.execute(model, pos, inputs.second, neg, cfg, cfg, "regular")[0],
        "perpneg_guider": lambda: nodes_perpneg.PerpNegGuider.execute(model, pos, neg, inputs.empty, cfg, 1.0)[0],
    }
    out = _custom_advanced(model, guiders[entry](), sampler, latent)
    after_pass()
    return out

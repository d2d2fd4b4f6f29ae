"""The conditions of the quality benchmark (``quality.py``): per model family, unmerged, spatial ToMe, IBTM and SDTM
at each ratio, and the option sweeps, each a :class:`Cell` that patches the loaded model the way a user's node
would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The guidance scale the shapes models draw best at: on the DiT, cfg 3 names 77 % of the objects, cfg 5 57 % (it
# saturates plain backgrounds), cfg 1 74 % (devkit/shapes_training/sanity.py, 2026-11-30).
CFG = 3.0
SIDE = 128
# The benchmark's models: name -> (family, the side in px of the scenes it was trained on and is sampled at).
MODELS = {"sd15": ("sd15", SIDE), "sd3": ("sd3", SIDE), "sd3-256": ("sd3", 256)}


@dataclass(frozen=True)
class Cell:
    """One benchmark condition: a label, its method and ratio, and how to patch the loaded model."""

    name: str
    method: str  # unmerged / tome / ibtm / sdtm
    ratio: float
    patch: Callable[[Any], Any] = field(compare=False)
    preset: bool = False


def _config(method: str, ratio: float, **options):
    from tokenmerge.patching.config import MergeConfig, Method

    return MergeConfig(Method(method), ratio=ratio, **{"max_downsample": 1, **options})


def cells_for(family: str, ratios: tuple[float, ...], quick: bool) -> list[Cell]:
    """The cells of one model: unmerged, methods x ratios, the recommended presets (the Simple nodes), hybrid
    options and IBTM's knobs one at a time. Quick mode adds a second unmerged cell, whose PSNR against the first
    must be infinite.

    On the UNet the Simple nodes at ratio 0.5 are exactly the ``tome 0.5`` / ``ibtm 0.5`` cells (same config),
    so they are marked as the presets there; on the DiT the merging cells cover all blocks, and the Simple nodes
    (IBTM on the middle half of the blocks, SDTM at 0.4) get cells of their own.
    """
    from tokenmerge.nodes.importance import TokenMergeImportance
    from tokenmerge.nodes.sdtm import TokenMergeSDTM
    from tokenmerge.patching.apply import apply_token_merge
    from tokenmerge.patching.config import DstMode, Match

    def merged(method: str, ratio: float, **options) -> Callable[[Any], Any]:
        config = _config(method, ratio, **options)  # validated here, before any sampling
        return lambda model: apply_token_merge(model, config)

    dit = family == "sd3"
    extra = {"block_range": (0.0, 1.0)} if dit else {}
    cells = [Cell("unmerged", "unmerged", 0.0, lambda m: m)]
    if quick:
        cells.append(Cell("unmerged (repeat)", "unmerged", 0.0, lambda m: m))
    for ratio in ratios:
        preset = not dit and ratio == 0.5
        cells.append(
            Cell(f"tome {ratio}", "tome", ratio, merged("tome", ratio, prune_until=0.0, **extra), preset=preset)
        )
        cells.append(Cell(f"ibtm {ratio}", "ibtm", ratio, merged("importance", ratio, **extra), preset=preset))
        if dit:
            # SDTM's ratio is the centre of its schedule: the deviation shrinks near the ceiling (1 - 1/4 windows).
            deviation = round(min(0.2, ratio, 0.75 - ratio), 2)
            cells.append(
                Cell(
                    f"sdtm {ratio}", "sdtm", ratio, merged("sdtm", ratio, deviation=deviation, prune_until=0.0, **extra)
                )
            )
    if quick:
        return cells
    cells.append(Cell("ibtm 0.5 dst top_k", "ibtm", 0.5, merged("importance", 0.5, dst_mode=DstMode.TOP_K, **extra)))
    cells.append(Cell("ibtm 0.5 no prune", "ibtm", 0.5, merged("importance", 0.5, prune_until=0.0, **extra)))
    # Where IBTM trails spatial ToMe: its knobs one at a time at ratio 0.5, on either side of MergeConfig's defaults.
    for option, value in (
        ("pool_factor", 1.0),
        ("pool_factor", 2.0),
        ("dst_fraction", 0.1),
        ("dst_fraction", 0.4),
        ("prune_until", 0.3),
    ):
        cells.append(
            Cell(f"ibtm 0.5 {option} {value}", "ibtm", 0.5, merged("importance", 0.5, **{option: value}, **extra))
        )
    # What a source matches on (issue 30): the features layer-normalised, and (IBTM) the nearest destination.
    for method in ("tome", "importance", *(("sdtm",) if dit else ())):
        label = "ibtm" if method == "importance" else method
        cells.append(
            Cell(
                f"{label} 0.5 match normalized",
                label,
                0.5,
                merged(
                    method,
                    0.5,
                    match=Match.NORMALIZED,
                    **{"prune_until": 0.0} if method != "importance" else {},
                    **extra,
                ),
            )
        )
    cells.append(Cell("ibtm 0.5 match position", "ibtm", 0.5, merged("importance", 0.5, match=Match.POSITION, **extra)))
    cells.append(
        Cell(
            "ibtm 0.5 match position, pool_factor 1.0",
            "ibtm",
            0.5,
            merged("importance", 0.5, match=Match.POSITION, pool_factor=1.0, **extra),
        )
    )
    if not dit:  # the 8x8 blocks too (max_downsample 2): 64 more tokens per block merged
        cells.append(
            Cell("tome 0.5 max_downsample 2", "tome", 0.5, merged("tome", 0.5, prune_until=0.0, max_downsample=2))
        )
        cells.append(Cell("ibtm 0.5 max_downsample 2", "ibtm", 0.5, merged("importance", 0.5, max_downsample=2)))
    if dit:
        cells.append(
            Cell(
                "ibtm preset (Simple node, 0.5)",
                "ibtm",
                0.5,
                lambda m: TokenMergeImportance.execute(m, 0.5).result[0],
                preset=True,
            )
        )
        cells.append(
            Cell(
                "sdtm preset (Simple node, 0.4)",
                "sdtm",
                0.4,
                lambda m: TokenMergeSDTM.execute(m, 0.4).result[0],
                preset=True,
            )
        )
        cells.append(
            Cell(
                "ibtm 0.5 proportional attention",
                "ibtm",
                0.5,
                merged("importance", 0.5, proportional_attention=True, **extra),
            )
        )
        # SDTM's options one at a time at 0.4, on either side of the authors' defaults (protect every 3rd step,
        # cache weight 0.2), then its attention options.
        for options, label in (
            ({"protect_every": 0}, "protect_every 0"),
            ({"protect_every": 6}, "protect_every 6"),
            ({"cache_weight": 0.0}, "cache_weight 0.0"),
            ({"cache_weight": 0.5}, "cache_weight 0.5"),
            ({"proportional_attention": True}, "proportional attention"),
            ({"prompt_scale_structure": 1.5}, "prompt scale 1.5 structure"),
            ({"prompt_scale_structure": 1.5, "prompt_scale_detail": 1.2}, "prompt scale 1.5 / 1.2"),
        ):
            cells.append(
                Cell(
                    f"sdtm 0.4 {label}",
                    "sdtm",
                    0.4,
                    merged("sdtm", 0.4, deviation=0.2, prune_until=0.0, **extra, **options),
                )
            )
    return cells

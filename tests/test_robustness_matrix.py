"""The robustness matrix: every merging node on every tiny family, sampled through real ComfyUI entry points.

Factors (``tests/matrix.py``):

* family: sd15, sdxl (UNets), sd3, flux, flux2, pixart_alpha, zimage, wan21, hunyuan_video (DiTs);
* method: importance, tome, sdtm (SDTM on a UNet must pass through with one warning);
* resolution: square, 16:9, 9:16, an odd token grid not divisible by the 2x2 window (9x13 tokens: a 17x25 latent,
  Flux 2 a 9x13 one), and a tiny 2x2 token grid (a 3x3 latent, Flux 2 a 2x2 one) where merging switches itself off;
* batch 1, 2, 3; cfg 1, cfg 4, cfg 1 with ``disable_cfg1_optimization``;
* sampler: euler, heun, dpmpp_2m, dpmpp_2m_sde, uni_pc, lcm (4 steps);
* entry point: KSampler, KSamplerAdvanced two-pass (steps 0-2 with leftover noise, then 2-4), SamplerCustomAdvanced
  with CFGGuider, BasicGuider, DualCFGGuider and PerpNegGuider, img2img at denoise 0.5, and two positive conds
  plus an area cond.

The full product is 9 x 3 x 5 x 3 x 3 x 6 x 8 = 58,320 cells; the matrix runs a **sampled** subset of 452: a
deterministic 3-wise covering array (greedy, seed 8), so every triple of values of three factors (family x sampler
x entry point, method x resolution x batch, cfg x sampler x entry point, ...) is in at least one cell, and with it
every pair and every single value (family x sampler x entry point alone needs 432 cells). Only (pixart_alpha, tiny)
is left out: PixArt itself cannot sample below ~264 px. ``test_the_matrix_covers_every_triple_of_factor_values``
checks the covering property. On the newer ComfyUI release the suite also runs on, the matrix is pairwise: 72
cells (``STRENGTH``).

Every cell asserts: no exception; a finite latent of the right shape; merging active through the patch state's
counters (by importance where an uncond pass exists, else the family's fallback; ToMe; SDTM stages), with no
warning; or, where merging cannot apply (SDTM on a UNet, the tiny latent), inactive with exactly one warning.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from conftest import merge_with, state_of
from matrix import (
    FACTORS,
    STRENGTH,
    UNET_FAMILIES,
    Inputs,
    all_combinations,
    cell_combinations,
    cell_id,
    covering_cells,
    has_uncond,
    run_entry,
)

from devkit import tiny_models

CELLS = covering_cells()


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {
        name: tiny_models.build_patcher(name, seed=0, scale=0.5 if name in UNET_FAMILIES else 1.0)
        for name in FACTORS["family"]
    }


def pack_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("tokenmerge") and r.levelno >= logging.WARNING]


def test_the_matrix_covers_every_triple_of_factor_values():
    """On the pinned release every triple (452 cells); on the newer release every pair (72; see ``STRENGTH``)."""
    from devkit import EXPECTED_COMFYUI, PINNED_COMFYUI

    assert (3 if EXPECTED_COMFYUI == PINNED_COMFYUI else 2) == STRENGTH
    covered = {combination for cell in CELLS for combination in cell_combinations(cell)}
    assert covered == all_combinations()
    assert {pair for cell in CELLS for pair in cell_combinations(cell, 2)} == all_combinations(2)
    assert not any(cell["family"] == "pixart_alpha" and cell["resolution"] == "tiny" for cell in CELLS)
    # at least family x sampler x entry (432 triples) or family x entry (72 pairs)
    assert len(CELLS) == len({cell_id(cell) for cell in CELLS}) < (460 if STRENGTH == 3 else 80)
    assert covering_cells() == CELLS  # deterministic


def assert_active(cell: dict[str, Any], counters) -> None:
    assert counters["merged_calls"] > 0
    assert counters["skipped"] == 0
    assert counters["tokens_out"] < counters["tokens_in"]
    dit = cell["family"] not in UNET_FAMILIES
    if cell["method"] == "tome":
        assert counters["tome_calls"] == counters["merged_calls"]
    elif cell["method"] == "sdtm":
        assert counters["structure_calls"] + counters["detail_calls"] == counters["merged_calls"]
    elif has_uncond(cell):
        assert counters["maps_captured"] > 0
        assert counters["importance_calls"] > 0  # the map of each step drives the next one
    elif dit:  # no uncond: the x0-change signal
        assert counters["maps_captured"] == 0
        assert counters["fallback_maps"] > 0
    else:  # no uncond on a UNet: spatial ToMe at the same ratio
        assert counters["maps_captured"] == counters["importance_calls"] == 0
        assert counters["tome_calls"] == counters["merged_calls"]


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
def test_matrix_cell(pack, models, cell, caplog):
    family = tiny_models.FAMILIES[cell["family"]]
    base = models[cell["family"]]
    inputs = Inputs(family, cell)
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        patched = merge_with(base, cell["method"], 0.4 if cell["method"] == "sdtm" else 0.5)
        if cell["cfg"] == "cfg1_no_optimization":
            patched = patched.clone()
            patched.model_options["disable_cfg1_optimization"] = True
        passes: list = []
        state = state_of(patched)
        out = run_entry(patched, cell, inputs, lambda: passes.append(None if state is None else state.counters.copy()))

    assert out.shape == inputs.latent.shape
    assert torch.isfinite(out).all()
    warnings = pack_warnings(caplog)
    if cell["method"] == "sdtm" and cell["family"] in UNET_FAMILIES:
        assert state is None  # passed through: the input model itself, unpatched
        assert len(warnings) == 1
        assert "SDTM is for diffusion transformers" in warnings[0]
    elif cell["resolution"] == "tiny":
        assert all(counters["merged_calls"] == 0 and counters["skipped"] > 0 for counters in passes)
        assert len(warnings) == len(passes)  # one per sampling run
        assert all("too small to merge" in message for message in warnings)
    else:
        assert warnings == []
        for counters in passes:
            assert_active(cell, counters)

"""SDTM on the tiny DiTs through the real ComfyUI: stages, ratio schedule, protected steps, cache, nodes."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
from conftest import sample, sdtm_advanced, state_of

from devkit import tiny_models

SD3 = tiny_models.FAMILIES["sd3"]


@pytest.fixture(scope="module")
def sd3():
    return tiny_models.build_patcher("sd3", seed=0)


@pytest.fixture(scope="module")
def nodes(pack):
    from tokenmerge.nodes import sdtm

    return sdtm


def advanced(nodes, model, ratio=0.4, **overrides):
    return sdtm_advanced(model, ratio, **overrides)


def expected_accounting(
    model, steps: int, sampler: str, blocks: int, n: int, windows: int, ratio=0.4, deviation=0.2, switch=0.4, protect=3
):
    """What the patch must do at each model evaluation, from ComfyUI's own schedule (independent of the patch)."""
    import comfy.samplers

    from tokenmerge.merging.sdtm import cosine_ratio

    model_sampling = model.get_model_object("model_sampling")
    schedule = comfy.samplers.calculate_sigmas(model_sampling, "normal", steps).float()
    switch_sigma = float(model_sampling.percent_to_sigma(switch))
    evaluations = []
    for i in range(steps):
        evaluations.append(float(schedule[i]))
        if sampler == "heun" and float(schedule[i + 1]) > 0:
            evaluations.append(float(schedule[i + 1]))  # the corrector, at the next sigma
    counts = {"structure_calls": 0, "detail_calls": 0, "protected_calls": 0, "tokens_out": 0}
    for sigma in evaluations:
        step = int((schedule > sigma * (1 + 1e-4) + 1e-8).sum())
        if step % protect == 0:
            counts["protected_calls"] += blocks
            continue
        r = int(n * cosine_ratio(ratio, deviation, step / steps))
        if sigma > switch_sigma:
            counts["structure_calls"] += blocks
            counts["tokens_out"] += blocks * (n - 3 * min(r // 3, windows))
        else:
            counts["detail_calls"] += blocks
            counts["tokens_out"] += blocks * (n - min(r, n - windows))
    return counts


@pytest.mark.parametrize("steps", [20, 50])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_stage_switch_ratio_schedule_and_protected_steps_follow_the_sigmas(nodes, sd3, steps, sampler):
    patched = advanced(nodes, sd3)
    out = sample(patched, SD3, steps=steps, sampler=sampler, height=128, width=96)  # 8x6 tokens, 12 windows
    counters = state_of(patched).counters
    expected = expected_accounting(sd3, steps, sampler, blocks=2, n=48, windows=12)
    assert torch.isfinite(out).all()
    assert {k: counters[k] for k in expected} == expected
    assert counters["structure_calls"] > 0
    assert counters["detail_calls"] > 0
    assert counters["mlp_calls"] == counters["detail_calls"]  # the detail stage merges only the MLP
    assert counters["fused_calls"] == counters["merged_calls"]  # every merged call blended with the cache


def test_protected_steps_refresh_a_bounded_cache(nodes, sd3, caplog):
    patched = advanced(nodes, sd3, protect_every=2)
    sample(patched, SD3, steps=6, batch=2, height=128, width=96)
    state = state_of(patched)
    rows, tokens, hidden = 4, 48, 128  # cond + uncond of 2 samples, 8x6 tokens, SD3 tiny width
    assert state.counters["protected_calls"] == 2 * 3  # steps 0, 2, 4 on both blocks
    # each protected step keeps only what the merged step after it blends with: the block update before a
    # structure-stage step, the MLP output before a detail-stage step (the last protected step, 4, is one)
    assert state.sdtm.cache_bytes == 2 * rows * tokens * hidden * 4
    assert {entry[0] for entry in state.sdtm.cache} == {"mlp"}
    assert state.counters["cache_peak_bytes"] == state.sdtm.cache_bytes
    tight = advanced(nodes, sd3, protect_every=2, cache_limit_mb=0)
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        sample(tight, SD3, steps=6, batch=2, height=128, width=96)
    assert state_of(tight).sdtm.cache_bytes == 0
    assert state_of(tight).counters["fused_calls"] == 0
    assert len([r for r in caplog.records if "cache_limit_mb=0" in r.getMessage()]) == 1


def test_flux_cache_holds_the_block_update_although_flux_blocks_add_in_place(nodes):
    """Regression: Flux blocks add their update to the input tensor (``img += ...``), so an update taken as
    output minus the (overwritten) input was all zeros and cache fusion blended merged tokens with nothing."""
    flux = tiny_models.build_patcher("flux", seed=0)
    patched = advanced(nodes, flux, switch_percent=1.0)  # the whole run is the structure stage
    sample(patched, tiny_models.FAMILIES["flux"], steps=5, height=64, width=64)  # step 3 protects step 4
    cache = state_of(patched).sdtm.cache
    blocks = [update for entry, update in cache.items() if entry[0] == "block"]
    assert len(blocks) == 2  # the double and the single block
    assert all(update.abs().amax() > 0 for update in blocks)


@pytest.mark.parametrize(
    "name",
    ["sd3", "flux", "chroma", "flux2", "qwen_image", "pixart_alpha", "lumina2", "zimage", "wan21", "hunyuan_video"],
)
@pytest.mark.parametrize("batch", [1, 2])
def test_sdtm_simple_node_runs_on_each_dit(nodes, name, batch):
    family = tiny_models.FAMILIES[name]
    model = tiny_models.build_patcher(name, seed=0)
    side = max(family.min_side, 64)
    patched = nodes.TokenMergeSDTM.execute(model, 0.4)[0]
    first = sample(patched, family, steps=8, height=side, width=side + 48, batch=batch, frames=9)
    counters = state_of(patched).counters.copy()
    again = sample(patched, family, steps=8, height=side, width=side + 48, batch=batch, frames=9)
    assert first.shape == family.empty_latent(side, side + 48, batch, frames=9).shape
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert counters["structure_calls"] > 0
    assert counters["detail_calls"] > 0
    assert counters["protected_calls"] > 0
    assert counters["skipped"] == 0


def test_importance_anchored_detail_stage(nodes, sd3):
    patched = advanced(nodes, sd3, detail_destination="importance")
    out = sample(patched, SD3, steps=8, height=128, width=96)
    state = state_of(patched)
    assert torch.isfinite(out).all()
    assert state.counters["maps_captured"] == 8
    assert state.counters["detail_calls"] > 0


def test_sdtm_on_a_unet_passes_through_with_one_warning(nodes, caplog):
    unet = tiny_models.build_patcher("sd15")
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        assert nodes.TokenMergeSDTM.execute(unet, 0.4)[0] is unet
    assert len([r for r in caplog.records if "SDTM is for diffusion transformers" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"ratio": 0.6},
            (
                r"ratio=0.6 is out of range: allowed 0.0 to 0.55 \(at most 1 - 1/\(window_y\*window_x\) with "
                r"window_y=2, window_x=2, minus deviation=0.2\)"
            ),
        ),
        ({"deviation": 0.3, "ratio": 0.2}, r"deviation=0.3 is out of range: allowed 0.0 to ratio=0.2"),
        ({"cache_weight": 1.5}, r"cache_weight=1.5 is out of range: allowed 0.0 to 1.0"),
        ({"switch_percent": -0.1}, r"switch_percent=-0.1 is out of range: allowed 0.0 to 1.0"),
    ],
)
def test_out_of_range_sdtm_settings_are_refused(nodes, sd3, overrides, message):
    ratio = overrides.pop("ratio", 0.4)
    with pytest.raises(ValueError, match=message):
        advanced(nodes, sd3, ratio, **overrides)


def test_cosine_schedule_reaches_both_ends_over_a_run(pack):
    from tokenmerge.merging.sdtm import cosine_ratio

    ratios = [cosine_ratio(0.4, 0.2, i / 19) for i in range(20)]
    assert ratios[0] == pytest.approx(0.6)
    assert ratios[-1] == pytest.approx(0.2)
    assert all(a > b for a, b in itertools.pairwise(ratios))
    assert not math.isnan(sum(ratios))

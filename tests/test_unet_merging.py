"""Importance merging and spatial ToMe on the tiny SD1.x and SDXL UNets, sampled through the real ComfyUI."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import enter_call, sample, state_of

from devkit import tiny_models

SD15 = tiny_models.FAMILIES["sd15"]
SDXL = tiny_models.FAMILIES["sdxl"]


@pytest.fixture(scope="module")
def sd15():
    return tiny_models.build_patcher("sd15", seed=0, scale=0.5)


@pytest.fixture(scope="module")
def sdxl():
    return tiny_models.build_patcher("sdxl", seed=0, scale=0.5)


@pytest.fixture(scope="module")
def nodes(pack):
    from tokenmerge.nodes import importance

    return importance


def importance_model(nodes, model, ratio=0.5, **overrides):
    settings = {
        "max_downsample": "auto",
        "dst_fraction": 0.25,
        "pool_factor": 1.4,
        "dst_mode": "random",
        "merge_cross_attention": False,
        "merge_feed_forward": False,
        "prune_until": 0.1,
        "start_percent": 0.0,
        "end_percent": 1.0,
        "seed": 0,
        **overrides,
    }
    return nodes.TokenMergeImportanceAdvanced.execute(model, ratio, **settings)[0]


def tome_model(nodes, model, ratio=0.5, window=(2, 2)):
    return nodes.TokenMergeSpatialToMe.execute(
        model, ratio, "auto", *window, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


def test_nodes_have_prefixed_ids_and_a_tooltip_on_every_input(nodes):
    for node in nodes.NODES:
        schema = node.GET_SCHEMA()
        assert schema.node_id.startswith("TokenMerge")
        assert schema.category == "tokenmerge"
        assert all(inp.tooltip for inp in schema.inputs), schema.node_id


def test_ratio_zero_returns_the_input_model_and_identical_latents(nodes, sd15):
    assert nodes.TokenMergeImportance.execute(sd15, 0.0)[0] is sd15
    assert tome_model(nodes, sd15, 0.0) is sd15
    plain = sample(sd15, SD15, steps=3)
    again = sample(nodes.TokenMergeImportance.execute(sd15, 0.0)[0], SD15, steps=3)
    assert torch.equal(plain, again)


def test_importance_merging_changes_the_result_a_little_and_deterministically(nodes, sd15):
    plain = sample(sd15, SD15, steps=6, height=96, width=128)
    patched = nodes.TokenMergeImportance.execute(sd15, 0.5)[0]
    first = sample(patched, SD15, steps=6, height=96, width=128)
    counters = state_of(patched).counters.copy()
    second = sample(patched, SD15, steps=6, height=96, width=128)
    assert torch.isfinite(first).all()
    assert not torch.equal(first, plain)
    assert relative_difference(first, plain) < 0.25
    assert torch.equal(first, second)
    assert counters["maps_captured"] == 6
    assert counters["importance_calls"] > 0  # from step 1 on, the map of the previous step drives merging
    assert counters["tome_calls"] > 0  # step 0 has no map yet: spatial ToMe (pruning)
    assert counters["prune_calls"] > 0
    assert counters["tokens_out"] == pytest.approx(counters["tokens_in"] * 0.5, rel=0.05)


def test_captured_map_is_the_cfg_difference_of_the_same_model_call(nodes, sd15):
    patched = nodes.TokenMergeImportance.execute(sd15, 0.5)[0]
    seen = {}

    def record(args):  # a second post-CFG function, after ours: sees the same model call
        seen.update(
            cond=args["cond_denoised"].clone(), uncond=args["uncond_denoised"].clone(), sigma=args["sigma"].clone()
        )
        return args["denoised"]

    patched.set_model_sampler_post_cfg_function(record)
    sample(patched, SD15, steps=3, batch=2)
    expected = (seen["cond"] - seen["uncond"]).abs().mean(dim=1) / seen["sigma"].view(-1, 1, 1)
    assert torch.allclose(state_of(patched).importance, expected)
    assert state_of(patched).importance.shape == (2, 8, 8)


def test_cfg_one_falls_back_to_spatial_tome_with_one_log_line(nodes, sd15, caplog):
    patched = nodes.TokenMergeImportance.execute(sd15, 0.5)[0]
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        out = sample(patched, SD15, steps=4, cfg=1.0)
    counters = state_of(patched).counters
    assert torch.isfinite(out).all()
    assert counters["importance_calls"] == 0
    assert counters["tome_calls"] > 0
    assert state_of(patched).no_uncond
    assert len([r for r in caplog.records if "no uncond pass" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("height", "width", "batch", "kwargs"),
    [
        (72, 128, 1, {}),  # 16:9 latent 9x16, not divisible by the 2x2 window
        (128, 72, 2, {}),  # 9:16
        (104, 88, 3, {}),  # 13x11 latent, odd at every level
        (64, 64, 2, {"sampler": "heun"}),
        (64, 64, 1, {"start_step": 1, "last_step": 3}),  # KSamplerAdvanced slice
        (64, 64, 2, {"denoise": 0.5}),
    ],
)
def test_importance_merging_runs_on_odd_shapes_batches_and_samplers(nodes, sd15, height, width, batch, kwargs):
    patched = nodes.TokenMergeImportance.execute(sd15, 0.5)[0]
    steps = 4
    out = sample(patched, SD15, steps=steps, height=height, width=width, batch=batch, **kwargs)
    assert out.shape == SD15.empty_latent(height, width, batch).shape
    assert torch.isfinite(out).all()
    counters = state_of(patched).counters
    assert counters["merged_calls"] > 0
    assert counters["importance_calls"] > 0
    assert counters["skipped"] == 0


def test_sdxl_preset_merges_at_downsample_two_where_its_attention_starts(nodes, sdxl):
    auto = nodes.TokenMergeImportance.execute(sdxl, 0.5)[0]
    assert auto.get_attachment is not None
    out = sample(auto, SDXL, steps=3, height=128, width=96)
    assert torch.isfinite(out).all()
    assert state_of(auto).counters["merged_calls"] > 0
    full_res_only = importance_model(nodes, sdxl, max_downsample="1")
    sample(full_res_only, SDXL, steps=3, height=128, width=96)
    assert state_of(full_res_only).counters["merged_calls"] == 0  # no attention at full resolution


def test_cross_attention_and_feed_forward_options_merge_more(nodes, sd15):
    attn_only = sample(importance_model(nodes, sd15), SD15, steps=3)
    patched = importance_model(nodes, sd15, merge_cross_attention=True, merge_feed_forward=True)
    everything = sample(patched, SD15, steps=3)
    counters = state_of(patched).counters
    assert torch.isfinite(everything).all()
    assert not torch.equal(attn_only, everything)
    assert counters["ff_calls"] == counters["merged_calls"] > 0  # every merged block also merged its FF


def test_spatial_tome_node_merges_with_the_same_code_path(nodes, sd15):
    patched = tome_model(nodes, sd15)
    out = sample(patched, SD15, steps=3, height=72, width=128)
    counters = state_of(patched).counters
    assert torch.isfinite(out).all()
    assert counters["tome_calls"] == counters["merged_calls"] > 0
    assert counters["importance_calls"] == counters["prune_calls"] == 0


def test_two_patched_clones_keep_separate_state(nodes, sd15):
    first = nodes.TokenMergeImportance.execute(sd15, 0.5)[0]
    second = nodes.TokenMergeImportance.execute(sd15, 0.3)[0]
    sample(first, SD15, steps=2)
    assert state_of(second).counters["merged_calls"] == 0
    assert state_of(first) is not state_of(second)
    assert state_of(first.clone()) is state_of(first)  # a downstream clone (e.g. a LoRA loader) shares it


def test_unsupported_family_passes_through_with_one_warning(nodes, caplog):
    aura = tiny_models.build_patcher(tiny_models.UNSUPPORTED_FAMILY)
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        assert nodes.TokenMergeImportance.execute(aura, 0.5)[0] is aura
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "tokenmerge: AuraFlow models are not supported by this node yet; the model passes through unpatched"
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"ratio": 0.8},
            (
                r"ratio=0.8 is out of range: allowed 0.0 to 0.75 \(at most 1 - dst_fraction with "
                r"dst_fraction=0.25\)"
            ),
        ),
        ({"ratio": 0.6, "dst_fraction": 0.5}, r"ratio=0.6 is out of range: allowed 0.0 to 0.5"),
        ({"pool_factor": 0.9}, r"pool_factor=0.9 is out of range: allowed 1.0 to 4.0"),
        ({"start_percent": 0.6, "end_percent": 0.4}, r"start_percent=0.6 must be below end_percent=0.4"),
        ({"prune_until": 1.5}, r"prune_until=1.5 is out of range: allowed 0.0 to 1.0"),
    ],
)
def test_out_of_range_settings_are_refused_before_sampling(nodes, sd15, overrides, message):
    ratio = overrides.pop("ratio", 0.5)
    with pytest.raises(ValueError, match=message):
        importance_model(nodes, sd15, ratio, **overrides)


def test_tome_ratio_limit_follows_the_window(nodes, sd15):
    with pytest.raises(ValueError, match=r"ratio=0.6 is out of range: allowed 0.0 to 0.5 \(at most 1 - 1/"):
        tome_model(nodes, sd15, 0.6, window=(1, 2))


def test_cond_and_uncond_rows_of_a_sample_share_one_partition(pack):
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.state import MergeState
    from tokenmerge.patching.unet import PLAN_KEY, UNetMerger

    merger = UNetMerger(MergeConfig(Method.TOME, ratio=0.5, max_downsample=1), MergeState())
    enter_call(merger, [6, 4, 8, 8], cond_or_uncond=[1, 0, 0])
    n = torch.randn(6, 64, 8)  # 3 chunks (uncond, cond, cond) x 2 samples, an 8x8 grid
    extra = {"original_shape": [6, 4, 8, 8], "cond_or_uncond": [1, 0, 0], "block": ("input", 1), "block_index": 0}
    merged, k, v = merger.attn1_patch(n, n, n, extra)
    plan = extra[PLAN_KEY].plan
    assert merged.shape == (6, 32, 8)
    assert merged is k is v
    for sample_index in range(2):
        rows = [sample_index, 2 + sample_index, 4 + sample_index]
        for indices in (plan.dst_idx, plan.src_idx, plan.keep_idx, plan.src_to_dst):
            assert all(torch.equal(indices[rows[0]], indices[row]) for row in rows[1:])
    assert merger.attn1_output_patch(merged, extra).shape == (6, 64, 8)


def test_step_position_counts_heun_midpoints_as_the_next_step(pack):
    from tokenmerge.patching.steps import step_position

    schedule = torch.tensor([10.0, 5.0, 2.0, 0.0])
    assert step_position({"sample_sigmas": schedule, "sigmas": torch.tensor([10.0])}) == (0, 0.0)
    assert step_position({"sample_sigmas": schedule, "sigmas": torch.tensor([5.0])}) == (1, pytest.approx(1 / 3))
    assert step_position({"sample_sigmas": schedule, "sigmas": torch.tensor([2.0])})[0] == 2
    assert step_position({}) == (0, 0.0)


def test_two_positive_conds_and_an_area_cond_keep_merging(nodes, sd15, caplog):
    import nodes as comfy_nodes

    area = comfy_nodes.ConditioningSetArea().append(SD15.conditioning(3), 32, 32, 0, 0, 1.0)[0]
    positive = SD15.conditioning(1) + SD15.conditioning(4) + area  # two full-size conds and a 4x4 latent area
    patched = nodes.TokenMergeImportance.execute(sd15, 0.5)[0]
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        out = sample(patched, SD15, steps=4, batch=2, positive=positive)
    counters = state_of(patched).counters
    assert torch.isfinite(out).all()
    assert counters["importance_calls"] > 0  # the full-size calls, three chunks of two rows
    assert counters["skipped"] == 0
    assert len([r for r in caplog.records if "does not match the call's latent" in r.getMessage()]) == 1


def test_cond_and_uncond_in_separate_calls_get_the_same_destinations(pack):
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.state import MergeState
    from tokenmerge.patching.unet import PLAN_KEY, UNetMerger

    state = MergeState()
    state.importance = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    merger = UNetMerger(MergeConfig(Method.IMPORTANCE, ratio=0.5, max_downsample=1), state)
    timing = {"sample_sigmas": torch.tensor([10.0, 5.0, 1.0, 0.0]), "sigmas": torch.tensor([5.0, 5.0])}
    plans = {}
    for chunk in (1, 0):  # memory split: uncond first, then cond
        n = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(chunk))
        extra = {
            "original_shape": [2, 4, 8, 8],
            "cond_or_uncond": [chunk],
            "block": ("input", 1),
            "block_index": 0,
            **timing,
        }
        enter_call(merger, [2, 4, 8, 8], 5.0, [10.0, 5.0, 1.0, 0.0], [chunk])
        merger.attn1_patch(n, n, n, extra)
        plans[chunk] = extra[PLAN_KEY].plan
    assert torch.equal(plans[0].dst_idx, plans[1].dst_idx)
    assert state.counters["importance_calls"] == 2


def test_calls_split_by_memory_pool_the_step_map_once(pack):
    """Cond and uncond in separate model calls of one step reuse the importance map pooled to the token grids;
    a new map is pooled anew."""
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.state import MergeState
    from tokenmerge.patching.unet import UNetMerger

    state = MergeState()
    state.importance = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    merger = UNetMerger(MergeConfig(Method.IMPORTANCE, ratio=0.5, max_downsample=1), state)
    enter_call(merger, [2, 4, 8, 8], 5.0, [10.0, 5.0, 1.0, 0.0], [1])
    uncond = state.call.importance
    enter_call(merger, [2, 4, 8, 8], 5.0, [10.0, 5.0, 1.0, 0.0], [0])
    assert state.call.importance is uncond
    assert set(uncond) == {(8, 8)}
    state.importance = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
    enter_call(merger, [2, 4, 8, 8], 1.0, [10.0, 5.0, 1.0, 0.0], [0])
    assert state.call.importance is not uncond
    assert not torch.equal(state.call.importance[(8, 8)].grid, uncond[(8, 8)].grid)

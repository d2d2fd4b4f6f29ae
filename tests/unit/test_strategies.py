"""One strategy per merging method (``patching/strategies.py``), with torch alone: which strategy each method gets,
what it asks of the rest of the pack, and the partition each builds for one block call."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def s(pack):
    from tokenmerge.patching import config, model_call, state, strategies

    return type("S", (), {"config": config, "model_call": model_call, "state": state, "strategies": strategies})


def tokens(s, call, h=4, w=4, r=6, rows=1, seed=3):
    metric = torch.randn(rows, h * w, 8, generator=torch.Generator().manual_seed(0))
    return s.strategies.BlockTokens(call, metric, h, w, r, torch.tensor(seed))


def config(s, method, **fields):
    return s.config.MergeConfig(s.config.Method[method], ratio=0.4, max_downsample=1, **fields)


def test_each_method_gets_its_strategy_and_says_what_it_needs(s):
    state = s.state.MergeState()
    cases = [
        ("IMPORTANCE", {}, "ImportanceStrategy", True, False),
        ("TOME", {}, "ToMeStrategy", False, False),
        ("SDTM", {}, "SDTMStrategy", False, True),
        ("SDTM", {"detail_destination": s.config.DetailDestination.IMPORTANCE}, "SDTMStrategy", True, True),
    ]
    for method, fields, name, uses_importance, blends_cache in cases:
        strategy = s.strategies.strategy_for(config(s, method, **fields), state)
        assert type(strategy).__name__ == name
        assert (strategy.uses_importance, strategy.blends_cache) == (uses_importance, blends_cache)


def test_tome_merges_exactly_r_tokens_and_counts_its_call(s):
    state = s.state.MergeState()
    strategy = s.strategies.strategy_for(config(s, "TOME"), state)
    part = strategy.partition(tokens(s, s.model_call.ModelCall((1, 4, 4, 4))))
    assert part.plan.src_idx.shape == (1, 6)
    assert part.plan.num_out == 16 - 6
    assert (part.mlp_only, part.text_scale) == (False, 1.0)
    assert state.counters["tome_calls"] == 1


def test_importance_falls_back_to_tome_before_the_first_map_then_merges_the_least_important(s):
    state = s.state.MergeState()
    strategy = s.strategies.strategy_for(config(s, "IMPORTANCE", prune_until=0.0, pool_factor=1.0), state)
    call = s.model_call.ModelCall((1, 4, 4, 4))
    assert strategy.partition(tokens(s, call)) is not None
    assert state.counters["tome_calls"] == 1
    importance = torch.arange(16.0).view(1, 4, 4)  # token 15 the most important
    call = s.model_call.ModelCall((1, 4, 4, 4), importance={(4, 4): s.model_call.grid_importance(importance, 4, 4)})
    part = strategy.partition(tokens(s, call))
    assert state.counters["importance_calls"] == 1
    assert set(part.plan.src_idx[0].tolist()) == set(range(6))  # pool factor 1: exactly the 6 least important


def test_sdtm_stages_carry_their_mlp_flag_and_prompt_scale_and_count_dependent_tokens(s):
    state = s.state.MergeState()
    cfg = config(s, "SDTM", prompt_scale_structure=1.5, prompt_scale_detail=0.8)
    strategy = s.strategies.strategy_for(cfg, state)
    structure = strategy.partition(tokens(s, s.model_call.ModelCall((1, 4, 4, 4), structure=True), r=4))
    assert (structure.mlp_only, structure.text_scale) == (False, 1.5)
    assert state.counters["structure_calls"] == 1
    after_structure = state.sdtm.last_independent.clone()
    assert after_structure.shape == (1, 16)
    merged = structure.plan.src_idx[0]
    assert (after_structure[0, merged] == 1).all()  # merged once since last independent
    assert (after_structure[0, structure.plan.keep_idx[0]] == 0).all()  # independent now
    detail = strategy.partition(tokens(s, s.model_call.ModelCall((1, 4, 4, 4), structure=False), r=4))
    assert (detail.mlp_only, detail.text_scale) == (True, 0.8)
    assert state.counters["detail_calls"] == 1

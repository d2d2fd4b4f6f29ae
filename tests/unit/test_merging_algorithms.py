"""Pure-torch merging algorithms (merging/): hand-computed cases and properties over shapes and ratios."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def m(pack):
    from tokenmerge.merging import ibtm, importance, plan, similarity, tome

    return type("M", (), {"ibtm": ibtm, "importance": importance, "plan": plan, "similarity": similarity, "tome": tome})


def _sets(plan, row=0):
    return (set(plan.dst_idx[row].tolist()), set(plan.src_idx[row].tolist()), set(plan.keep_idx[row].tolist()))


def test_ibtm_on_a_4x4_grid_with_known_importance_and_features(m):
    # importance: token 0 most important ... token 15 least; r = 8, K = 4, M = int(8 * 1.4) = 11.
    importance = torch.arange(16, 0, -1, dtype=torch.float32).view(1, 16)
    e = torch.eye(4)
    feats = torch.zeros(16, 4)
    feats[:4] = e  # the four destinations (top_k): orthogonal
    feats[4] = e[0] + 0.1 * e[1]  # very close to dst 0
    feats[5] = e[1] + 0.1 * e[2]  # very close to dst 1
    feats[6] = e[2] + 0.2 * e[3]  # close to dst 2
    feats[7:11] = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.9], [0.9, 1.0, 1.0, 1.0], [1.0, 0.9, 1.0, 1.0]])
    feats[11:] = torch.tensor([[1.0, 1.0, 1.0, 1.0]]) + 0.01 * torch.arange(5.0).view(5, 1)  # unimportant
    plan = m.ibtm.importance_plan(
        feats.unsqueeze(0), importance, r=8, dst_fraction=0.25, pool_factor=1.4, dst_mode=m.ibtm.DstMode.TOP_K
    )
    dst, src, keep = _sets(plan)
    assert dst == {0, 1, 2, 3}
    assert src == {4, 5, 6, 11, 12, 13, 14, 15}  # all 5 outside the pool + the 3 most similar pool tokens
    assert keep == {7, 8, 9, 10}
    pairs = dict(zip(plan.src_idx[0].tolist(), plan.dst_idx[0][plan.src_to_dst[0]].tolist(), strict=True))
    assert (pairs[4], pairs[5], pairs[6]) == (0, 1, 2)


def test_ibtm_by_position_merges_the_least_important_into_their_nearest_destination(m):
    """The authors' PixArt variant: pool factor 1.0 merges exactly the r least important tokens, each into the
    destination nearest to it on the grid, whatever the features say."""
    # 4x4 grid; importance falls row by row: the top half (tokens 0-7) is the pool of N - r = 8 tokens.
    importance = torch.arange(16, 0, -1, dtype=torch.float32).view(1, 16)
    feats = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    positions = m.similarity.grid_positions(4, 4)
    assert positions[6].tolist() == [1, 2]
    plan = m.ibtm.importance_plan(
        feats, importance, r=8, dst_fraction=0.25, pool_factor=1.0, dst_mode=m.ibtm.DstMode.TOP_K, positions=positions
    )
    dst, src, keep = _sets(plan)
    assert dst == {0, 1, 2, 3}  # the four most important
    assert src == set(range(8, 16))  # the eight least important, all outside the pool
    assert keep == {4, 5, 6, 7}
    pairs = dict(zip(plan.src_idx[0].tolist(), plan.dst_idx[0][plan.src_to_dst[0]].tolist(), strict=True))
    assert pairs == {8: 0, 9: 1, 10: 2, 11: 3, 12: 0, 13: 1, 14: 2, 15: 3}  # straight up the column
    score, nearest = m.similarity.nearest_destination(
        torch.tensor([[[0.0, 0.0], [3.0, 4.0]]]), torch.tensor([[[0.0, 1.0], [3.0, 0.0]]])
    )
    assert nearest.tolist() == [[0, 1]]
    assert score.tolist() == [[-1.0, -4.0]]


def test_tome_windows_on_a_5x3_grid_leave_the_leftover_strip_as_sources(m):
    is_dst = m.tome.window_destinations(1, 5, 3, sy=2, sx=2, seed=None)
    # windows: rows {0,1},{2,3} x cols {0,1}; row 4 and col 2 are the leftover strip
    assert set(is_dst[0].nonzero().flatten().tolist()) == {0, 6}
    randomized = m.tome.window_destinations(4, 5, 3, seed=7)
    for row in randomized:
        chosen = row.nonzero().flatten().tolist()
        assert len(chosen) == 2
        assert all(t // 3 < 4 and t % 3 < 2 for t in chosen)  # never in the strip
        assert {t // 3 // 2 for t in chosen} == {0, 1}  # one per window
    assert m.tome.window_destinations(1, 1, 5) is None  # no 2x2 window fits


def test_merge_mean_and_prune_on_a_hand_made_plan(m):
    x = torch.tensor([[[1.0], [2.0], [3.0], [4.0], [10.0]]])  # [1, 5, 1]
    # dst = {0, 3}; token 1 -> dst 0, token 2 -> dst 0, token 4 -> dst 3 (index 1); nothing kept
    plan = m.plan.MergePlan(
        keep_idx=torch.zeros(1, 0, dtype=torch.long),
        dst_idx=torch.tensor([[0, 3]]),
        src_idx=torch.tensor([[1, 2, 4]]),
        src_to_dst=torch.tensor([[0, 0, 1]]),
        num_tokens=5,
    )
    assert m.plan.merge(x, plan).flatten().tolist() == [2.0, 7.0]  # (1+2+3)/3, (4+10)/2
    assert m.plan.merge(x, plan, m.plan.MergeMode.PRUNE).flatten().tolist() == [1.0, 4.0]
    assert m.plan.unmerge(torch.tensor([[[5.0], [6.0]]]), plan).flatten().tolist() == [5.0, 5.0, 5.0, 6.0, 6.0]


def test_chunked_similarity_equals_the_full_matrix(m):
    g = torch.Generator().manual_seed(0)
    src, dst = torch.randn(2, 37, 8, generator=g), torch.randn(2, 11, 8, generator=g)
    full = m.similarity.best_destination(src, dst)
    chunked = m.similarity.best_destination(src, dst, max_elements=11 * 5)  # chunks of 5 rows
    assert torch.equal(full[1], chunked[1])
    assert torch.allclose(full[0], chunked[0])


def test_importance_pooling_is_area_averaging_for_any_aspect_ratio(m):
    imp = torch.arange(24, dtype=torch.float32).view(1, 4, 6)
    pooled = m.importance.to_token_grid(imp, 2, 3)
    assert pooled.tolist() == [[3.5, 5.5, 7.5, 15.5, 17.5, 19.5]]
    assert m.importance.to_token_grid(imp, 4, 6).tolist() == [list(range(24))]
    cond, uncond = torch.ones(2, 4, 3, 5), torch.zeros(2, 4, 3, 5)
    cond[1] *= 3
    assert m.importance.cfg_importance(cond, uncond, torch.tensor([1.0, 2.0])).tolist() == (
        [[[1.0] * 5] * 3, [[1.5] * 5] * 3]
    )


grids = st.tuples(st.integers(2, 12), st.integers(2, 12))


@settings(max_examples=60, deadline=None)
@given(
    grid=grids,
    ratio=st.floats(0.0, 0.75),
    samples=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    pool_factor=st.sampled_from([1.0, 1.4, 2.0]),
    prune=st.booleans(),
)
def test_ibtm_properties(pack, grid, ratio, samples, seed, pool_factor, prune):
    from tokenmerge.merging import ibtm
    from tokenmerge.merging import plan as P

    h, w = grid
    N = h * w
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, N, 5, generator=g)
    importance = torch.rand(samples, N, generator=g)
    r = int(N * ratio)
    plan = ibtm.importance_plan(x, importance, r, 0.25, pool_factor, ibtm.DstMode.RANDOM, seed)
    K = max(1, int(N * 0.25))
    r_eff = min(r, N - K)
    assert plan.dst_idx.shape == (samples, K)
    assert plan.num_merged == r_eff
    assert plan.num_out == N - r_eff
    mode = P.MergeMode.PRUNE if prune else P.MergeMode.MEAN
    merged = P.merge(x, plan, mode)
    assert merged.shape == (samples, N - r_eff, 5)
    restored = P.unmerge(merged, plan)
    for s in range(samples):
        every = torch.cat([plan.keep_idx[s], plan.dst_idx[s], plan.src_idx[s]]).sort().values
        assert torch.equal(every, torch.arange(N))  # disjoint and complete
        keep = plan.keep_idx[s]
        assert torch.equal(restored[s, keep], x[s, keep])  # independent tokens come back exactly
        if prune:
            assert torch.equal(restored[s, plan.dst_idx[s]], x[s, plan.dst_idx[s]])
        rank = torch.argsort(torch.argsort(importance[s], descending=True))  # 0 = most important
        merged_ranks = rank[plan.src_idx[s]]
        M = max(K, ibtm.pool_size(N, r_eff, pool_factor))
        assert set(torch.nonzero(rank >= M).flatten().tolist()) <= set(plan.src_idx[s].tolist())
        if pool_factor == 1.0 and N - r_eff == M:
            assert bool((merged_ranks >= N - r_eff).all())  # exactly the r least important are merged


@settings(max_examples=60, deadline=None)
@given(grid=grids, ratio=st.floats(0.0, 0.9), seed=st.integers(0, 2**16))
def test_tome_properties(pack, grid, ratio, seed):
    from tokenmerge.merging import plan as P
    from tokenmerge.merging import tome

    h, w = grid
    N = h * w
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, N, 3, generator=g)
    plan = tome.tome_plan(x, h, w, int(N * ratio), seed=seed)
    K = (h // 2) * (w // 2)
    assert plan.dst_idx.shape[1] == K
    assert plan.num_merged == min(int(N * ratio), N - K)
    restored = P.unmerge(P.merge(x, plan), plan)
    merged_mean = P.merge(x, plan)[:, plan.keep_idx.shape[1] :]
    for s in range(2):
        assert torch.equal(restored[s, plan.keep_idx[s]], x[s, plan.keep_idx[s]])
        for k in range(K):  # every destination holds the mean of itself and its sources
            members = torch.cat([plan.dst_idx[s, k : k + 1], plan.src_idx[s][plan.src_to_dst[s] == k]])
            assert torch.allclose(merged_mean[s, k], x[s, members].mean(0), atol=1e-6)


def test_plan_rows_repeat_the_sample_partition_for_each_chunk(m):
    plan = m.tome.tome_plan(torch.randn(2, 16, 3), 4, 4, 6, seed=1)
    rows = plan.rows(3)
    assert rows.dst_idx.shape[0] == 6
    for chunk in range(3):
        assert torch.equal(rows.src_idx[chunk * 2 : (chunk + 1) * 2], plan.src_idx)


def test_sdtm_windows_cover_whole_windows_of_an_odd_grid(m):
    from tokenmerge.merging import sdtm

    members = sdtm.window_members(5, 5, 2, 2)
    assert members.tolist() == [[0, 1, 5, 6], [2, 3, 7, 8], [10, 11, 15, 16], [12, 13, 17, 18]]
    assert sdtm.window_members(1, 4, 2, 2) is None


def test_sdtm_structure_stage_collapses_the_most_uniform_windows(m):
    from tokenmerge.merging import sdtm

    # 4x4 grid, four 2x2 windows; windows 0 and 3 hold four identical tokens, windows 1 and 2 are noise
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 16, 8, generator=g)
    members = sdtm.window_members(4, 4, 2, 2)
    feats[0, members[0]] = feats[0, members[0][0]].clone()
    feats[0, members[3]] = feats[0, members[3][0]].clone()
    plan = sdtm.structure_plan(feats, 4, 4, r=6, seed=3)  # 6 // 3 = 2 windows
    merged_windows = set(plan.dst_idx[0].tolist()) | set(plan.src_idx[0].tolist())
    assert merged_windows == set(members[0].tolist()) | set(members[3].tolist())
    assert set(plan.keep_idx[0].tolist()) == set(members[1].tolist()) | set(members[2].tolist())
    out = m.plan.merge(feats, plan)
    assert out.shape == (1, 10, 8)
    # the frequency priority can outweigh similarity: tokens long kept dependent pull their windows in
    li = torch.zeros(1, 16)
    li[0, members[1]] = 100.0
    li[0, members[2]] = 100.0
    prioritized = sdtm.structure_plan(feats, 4, 4, r=6, last_independent=li, similarity_weight=10.0, seed=3)
    assert set(prioritized.keep_idx[0].tolist()) == set(members[0].tolist()) | set(members[3].tolist())


def test_sdtm_detail_stage_takes_the_highest_priority_token_of_each_window(m):
    from tokenmerge.merging import sdtm

    feats = torch.randn(2, 24, 4, generator=torch.Generator().manual_seed(1))  # 4x6 grid: six windows
    priority = torch.zeros(2, 24)
    windows = sdtm.window_members(4, 6, 2, 2)
    favourite = windows[:, 3]  # bottom-right member of every window
    priority[:, favourite] = 5.0
    plan = sdtm.detail_plan(feats, 4, 6, r=10, priority=priority)
    assert all(set(row.tolist()) == set(favourite.tolist()) for row in plan.dst_idx)
    assert plan.num_merged == 10
    li = sdtm.update_last_independent(torch.full((2, 24), 3), plan)
    assert li.gather(1, plan.keep_idx).eq(0).all()
    assert li.gather(1, plan.src_idx).eq(4).all()


def test_cosine_ratio_schedule_endpoints(m):
    from tokenmerge.merging import sdtm

    assert sdtm.cosine_ratio(0.5, 0.2, 0.0) == pytest.approx(0.7)
    assert sdtm.cosine_ratio(0.5, 0.2, 1.0) == pytest.approx(0.3)
    assert sdtm.cosine_ratio(0.5, 0.2, 0.5) == pytest.approx(0.3 + 0.4 * 2**-0.5)


def test_counter_based_draws_are_reproducible_uniform_and_independent_of_the_stream_type(pack):
    from tokenmerge.merging import draws

    bits = draws.random_bits(12345, 20000)
    assert bits.dtype == torch.int64
    assert int(bits.min()) >= 0
    assert int(bits.max()) < 2**31
    assert torch.equal(bits, draws.random_bits(torch.tensor(12345), 20000))  # int or device tensor: same values
    assert torch.equal(bits[:100], draws.random_bits(12345, 100))  # a draw depends on its index, not the count
    assert not torch.equal(bits[:100], draws.random_bits(12346, 100))  # the next stream differs
    counts = torch.bincount(draws.random_integers(7, 10, (20000,)), minlength=10).float()
    assert ((counts - 2000).abs() < 5 * 2000**0.5).all()  # uniform within five standard deviations
    assert len(set(draws.random_permutation_keys(3, (1, 64))[0].argsort().tolist())) == 64  # a permutation
    assert draws.stream_of(0, 1) != draws.stream_of(1, 0)
    assert 0 <= draws.stream_of(2**40, -1) < 2**31

"""Attention over merged tokens (``merging/attention_bias.py``), by hand: each key's multiplicity, the log biases
of proportional attention and prompt reweighting, and how a bias joins every mask convention."""

from __future__ import annotations

import math

import pytest
import torch


def test_multiplicity_and_key_bias_by_hand(pack):
    from tokenmerge.merging.attention_bias import key_bias, multiplicity
    from tokenmerge.merging.plan import MergePlan

    # one row, 6 tokens: keep {5}, dst {0, 3}; sources 2 -> 0, 4 -> 0, 1 -> 3
    plan = MergePlan(
        keep_idx=torch.tensor([[5]]),
        dst_idx=torch.tensor([[0, 3]]),
        src_idx=torch.tensor([[2, 4, 1]]),
        src_to_dst=torch.tensor([[0, 0, 1]]),
        num_tokens=6,
    )
    counts = multiplicity(plan)
    assert counts.tolist() == [[1.0, 3.0, 2.0]]  # keep, then dst 0 (itself + 2 sources), dst 3 (itself + 1)
    bias = key_bias(counts, text_tokens=2, text_scale=2.0)
    expected = [math.log(2.0), math.log(2.0), 0.0, math.log(3.0), math.log(2.0)]
    assert bias[0].tolist() == pytest.approx(expected)
    assert key_bias(counts)[0].tolist() == pytest.approx(expected[2:])  # no text keys


def test_key_bias_joins_every_mask_convention(pack):
    from tokenmerge.merging.attention_bias import add_key_bias

    bias = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])  # [B=2, Lk=3]
    assert add_key_bias(None, bias, torch.float32).shape == (2, 1, 1, 3)
    additive = torch.arange(6.0).view(2, 3)  # [Lq, Lk]
    joined = add_key_bias(additive, bias, torch.float32)
    assert joined.shape == (2, 1, 2, 3)
    assert torch.equal(joined[1, 0], additive + bias[1])
    keep = torch.tensor([[[True, False, True]], [[True, True, True]]])  # [B, Lq=1, Lk]
    joined = add_key_bias(keep, bias, torch.float16)
    assert joined.dtype == torch.float16
    assert joined.shape == (2, 1, 1, 3)
    assert joined[0, 0, 0, 1] == -torch.finfo(torch.float16).max  # masked stays masked
    assert joined[0, 0, 0, 2] == 2.0
    assert torch.equal(joined[1, 0, 0], bias[1].half())

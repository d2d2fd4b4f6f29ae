"""Merge plans: which tokens are kept, which are merged into which destination, and how to undo it.

Shared by every method of the pack. ToMe (Bolya & Hoffman, "Token Merging for Fast Stable Diffusion",
arXiv 2303.17604) introduced the merge/unmerge pair around a block's computation; IBTM (Wu et al.,
arXiv 2411.16720) and SDTM (Fang et al., arXiv 2505.11707) only change how the plan is chosen.

A plan partitions the N tokens of one latent sample into three disjoint sets:

* ``dst`` (K tokens): destinations; each absorbs the tokens merged into it;
* ``src`` (R tokens): merged away; ``src_to_dst`` names the destination (0..K-1) of each;
* ``keep`` (U tokens): independent, passed through untouched.

``merge`` turns ``[rows, N, C]`` into ``[rows, U + K, C]`` (keep first, then dst) and ``unmerge`` maps a
computation's output back to N tokens, giving every merged token its destination's output. What is unmerged is
always an *update* (a sub-layer's output, or a block's output minus its merged input), added to each token's own
input: merged tokens share their group's update, never its hidden state. A plan is built
per latent sample and shared by every row of that sample in a model call (its cond, its uncond and
any extra conds), so CFG differences never see merge artifacts. Plans are built under ``no_grad``
once per block call; merge and unmerge reuse the indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch


class MergeMode(str, Enum):
    """How a destination combines the tokens merged into it."""

    MEAN = "mean"  # average of the destination and its sources (ToMe's scatter_reduce mean)
    PRUNE = "prune"  # sources are dropped, the destination keeps its own value


@dataclass(frozen=True)
class MergePlan:
    """Token partition of ``samples`` latent samples; indices are ``[samples, count]`` int64."""

    keep_idx: torch.Tensor  # [S, U]
    dst_idx: torch.Tensor  # [S, K]
    src_idx: torch.Tensor  # [S, R]
    src_to_dst: torch.Tensor  # [S, R], values in 0..K-1
    num_tokens: int  # N

    @property
    def num_merged(self) -> int:
        return self.src_idx.shape[1]

    @property
    def num_out(self) -> int:
        """Tokens the merged computation sees: U + K."""
        return self.keep_idx.shape[1] + self.dst_idx.shape[1]

    def rows(self, chunks: int) -> MergePlan:
        """The plan for a model call holding ``chunks`` row blocks of all samples ([uncond x S, cond x S, ...])."""
        if chunks == 1:
            return self
        return MergePlan(
            *(t.repeat(chunks, 1) for t in (self.keep_idx, self.dst_idx, self.src_idx, self.src_to_dst)),
            num_tokens=self.num_tokens,
        )


def _expand(idx: torch.Tensor, channels: int) -> torch.Tensor:
    return idx.unsqueeze(-1).expand(-1, -1, channels)  # [B, n] -> [B, n, C]


@torch.profiler.record_function("tokenmerge.merge")
def merge(x: torch.Tensor, plan: MergePlan, mode: MergeMode = MergeMode.MEAN) -> torch.Tensor:
    """``x`` [B, N, C] -> [B, U + K, C]; ``plan`` must have B rows (see :meth:`MergePlan.rows`)."""
    C = x.shape[-1]
    kept = x.gather(1, _expand(plan.keep_idx, C))  # [B, U, C]
    dst = x.gather(1, _expand(plan.dst_idx, C))  # [B, K, C]
    if mode is MergeMode.MEAN and plan.num_merged:
        src = x.gather(1, _expand(plan.src_idx, C))  # [B, R, C]
        dst = dst.scatter_reduce(1, _expand(plan.src_to_dst, C), src, reduce="mean", include_self=True)
    return torch.cat([kept, dst], dim=1)


@torch.profiler.record_function("tokenmerge.unmerge")
def unmerge(y: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """``y`` [B, U + K, C] -> [B, N, C]: kept and dst outputs go home, each src gets its dst's output."""
    B, _, C = y.shape
    U = plan.keep_idx.shape[1]
    kept, dst = y[:, :U], y[:, U:]
    out = y.new_empty(B, plan.num_tokens, C)
    out.scatter_(1, _expand(plan.keep_idx, C), kept)
    out.scatter_(1, _expand(plan.dst_idx, C), dst)
    if plan.num_merged:
        out.scatter_(1, _expand(plan.src_idx, C), dst.gather(1, _expand(plan.src_to_dst, C)))
    return out


@torch.no_grad()
def split_destinations(is_dst: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``is_dst`` [S, N] with K destinations per row -> (dst_idx [S, K], src_idx [S, N - K]),
    both in ascending token order."""
    order = torch.argsort(is_dst.to(torch.int8), dim=1, stable=True)  # non-dst first, then dst; index order kept
    return order[:, order.shape[1] - K :], order[:, : order.shape[1] - K]


@torch.no_grad()
def select_merges(
    dst_idx: torch.Tensor,
    src_idx: torch.Tensor,
    best_dst: torch.Tensor,
    priority: torch.Tensor,
    r: int,
    num_tokens: int,
    always_merge: torch.Tensor | None = None,
) -> MergePlan:
    """Merge the ``r`` candidate sources of highest ``priority`` [S, Ns] into their ``best_dst`` [S, Ns];
    sources flagged in ``always_merge`` [S, Ns] come first whatever their priority. The rest are kept."""
    order = torch.argsort(priority, dim=1, descending=True, stable=True)  # [S, Ns]
    if always_merge is not None:
        flagged_last = (~always_merge.gather(1, order)).to(torch.int8)
        order = order.gather(1, torch.argsort(flagged_last, dim=1, stable=True))  # flagged first, by priority
    merged, kept = order[:, :r], order[:, r:]
    return MergePlan(
        keep_idx=src_idx.gather(1, kept),
        dst_idx=dst_idx,
        src_idx=src_idx.gather(1, merged),
        src_to_dst=best_dst.gather(1, merged),
        num_tokens=num_tokens,
    )


def stack_frames(plan: MergePlan, frames: int) -> MergePlan:
    """Per-frame plans of ``S * frames`` rows (frame-major within each sample, n tokens each) -> one plan of
    ``S`` rows over ``frames * n`` tokens that merges only within frames (video models)."""
    if frames == 1:
        return plan
    n, K = plan.num_tokens, plan.dst_idx.shape[1]
    token_offset = (torch.arange(frames, device=plan.dst_idx.device) * n).view(1, frames, 1)
    dst_offset = (torch.arange(frames, device=plan.dst_idx.device) * K).view(1, frames, 1)

    samples = plan.dst_idx.shape[0] // frames

    def join(idx: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return (idx.view(samples, frames, idx.shape[1]) + offset).flatten(1)  # [S*T, m] -> [S, T*m]

    return MergePlan(
        join(plan.keep_idx, token_offset),
        join(plan.dst_idx, token_offset),
        join(plan.src_idx, token_offset),
        join(plan.src_to_dst, dst_offset),
        num_tokens=frames * n,
    )


def kept_order(plan: MergePlan) -> torch.Tensor:
    """Token index of each merged output position: [B, U + K] (keep first, then dst), e.g. to gather RoPE."""
    return torch.cat([plan.keep_idx, plan.dst_idx], dim=1)


def take_tokens(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``idx`` [B, M] along token axis ``dim`` of ``t`` [B or 1, ...]; a batch of 1 is broadcast."""
    rows, M = idx.shape
    if t.shape[0] == 1 and rows > 1:
        t = t.expand(rows, *t.shape[1:])
    view = [rows] + [1] * (t.ndim - 1)
    view[dim] = M
    sizes = list(t.shape)
    sizes[dim] = M
    return t.gather(dim, idx.view(view).expand(sizes))  # [B, ..., L, ...] -> [B, ..., M, ...]


def splice(t: torch.Tensor, start: int, end: int, middle: torch.Tensor) -> torch.Tensor:
    """``t`` [B or 1, L, ...] with tokens ``start:end`` replaced by ``middle`` [B, M, ...] -> [B, L - (end - start)
    + M, ...]; a batch of 1 is broadcast."""
    outer = t.expand(middle.shape[0], *t.shape[1:])
    return torch.cat([outer[:, :start], middle, outer[:, end:]], dim=1)

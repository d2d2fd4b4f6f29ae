"""Structure-then-detail token merging (SDTM): Fang et al., "Attend to Not Attended: Structure-then-Detail
Token Merging for Post-training DiT Acceleration", CVPR 2025, arXiv 2505.11707 (algorithm as in the
authors' 2025-09 code, which no longer reads attention maps: where the paper's text and that code differ,
this follows the code).

* **Structure stage** (similarity-prioritised structural merging): the grid is tiled into sy x sx windows;
  each window scores the mean of its members' pairwise cosine similarities (diagonal included) plus
  ``a_s`` times its mean frequency priority (how long its tokens have gone without staying independent,
  normalised by the mean). The best-scoring windows collapse into one token each (one random member is
  the destination, the others are averaged into it); everything else stays independent.
* **Detail stage** (inattentive-prioritised detail merging): each window's destination is its token
  with the highest priority (kept dependent the longest, or the most important by CFG importance), and
  every other token is matched globally to its most similar destination (bipartite); the ``r`` best
  matches are merged.
* **Ratio schedule:** the fraction merged decays along a cosine from ratio + deviation to
  ratio - deviation over the run.

Grids of any shape work: tokens in the strip that no whole window covers are never destinations.
"""

from __future__ import annotations

import math

import torch

from .draws import random_integers
from .plan import MergePlan
from .tome import bipartite_plan


def cosine_ratio(ratio: float, deviation: float, progress: float) -> float:
    """(ratio - deviation) + 2 deviation cos(progress pi / 2): from ratio + deviation down to ratio - deviation."""
    return (ratio - deviation) + 2.0 * deviation * math.cos(min(max(progress, 0.0), 1.0) * math.pi / 2)


def window_members(h: int, w: int, sy: int, sx: int, device: torch.device | None = None) -> torch.Tensor | None:
    """Token indices of every whole sy x sx window of an h x w grid: [windows, sy * sx], or ``None``."""
    hw, ww = h // sy, w // sx
    if hw == 0 or ww == 0:
        return None
    arange = {"device": device}
    rows = torch.arange(hw, **arange).view(hw, 1, 1, 1) * sy + torch.arange(sy, **arange).view(1, 1, sy, 1)
    cols = torch.arange(ww, **arange).view(1, ww, 1, 1) * sx + torch.arange(sx, **arange).view(1, 1, 1, sx)
    return (rows * w + cols).reshape(hw * ww, sy * sx)  # [hw, ww, sy, sx] -> [windows, sy*sx]


def frequency_priority(last_independent: torch.Tensor) -> torch.Tensor:
    """P_fre: steps without staying independent, divided by its mean per sample ([S, N] -> [S, N])."""
    li = last_independent.float()
    return li / li.mean(dim=1, keepdim=True).clamp_min(1e-6)


@torch.no_grad()
def structure_plan(
    metric: torch.Tensor,
    h: int,
    w: int,
    r: int,
    window: tuple[int, int] = (2, 2),
    last_independent: torch.Tensor | None = None,
    similarity_weight: float = 0.05,
    seed: torch.Tensor | int | None = None,
) -> MergePlan | None:
    """Structure-stage plan for ``metric`` [S, h * w, C]: about ``r`` tokens merged by collapsing whole windows."""
    S, N, _ = metric.shape
    sy, sx = window
    members = window_members(h, w, sy, sx, metric.device)
    m = sy * sx
    if members is None or m < 2:
        return None
    n_windows = min(r // (m - 1), members.shape[0])
    if n_windows == 0:
        return None
    feats = torch.nn.functional.normalize(metric.float(), dim=-1)[:, members]  # [S, N, C] -> [S, W, m, C]
    score = (feats @ feats.transpose(-1, -2)).mean(dim=(-1, -2))  # mean pairwise cosine, [S, W]
    if last_independent is not None:
        score = score + similarity_weight * frequency_priority(last_independent)[:, members].mean(-1)
    chosen = score.topk(n_windows, dim=1).indices  # [S, n_windows]
    chosen_members = members[chosen]  # [S, n_windows, m]
    device = metric.device
    if seed is None:  # destination slot per window
        pick = torch.zeros(S, n_windows, dtype=torch.long, device=device)
    else:
        pick = random_integers(seed, m, (S, n_windows), device)
    dst_idx = chosen_members.gather(2, pick.unsqueeze(-1)).squeeze(-1)  # [S, n_windows]
    other_slots = torch.arange(m - 1, device=device).expand(S, n_windows, m - 1)
    other_slots = other_slots + (other_slots >= pick.unsqueeze(-1)).long()  # every slot but the pick, in order
    src_idx = chosen_members.gather(2, other_slots).flatten(1)  # [S, n_windows, m - 1] -> [S, n_windows * (m - 1)]
    src_to_dst = torch.arange(n_windows, device=metric.device).repeat_interleave(m - 1).expand(S, -1)
    in_window = torch.zeros(S, N, dtype=torch.bool, device=metric.device)
    in_window.scatter_(1, chosen_members.flatten(1), value=True)
    keep_idx = torch.argsort(in_window.to(torch.int8), dim=1, stable=True)[:, : N - n_windows * m]
    return MergePlan(
        keep_idx=keep_idx, dst_idx=dst_idx, src_idx=src_idx, src_to_dst=src_to_dst.contiguous(), num_tokens=N
    )


@torch.no_grad()
def detail_plan(
    metric: torch.Tensor,
    h: int,
    w: int,
    r: int,
    window: tuple[int, int] = (2, 2),
    priority: torch.Tensor | None = None,
    seed: torch.Tensor | int | None = None,
) -> MergePlan | None:
    """Detail-stage plan: per window the highest-``priority`` [S, N] token is the destination (random without
    a priority; drawn from ``seed``), then global bipartite matching merges the ``r`` most similar other tokens."""
    S, N, _ = metric.shape
    sy, sx = window
    members = window_members(h, w, sy, sx, metric.device)
    if members is None:
        return None
    if priority is None:
        slot = random_integers(0 if seed is None else seed, sy * sx, (S, members.shape[0]), metric.device)
    else:
        slot = priority[:, members].argmax(dim=-1)  # [S, W, m] -> [S, W]
    dst = members.expand(S, -1, -1).gather(2, slot.unsqueeze(-1)).squeeze(-1)  # [S, W]
    is_dst = torch.zeros(S, N, dtype=torch.bool, device=metric.device)
    is_dst.scatter_(1, dst, value=True)
    return bipartite_plan(metric, is_dst, members.shape[0], r)


def update_last_independent(last_independent: torch.Tensor, plan: MergePlan) -> torch.Tensor:
    """One merge call later: every token's count goes up by one, the independent (kept) tokens' back to 0."""
    return (last_independent + 1).scatter_(1, plan.keep_idx, 0)

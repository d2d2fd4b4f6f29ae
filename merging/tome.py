"""Spatial ToMe for diffusion models (ToMeSD): Bolya & Hoffman, "Token Merging for Fast Stable Diffusion",
arXiv 2303.17604.

The token grid (h x w) is tiled into sy x sx windows and one destination is drawn per window (at random
from the caller's seed stream, ``draws.py``, or the top-left token). Tokens in the strip left over when h or
w is not divisible by the window are always sources. Each source finds its most similar destination
(cosine, chunked); the ``r`` most similar sources are merged, the rest stay independent. The same
partition serves every row of a sample (see :mod:`.plan`).
"""

from __future__ import annotations

import torch

from .draws import random_integers
from .plan import MergePlan, select_merges, split_destinations
from .similarity import best_destination


@torch.no_grad()
def window_destinations(
    samples: int,
    h: int,
    w: int,
    sy: int = 2,
    sx: int = 2,
    seed: torch.Tensor | int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean ``is_dst`` [samples, h * w] on ``device``: one destination per sy x sx window, or ``None`` if no
    window fits. ``seed`` (a stream of ``draws.py``) draws each window's destination; without it the top-left
    token is used."""
    hw, ww = h // sy, w // sx
    if hw == 0 or ww == 0:
        return None
    if seed is None:
        offset = torch.zeros(samples, hw, ww, dtype=torch.long, device=device)
    else:  # position inside each window
        offset = random_integers(seed, sy * sx, (samples, hw, ww), device)
    rows = torch.arange(hw, device=device).view(1, hw, 1) * sy + offset // sx  # [S, hw, ww]
    cols = torch.arange(ww, device=device).view(1, 1, ww) * sx + offset % sx
    is_dst = torch.zeros(samples, h * w, dtype=torch.bool, device=device)
    is_dst.scatter_(1, (rows * w + cols).view(samples, -1), value=True)
    return is_dst


@torch.no_grad()
def bipartite_plan(metric: torch.Tensor, is_dst: torch.Tensor, K: int, r: int) -> MergePlan:
    """Every non-destination token finds its most similar destination (``is_dst`` [S, N], K per row);
    the ``r`` most similar sources are merged (bipartite soft matching)."""
    N, C = metric.shape[1:]
    dst_idx, src_idx = split_destinations(is_dst, K)
    score, best = best_destination(
        metric.gather(1, src_idx.unsqueeze(-1).expand(-1, -1, C)),
        metric.gather(1, dst_idx.unsqueeze(-1).expand(-1, -1, C)),
    )
    return select_merges(dst_idx, src_idx, best, score, min(r, src_idx.shape[1]), N)


@torch.no_grad()
def tome_plan(
    metric: torch.Tensor, h: int, w: int, r: int, sy: int = 2, sx: int = 2, seed: torch.Tensor | int | None = None
) -> MergePlan | None:
    """ToMeSD plan for ``metric`` [S, h * w, C] merging up to ``r`` tokens; ``None`` when the grid is too small."""
    is_dst = window_destinations(metric.shape[0], h, w, sy, sx, seed, metric.device)
    if is_dst is None:
        return None
    return bipartite_plan(metric, is_dst, (h // sy) * (w // sx), r)

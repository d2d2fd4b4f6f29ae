"""Best-match between source and destination tokens (cosine of features, or distance on the token grid),
chunked to bound memory.

Bipartite soft matching (Bolya et al., "Token Merging: Your ViT But Faster", arXiv 2210.09461; ToMeSD
arXiv 2303.17604): every source token finds its most similar destination by cosine similarity of
the block-input features. The full [S, K] score matrix is never held at once when it is large: the
sources are processed in chunks of at most ``max_elements // K`` rows.

IBTM's PixArt variant matches by position instead: every source joins the destination nearest to it on the
token grid (Euclidean distance; ties go to the first destination in token order).
"""

from __future__ import annotations

import torch

DEFAULT_MAX_ELEMENTS = 1 << 22  # 4M scores (16 MB in fp32) per chunk


@torch.no_grad()
def best_destination(
    src: torch.Tensor, dst: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``src`` [B, S, C] and ``dst`` [B, K, C]: (best cosine score [B, S], index of that dst [B, S])."""
    src = torch.nn.functional.normalize(src.float(), dim=-1)
    dst_t = torch.nn.functional.normalize(dst.float(), dim=-1).transpose(1, 2)  # [B, C, K]
    rows = max(1, max_elements // max(1, dst.shape[1]))
    scores, indices = [], []
    for chunk in src.split(rows, dim=1):
        best = (chunk @ dst_t).max(dim=-1)  # [B, s, K] -> [B, s]
        scores.append(best.values)
        indices.append(best.indices)
    return torch.cat(scores, dim=1), torch.cat(indices, dim=1)


@torch.no_grad()
def nearest_destination(
    src_pos: torch.Tensor, dst_pos: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """For grid positions ``src_pos`` [B, S, 2] and ``dst_pos`` [B, K, 2]: (minus the distance to the nearest
    destination [B, S], index of that dst [B, S]); the score is higher for nearer, as for cosine."""
    rows = max(1, max_elements // max(1, dst_pos.shape[1]))
    scores, indices = [], []
    for chunk in src_pos.float().split(rows, dim=1):
        nearest = torch.cdist(chunk, dst_pos.float()).min(dim=-1)  # [B, s, K] -> [B, s]
        scores.append(-nearest.values)
        indices.append(nearest.indices)
    return torch.cat(scores, dim=1), torch.cat(indices, dim=1)


def grid_positions(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(row, column) of every token of an h x w grid in row-major order: [h * w, 2]."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([rows, cols], dim=-1).reshape(h * w, 2)  # [h, w, 2] -> [h*w, 2]

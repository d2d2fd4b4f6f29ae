"""Cosine best-match between source and destination tokens, chunked to bound memory.

Bipartite soft matching (Bolya et al., "Token Merging: Your ViT But Faster", arXiv 2210.09461; ToMeSD
arXiv 2303.17604): every source token finds its most similar destination by cosine similarity of
the block-input features. The full [S, K] score matrix is never held at once when it is large: the
sources are processed in chunks of at most ``max_elements // K`` rows.
"""

from __future__ import annotations

import torch

DEFAULT_MAX_ELEMENTS = 1 << 22  # 4M scores (16 MB in fp32) per chunk


@torch.no_grad()
def best_destination(src: torch.Tensor, dst: torch.Tensor,
                     max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
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

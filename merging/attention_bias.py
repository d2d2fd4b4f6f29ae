"""Additive key biases for attention over merged tokens: proportional attention and prompt reweighting.

**Proportional attention** (Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023, arXiv 2210.09461,
section 3): a key that stands for ``m`` original tokens (a destination and the ``m - 1`` sources merged into
it) gets ``log m`` added to its attention logit,

    A = softmax(q k^T / sqrt(d) + log m),

so the softmax weighs it like ``m`` copies of itself. When the merged tokens were exact duplicates (same
features, same position) this reproduces the unmerged attention exactly; otherwise it keeps each region's
share of the attention mass close to what it was before merging.

**Prompt reweighting** (SDTM, Fang et al., CVPR 2025, arXiv 2505.11707, names "prompt reweighting for different
stages"; the paper's formula is not public, so this is the pack's own definition): in joint attention over
``[text ; image]`` keys, every text key of a stage gets ``log s`` added (``s`` = that stage's scale). For a
query whose unmerged attention puts mass ``a`` on the text keys, the mass becomes

    a' = s a / (s a + (1 - a)),

i.e. the odds of attending to the prompt are multiplied by ``s``; ``s = 1`` changes nothing. The glue applies
the scale of the current stage to every block call SDTM plans (the detail stage's MLP-only calls included,
whose attention runs on all tokens); protected steps and calls outside the run window run unbiased.

Both are one additive bias per key, ``[B, L_keys]``, built here and added to the attention logits through
the attention mask (``log`` of a count, never ``-inf``, so rows never go empty).
"""

from __future__ import annotations

import math

import torch

from .plan import MergePlan


def multiplicity(plan: MergePlan) -> torch.Tensor:
    """How many original tokens each merged token stands for: [B, U + K] float (keep first, then dst, the
    order :func:`~tokenmerge.merging.plan.merge` outputs); 1 for kept tokens, 1 + its sources for a dst."""
    rows, U = plan.keep_idx.shape
    K = plan.dst_idx.shape[1]
    device = plan.dst_idx.device
    sources = torch.zeros(rows, K, device=device).scatter_add_(
        1, plan.src_to_dst, torch.ones(plan.src_to_dst.shape, device=device)
    )  # [B, R] -> [B, K] counts
    return torch.cat([torch.ones(rows, U, device=device), 1.0 + sources], dim=1)


def key_bias(image_counts: torch.Tensor, text_tokens: int = 0, text_scale: float = 1.0) -> torch.Tensor:
    """Logit bias of the keys ``[text ; image]``: ``log text_scale`` for each of the ``text_tokens`` text keys,
    ``log count`` for each image key; ``image_counts`` [B, M] -> [B, text_tokens + M]."""
    text = image_counts.new_full((image_counts.shape[0], text_tokens), math.log(text_scale))
    return torch.cat([text, image_counts.log()], dim=1)


def add_key_bias(mask: torch.Tensor | None, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask in ComfyUI's conventions plus a per-key ``bias`` [B, Lk].

    ``mask`` is ``None``, [Lq, Lk], [B, Lq, Lk] or [B, H, Lq, Lk], boolean (True = attend) or additive.
    The result is additive, in ``dtype``, and broadcasts as [B, H or 1, Lq or 1, Lk].
    """
    bias = bias.to(dtype)[:, None, None, :]  # [B, Lk] -> [B, 1, 1, Lk]
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, -torch.finfo(dtype).max)
    while mask.ndim < 4:
        mask = mask.unsqueeze(0 if mask.ndim == 2 else 1)  # [Lq, Lk] -> [1, Lq, Lk] -> [1, 1, Lq, Lk]
    return mask.to(dtype) + bias

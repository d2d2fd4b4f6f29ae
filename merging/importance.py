"""Importance maps for IBTM (Wu et al., arXiv 2411.16720, section 3): per sample, the channel mean of
|cond - uncond| from classifier-free guidance, resized to a block's token grid by area pooling.

Any parameterisation (eps, v, x0, flow) differs from another by a per-sample scalar, so the ranking
inside a sample is the same; dividing by sigma only makes maps comparable across steps.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def cfg_importance(cond: torch.Tensor, uncond: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, *spatial] predictions -> importance [B, *spatial] = mean_C |cond - uncond| (/ sigma per sample)."""
    imp = (cond.float() - uncond.float()).abs().mean(dim=1)
    if sigma is not None:
        imp = imp / sigma.float().clamp_min(1e-8).view(-1, *([1] * (imp.ndim - 1)))
    return imp


@torch.no_grad()
def to_token_grid(importance: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Importance [S, H, W] -> [S, h * w] on an h x w token grid by area averaging (any aspect ratio)."""
    if importance.shape[-2:] != (h, w):
        importance = torch.nn.functional.adaptive_avg_pool2d(importance.unsqueeze(1), (h, w)).squeeze(1)
    return importance.flatten(1)  # [S, h, w] -> [S, h * w]

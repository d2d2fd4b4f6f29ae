"""Image-quality metrics of the quality benchmark, in pure torch.

* PSNR and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, on each RGB
  channel, averaged) of a merged sample against the unmerged sample of the same seed.
* A FID-like Frechet distance between two sets of features (here our classifier's, not Inception's):
  |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
* ROC AUC of a score map against a binary mask (Mann-Whitney U, ties counted half), and the IoU of the
  top-k scores with the mask (k = mask size), for importance localisation.
Images are [B, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import math

import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB [B]; ``inf`` where the images are identical."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)  # log10(1 / 0) = inf


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean SSIM [B] (valid windows only, channels averaged)."""
    c1, c2 = 0.01**2, 0.03**2
    channels = a.shape[1]
    window = _gaussian_window().repeat(channels, 1, 1, 1)  # [C, 1, 11, 11], depthwise

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, window, groups=channels)

    a, b = a.double(), b.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.flatten(1).mean(1)


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D] (0 for identical sets)."""
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a + cov_b - 2 * cross)
    return max(value.item(), 0.0)


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half); NaN without both."""
    scores, positive = scores.flatten().double(), positive.flatten().bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():  # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).item()


def top_k_iou(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """IoU of the k highest scores with the mask, k = mask size; NaN for an empty mask."""
    scores, positive = scores.flatten(), positive.flatten().bool()
    k = int(positive.sum())
    if k == 0:
        return math.nan
    top = torch.zeros_like(positive)
    top[scores.topk(k).indices] = True
    return ((top & positive).sum() / (top | positive).sum()).item()

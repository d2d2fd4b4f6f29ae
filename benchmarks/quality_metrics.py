"""Image-quality metrics of the quality benchmark, in pure torch.

* PSNR and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, on each RGB
  channel, averaged) of a merged sample against the unmerged sample of the same seed, over the whole image or
  only the pixels of a mask (SSIM: the windows centred on them), so that what merging does inside the prompted
  objects and outside them can be told apart.
* A per-image perceptual distance: the Euclidean distance between the unit-length feature vectors of two images
  (here our classifier's features), 0 for the same features, at most 2.
* The mean of per-image values with its standard error, and of paired differences, for the sampling error.
* A FID-like Frechet distance between two sets of features (here our classifier's, not Inception's):
  |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
* ROC AUC of a score map against a binary mask (Mann-Whitney U, ties counted half), and the IoU of the
  top-k scores with the mask (k = mask size), for importance localisation.
Images are [B, 3, H, W] in [0, 1].
"""

from __future__ import annotations

import math

import torch


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR in dB [B]; ``inf`` where the images (or their masked pixels) are identical. ``mask``
    [B, H, W] (bool) keeps the error of its pixels only; NaN for an image whose mask is empty."""
    error = (a.double() - b.double()).pow(2).mean(1)  # [B, H, W], channels averaged
    if mask is None:
        mse = error.flatten(1).mean(1)
    else:
        mask = mask.to(error.dtype)
        mse = (error * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)  # 0 / 0 = NaN
    return 10 * torch.log10(1.0 / mse)  # log10(1 / 0) = inf


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian [size], summing to 1; SSIM's 11x11 window is its outer product with itself."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _band(length: int, g: torch.Tensor) -> torch.Tensor:
    """The valid 1-D filtering of a line of ``length`` by the window ``g`` as a matrix [length, length - size + 1]:
    column j holds g at rows j .. j + size - 1 (``line @ band`` filters the line)."""
    band = torch.zeros(length, length - len(g) + 1, dtype=g.dtype)
    for offset, weight in enumerate(g.tolist()):
        band.diagonal(-offset).fill_(weight)
    return band


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Each channel of x [B, C, H, W] filtered with the 11x11 Gaussian window, valid windows only
    [B, C, H - 10, W - 10]. The window is separable: a row pass then a column pass, each a product with a banded
    matrix (in double precision a matrix product runs several times faster on a CPU than a convolution)."""
    g = _gaussian_kernel().to(x.dtype)
    batch, channels, height, width = x.shape
    planes = x.reshape(batch * channels, height, width)  # [B*C, H, W], each channel on its own
    planes = planes @ _band(width, g)  # rows [B*C, H, W - 10]
    planes = _band(height, g).T @ planes  # columns [B*C, H - 10, W - 10]
    return planes.view(batch, channels, height - len(g) + 1, width - len(g) + 1)


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean SSIM [B] (valid windows only, channels averaged); with ``mask`` [B, H, W] (bool), the mean
    over the windows centred on its pixels (NaN where none is)."""
    c1, c2 = 0.01**2, 0.03**2
    a, b = a.double(), b.double()
    # One blur for the five local statistics: [5B, C, H, W] -> [5, B, C, H - 10, W - 10]
    mu_a, mu_b, aa, bb, ab = _blur(torch.cat([a, b, a * a, b * b, a * b])).unflatten(0, (5, a.shape[0]))
    var_a = aa - mu_a**2
    var_b = bb - mu_b**2
    cov = ab - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    if mask is None:
        return value.flatten(1).mean(1)
    half = (len(_gaussian_kernel()) - 1) // 2
    centres = mask[:, half:-half, half:-half].to(value.dtype)  # [B, H - 10, W - 10]: each valid window's centre
    return (value.mean(1) * centres).flatten(1).sum(1) / centres.flatten(1).sum(1)


def feature_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Per-row distance [N] between the unit-length feature vectors of two sets [N, D] of paired images."""
    a = torch.nn.functional.normalize(features_a.double(), dim=1)
    b = torch.nn.functional.normalize(features_b.double(), dim=1)
    return (a - b).norm(dim=1)


def mean_and_error(values: torch.Tensor) -> tuple[float, float]:
    """Mean of the values [N] that are not NaN (an empty mask) and its standard error (sample standard deviation
    / sqrt(n)); NaN for none. An infinite value (an identical image) makes the mean infinite and the error NaN."""
    kept = values.double()[~values.isnan()]
    if len(kept) == 0:
        return math.nan, math.nan
    error = (kept.std() / math.sqrt(len(kept))).item() if len(kept) > 1 and kept.isfinite().all() else math.nan
    return kept.mean().item(), error


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

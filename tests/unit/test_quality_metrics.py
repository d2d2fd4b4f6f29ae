"""The quality benchmark's metrics (benchmarks/quality_metrics.py) on cases computed by hand, and the separable SSIM
against the textbook 11x11 window."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import quality_metrics as qm


def test_psnr_of_a_uniform_error_of_a_tenth_is_20_db_and_of_identical_images_infinite():
    a = torch.full((2, 3, 16, 16), 0.5)
    b = a.clone()
    b[0] += 0.1  # mse 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert qm.psnr(a, b)[0].item() == pytest.approx(20.0)
    assert math.isinf(qm.psnr(a, b)[1].item())


def test_masked_psnr_counts_only_the_masked_pixels_and_is_nan_for_an_empty_mask():
    a = torch.full((2, 3, 16, 16), 0.5)
    b = a.clone()
    b[:, :, :8] += 0.1  # the top half of each image is off by a tenth (20 dB there), the bottom exact
    top = torch.zeros(2, 16, 16, dtype=torch.bool)
    top[:, :8] = True
    assert qm.psnr(a, b, top).tolist() == pytest.approx([20.0, 20.0])
    assert math.isinf(qm.psnr(a, b, ~top)[0].item())
    assert qm.psnr(a, b)[0].item() == pytest.approx(10 * math.log10(1 / 0.005))  # half the pixels: mse 0.005
    assert math.isnan(qm.psnr(a, b, torch.zeros_like(top))[0].item())


def test_masked_ssim_averages_the_windows_centred_in_the_mask():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 24, 24, generator=gen)
    b = a.clone()
    b[:, :, :, 12:] = torch.rand(1, 3, 24, 12, generator=gen)  # the right half differs
    left = torch.zeros(1, 24, 24, dtype=torch.bool)
    left[:, :, :7] = True  # windows centred in columns 5 and 6 reach column 11 at most: identical there
    assert qm.ssim(a, b, left).item() == pytest.approx(1.0)
    right = ~left
    assert qm.ssim(a, b, right).item() < qm.ssim(a, b).item() < 1.0
    assert math.isnan(qm.ssim(a, b, torch.zeros_like(left)).item())


def test_the_feature_distance_is_that_of_unit_vectors_and_the_error_is_the_standard_error():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 5.0], [2.0, 2.0]])  # orthogonal: sqrt(2); same direction: 0
    assert qm.feature_distance(a, b).tolist() == pytest.approx([math.sqrt(2), 0.0])
    mean, error = qm.mean_and_error(torch.tensor([1.0, 2.0, 3.0, 4.0, math.nan]))  # NaN: an empty mask
    assert mean == pytest.approx(2.5)
    assert error == pytest.approx(math.sqrt(5 / 3) / 2)  # sample sd sqrt(5/3) over sqrt(4)
    mean, error = qm.mean_and_error(torch.tensor([math.inf, 20.0]))  # an identical image: infinite PSNR
    assert math.isinf(mean)
    assert math.isnan(error)


def test_ssim_of_two_flat_images_is_the_luminance_term_alone():
    """Flat images have no variance or covariance, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)."""
    a, b = torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), 0.25)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert qm.ssim(a, b).item() == pytest.approx(expected)
    assert qm.ssim(a, a).item() == pytest.approx(1.0)


def _ssim_with_the_2d_window(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM as Wang et al. write it: the 11x11 window as one depthwise 2-D filter, one blur per statistic."""
    c1, c2 = 0.01**2, 0.03**2
    g = qm._gaussian_kernel()
    window = (g[:, None] * g[None, :]).expand(a.shape[1], 1, 11, 11)  # [C, 1, 11, 11]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, window, groups=a.shape[1])

    a, b = a.double(), b.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.flatten(1).mean(1)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), side=st.integers(11, 24), noise=st.floats(0.0, 0.5))
def test_the_separable_ssim_equals_the_2d_window(seed, side, noise):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(3, 3, side, side, generator=gen)
    b = (a + noise * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    value = qm.ssim(a, b)
    assert torch.allclose(value, _ssim_with_the_2d_window(a, b), atol=1e-12)
    assert (value.abs() <= 1 + 1e-12).all()


def test_the_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_shifted_copy():
    features = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    assert qm.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([3.0, 0.0, 4.0, 0.0])  # same covariance, means 5 apart
    assert qm.frechet_distance(features, features + shift) == pytest.approx(25.0)


def test_roc_auc_counts_ordered_pairs_and_ties_half():
    positive = torch.tensor([1, 1, 0, 0])
    assert qm.roc_auc(torch.tensor([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert qm.roc_auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    # pairs (positive, negative): (0.9, 0.5) win, (0.9, 0.1) win, (0.5, 0.5) tie, (0.5, 0.1) win -> 3.5 / 4
    assert qm.roc_auc(torch.tensor([0.9, 0.5, 0.5, 0.1]), positive) == 0.875
    assert math.isnan(qm.roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


def test_top_k_iou_takes_as_many_top_scores_as_the_mask_has_tokens():
    mask = torch.tensor([1, 1, 0, 0, 0])
    # the top two are tokens 0 and 2: intersection {0}, union {0, 1, 2} -> 1/3
    assert qm.top_k_iou(torch.tensor([0.9, 0.1, 0.8, 0.2, 0.3]), mask) == pytest.approx(1 / 3)
    assert qm.top_k_iou(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.3]), mask) == 1.0
    assert math.isnan(qm.top_k_iou(torch.rand(5), torch.zeros(5)))

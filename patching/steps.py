"""Where a model call sits in its sampling run, read from ``transformer_options`` (not by counting calls,
so Heun-type samplers, KSamplerAdvanced slices and denoise < 1 behave)."""

from __future__ import annotations

import torch


def current_sigma(options: dict) -> float | None:
    """The sigma of the call (its first row), or ``None`` outside a sampler."""
    sigmas = options.get("sigmas")
    return None if sigmas is None else float(torch.as_tensor(sigmas).flatten()[0])


def step_position(options: dict) -> tuple[int, float]:
    """(step index, fraction of the run done) for the call's sigma in ``sample_sigmas``.

    The index counts the schedule's sigmas above the current one, so an intermediate evaluation
    (Heun's corrector at sigma_{i+1}) counts as step i + 1. Outside a sampler: (0, 0.0).
    """
    sigma, schedule = current_sigma(options), options.get("sample_sigmas")
    if sigma is None or schedule is None or len(schedule) < 2:
        return 0, 0.0
    schedule = torch.as_tensor(schedule).float().flatten()
    step = int((schedule > sigma * (1 + 1e-4) + 1e-8).sum())
    return step, min(1.0, step / (len(schedule) - 1))


def run_steps(options: dict) -> int:
    """Steps of the call's sampling run (``len(sample_sigmas) - 1``), 0 outside a sampler."""
    schedule = options.get("sample_sigmas")
    return 0 if schedule is None else max(0, len(schedule) - 1)

"""Golden latents: the same seeds give the same latents, on every tiny family and with every method, before and
after a change that must not change behaviour (a refactor).

Each case samples a tiny family through a merging node (six steps at cfg 4, so IBTM merges by importance, SDTM runs
its structure and detail stages and protected steps) with the model in float64, and compares the resulting latents
(the sampler's float32) with those recorded in ``tests/golden/``, one file per ComfyUI release. On the machine that
recorded them (same torch, CPU kernels and ComfyUI release) the latents must be bitwise equal. Elsewhere other CPU
kernels round differently, so the latents must agree to a relative 1e-6 of their scale: float64 keeps those
rounding differences about 1e-15, far from flipping a merge decision, while a changed plan moves the latents by far
more. A model that cannot run in float64 on the release (Wan 2.1's patch embedding takes the float32 latent; on
ComfyUI 0.33 the RoPE kernels of Flux, Chroma, QwenImage and HunyuanVideo take no float64) is recorded in float32,
and the recording says so per case; such cases are compared on the recording machine only, since elsewhere a
near-tie between two merge choices could flip.

Record them (on the commit before the change, on both releases) with ``TOKENMERGE_RECORD_GOLDEN=1 python -m pytest
tests/test_golden_latents.py``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import pytest
import torch
from conftest import merge_with, sample, sdtm_advanced
from safetensors.torch import load_file, save_file

from devkit import EXPECTED_COMFYUI, tiny_models

logger = logging.getLogger(__name__)
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
RECORD = os.environ.get("TOKENMERGE_RECORD_GOLDEN") == "1"
UNET_FAMILIES = {"sd15", "sdxl"}

# (label, method for conftest.merge_with, the Advanced node's settings changed from its defaults)
UNET_METHODS = [
    ("ibtm", "importance", {}),
    (
        "ibtm cross-attention, feed-forward, pruning",
        "importance",
        {"merge_cross_attention": True, "merge_feed_forward": True, "prune_until": 0.5, "dst_mode": "top_k"},
    ),
    ("tome", "tome", {}),
]
DIT_METHODS = [
    ("ibtm", "importance", {}),
    (
        "ibtm pruning, top-k, position match",
        "importance",
        {"prune_until": 0.5, "dst_mode": "top_k", "match": "position", "proportional_attention": True},
    ),
    ("ibtm normalized match", "importance", {"match": "normalized"}),
    ("tome", "tome", {}),
    ("sdtm", "sdtm", {}),
    (
        "sdtm advanced",
        "sdtm_advanced",
        {
            "detail_destination": "importance",
            "detail_mlp_only": False,
            "protect_every": 2,
            "switch_percent": 0.5,
            "proportional_attention": True,
            "prompt_scale_structure": 1.5,
            "prompt_scale_detail": 1.2,
        },
    ),
]
CASES = [
    (family, label, method, settings)
    for family in sorted(tiny_models.FAMILIES)
    for label, method, settings in (UNET_METHODS if family in UNET_FAMILIES else DIT_METHODS)
]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fingerprint() -> dict[str, str]:
    """What decides the bits of a float result here: torch, its CPU kernels, the CPU, the ComfyUI release."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": cpu_model(),
        "comfyui": EXPECTED_COMFYUI,
        "threads": str(torch.get_num_threads()),
    }


def golden_path() -> Path:
    return GOLDEN_DIR / f"latents-comfyui-{EXPECTED_COMFYUI}.safetensors"


def merged_model(family: tiny_models.TinyFamily, method: str, settings: dict, dtype: torch.dtype):
    base = tiny_models.build_patcher(family, seed=0, scale=0.5, dtype=dtype)
    if method != "sdtm_advanced":
        return merge_with(base, method, ratio=0.5, **settings)
    return sdtm_advanced(base, 0.4, **settings)


def sample_case(family_name: str, method: str, settings: dict, dtype: torch.dtype) -> torch.Tensor:
    family = tiny_models.FAMILIES[family_name]
    side = max(family.min_side, 128 if family.downscale == 16 else 64)
    model = merged_model(family, method, settings, dtype)
    # non-square: 4 more latent cells across
    return sample(model, family, steps=6, height=side, width=side + 4 * family.downscale, seed=7)


def record_case(family_name: str, method: str, settings: dict) -> tuple[torch.Tensor, str]:
    """The case's latents with the model in float64, or in float32 where the release cannot run it in float64."""
    try:
        return sample_case(family_name, method, settings, torch.float64), "float64"
    except Exception as exc:  # noqa: BLE001  any failure of the float64 path: the float32 one must work
        logger.info("golden latents: %s runs in float32 (%r)", family_name, exc)
        return sample_case(family_name, method, settings, torch.float32), "float32"


@pytest.fixture(scope="module")
def recorded(pack) -> dict:
    """The recorded latents and their machine; in record mode, every case sampled and written first."""
    path = golden_path()
    if RECORD:
        latents, dtypes = {}, {}
        for family, label, method, settings in CASES:
            latent, dtypes[f"{family} / {label}"] = record_case(family, method, settings)
            latents[f"{family} / {label}"] = latent.contiguous()
        GOLDEN_DIR.mkdir(exist_ok=True)
        save_file(latents, path, metadata={"fingerprint": json.dumps(fingerprint()), "dtypes": json.dumps(dtypes)})
    if not path.exists():
        pytest.skip(
            f"no golden latents for ComfyUI {EXPECTED_COMFYUI} ({path.name}); record them as the module docstring says"
        )
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    return {
        "latents": load_file(path),
        "machine": json.loads(metadata["fingerprint"]),
        "dtypes": json.loads(metadata["dtypes"]),
    }


@pytest.mark.parametrize(
    ("family_name", "label", "method", "settings"), CASES, ids=[f"{c[0]}-{c[1].replace(' ', '_')}" for c in CASES]
)
def test_same_seed_gives_the_recorded_latents(recorded, family_name, label, method, settings):
    key = f"{family_name} / {label}"
    assert key in recorded["latents"], f"{key} was not recorded; record the goldens again"
    expected = recorded["latents"][key]
    dtype = recorded["dtypes"][key]
    latent = sample_case(family_name, method, settings, getattr(torch, dtype))
    assert latent.shape == expected.shape
    assert latent.dtype == expected.dtype
    assert torch.isfinite(latent).all()
    if recorded["machine"] == fingerprint():
        assert torch.equal(latent, expected), (
            f"{key}: not bitwise equal to the recorded latents (largest difference "
            f"{(latent - expected).abs().max().item():.3e})"
        )
    elif dtype != "float64":
        pytest.skip(f"{key} ran in {dtype}: compared on the recording machine only ({recorded['machine']})")
    else:
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            latent.double(),
            expected.double(),
            rtol=0,
            atol=1e-6 * scale,
            msg=lambda m: f"{key} (recorded on {recorded['machine']}): {m}",
        )

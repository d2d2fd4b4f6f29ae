"""Shared fixtures: the real ComfyUI imported in-process, tiny models of each family, a real server.

Two tiers. ``tests/unit/`` tests the pure parts (``merging/``, the config and settings, the steps, heatmap
rendering) with torch alone: a run of only that folder (``make unit``) never imports ComfyUI, and ``pack`` is then
the bare package (``devkit.comfy_env.import_algorithms``). Every other test runs against the real ComfyUI from
``.comfyui/ComfyUI`` (``make test`` creates it; ``COMFYUI_DIR`` overrides it), imported once before any test module
with the CPU forced and the ``utils`` shadowing trap avoided (``devkit.comfy_env``); the pack is imported as the
package ``tokenmerge``, the way ComfyUI loads it, never by its folder name.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit import comfy_env, standin_files, tiny_models
from devkit.comfy_server import STANDIN_MODELS_DIR, ComfyServer

if TYPE_CHECKING:
    import torch

UNIT_DIR = Path(__file__).resolve().parent / "unit"


def unit_tier_only(config: pytest.Config) -> bool:
    """Whether this run was asked for the unit tier alone (every path given lies in ``tests/unit/``)."""
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return bool(paths) and all(path.is_relative_to(UNIT_DIR) for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    if not unit_tier_only(config):
        comfy_env.bootstrap_comfyui()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected nothing is a broken suite, never a green one."""
    if session.testscollected == 0 and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pack():
    """This repository, imported as the node pack package ``tokenmerge``; in a unit-tier run, the bare package."""
    return comfy_env.import_pack() if comfy_env.comfyui_imported() else comfy_env.import_algorithms()


@pytest.fixture(scope="session", params=sorted(tiny_models.FAMILIES))
def family(request) -> tiny_models.TinyFamily:
    """Each tiny family in turn (sd15, sdxl, sd3, flux, chroma, qwen_image, pixart_alpha, lumina2, wan21)."""
    return tiny_models.FAMILIES[request.param]


def enter_call(
    merger,
    latent_shape: list[int],
    sigma: float | None = None,
    sample_sigmas: list[float] | None = None,
    cond_or_uncond: list[int] | None = None,
    **call_info,
) -> None:
    """Set the model call in progress of ``merger``'s state as the pack's call wrapper would, for a latent of
    ``latent_shape`` at ``sigma`` of the run ``sample_sigmas``; ``call_info`` is what the wrapper reads from the
    call's conditioning (``text_tokens``, ``reference_method``)."""
    import torch

    from tokenmerge.patching.model_call import model_call

    options = {
        "cond_or_uncond": cond_or_uncond or [0],
        "sigmas": None if sigma is None else torch.tensor([sigma]),
        "sample_sigmas": None if sample_sigmas is None else torch.tensor(sample_sigmas),
    }
    merger.state.call = model_call(
        merger.config,
        merger.state,
        torch.zeros(latent_shape),
        options,
        merger.token_grids(tuple(latent_shape)),
        merger.switch_sigma,
        **call_info,
    )


def merge_with(model, method: str, ratio: float = 0.5, **advanced):
    """``model`` through a merging node as a user wires it: ``importance`` (the Simple node, or the Advanced one
    with the ``advanced`` settings changed from its defaults), ``tome`` (2x2 windows) or ``sdtm`` (the Simple node)."""
    from tokenmerge.nodes import importance, sdtm

    if method == "sdtm":
        return sdtm.TokenMergeSDTM.execute(model, ratio)[0]
    if method == "tome":
        return importance.TokenMergeSpatialToMe.execute(
            model, ratio, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
        )[0]
    if not advanced:
        return importance.TokenMergeImportance.execute(model, ratio)[0]
    settings = {
        "max_downsample": "auto",
        "dst_fraction": 0.25,
        "pool_factor": 1.4,
        "dst_mode": "random",
        "merge_cross_attention": False,
        "merge_feed_forward": False,
        "prune_until": 0.1,
        "start_percent": 0.0,
        "end_percent": 1.0,
        "seed": 0,
        **advanced,
    }
    return importance.TokenMergeImportanceAdvanced.execute(model, ratio, **settings)[0]


SDTM_ADVANCED_DEFAULTS = {
    "deviation": 0.2,
    "switch_percent": 0.4,
    "window_y": 2,
    "window_x": 2,
    "similarity_weight": 0.05,
    "detail_destination": "dependent",
    "detail_mlp_only": True,
    "protect_every": 3,
    "cache_weight": 0.2,
    "cache_limit_mb": 2048,
    "start_percent": 0.0,
    "end_percent": 1.0,
    "seed": 0,
}


def sdtm_advanced(model, ratio: float = 0.4, **overrides):
    """``model`` through Token Merge (SDTM), Advanced, at its defaults with ``overrides`` changed."""
    from tokenmerge.nodes.sdtm import TokenMergeSDTMAdvanced

    return TokenMergeSDTMAdvanced.execute(model, ratio, **{**SDTM_ADVANCED_DEFAULTS, **overrides})[0]


def sample(
    patcher,
    family: tiny_models.TinyFamily,
    *,
    seed: int = 42,
    steps: int = 3,
    cfg: float = 4.0,
    sampler: str = "euler",
    scheduler: str = "normal",
    height: int | None = None,
    width: int | None = None,
    batch: int = 1,
    frames: int = 5,
    latent: torch.Tensor | None = None,
    positive: list | None = None,
    negative: list | None = None,
    **sample_kwargs,
) -> torch.Tensor:
    """Sample through ``comfy.sample.sample`` (the KSampler path) with random conditioning of the family's
    shapes; ``sample_kwargs`` go to it (``denoise``, ``start_step``, ``last_step``, ...)."""
    import comfy.sample

    side = max(family.min_side, 64)
    if latent is None:
        latent = family.empty_latent(height or side, width or side, batch=batch, frames=frames)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        patcher,
        noise,
        steps,
        cfg,
        sampler,
        scheduler,
        positive or family.conditioning(1),
        negative or family.conditioning(2),
        latent,
        disable_pbar=True,
        seed=seed,
        **sample_kwargs,
    )


def sd3_prompt(node: str, inputs: dict, *, cfg: float, steps: int, width: int, height: int, batch: int) -> dict:
    """Stock nodes only: the SD3 stand-in through ``node``, conditioned by the random CLIP-L, decoded and previewed."""
    return {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tokenmerge_tiny_sd3_clip_l.safetensors", "weight_dtype": "default"},
        },
        "2": {"class_type": node, "inputs": {"model": ["1", 0], **inputs}},
        "3": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "tokenmerge_random_clip_l.safetensors", "type": "stable_diffusion"},
        },
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a blue square"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": ""}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "7": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["2", 0],
                "seed": 1,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["4", 0],
                "negative": ["5", 0],
                "latent_image": ["6", 0],
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": "tokenmerge_tiny_taesd_16ch.safetensors"}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["8", 0]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes (what ``/view`` and the demo return)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def state_of(patched):
    """The :class:`MergeState` a merging node attached to its patched clone (counters, maps, caches)."""
    from tokenmerge.patching.apply import STATE_ATTACHMENT

    return patched.get_attachment(STATE_ATTACHMENT)


@pytest.fixture(scope="session")
def standin_models() -> Path:
    """The folder of model files a server loads: the random stand-ins (written once, then reused) and links to the
    committed, trained shapes demo models."""
    from devkit.shapes_training.training import link_demo_models

    standin_files.write_standin_models(str(STANDIN_MODELS_DIR))
    link_demo_models(STANDIN_MODELS_DIR)
    return STANDIN_MODELS_DIR


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, standin_models):
    """A real ComfyUI server (``main.py --cpu --use-pytorch-cross-attention``) with this pack installed."""
    server = ComfyServer(tmp_path_factory.mktemp("comfy_base"), models_dir=standin_models)
    server.start()
    try:
        yield server
    finally:
        server.stop()

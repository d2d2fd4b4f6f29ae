"""Each tiny family is a genuine ComfyUI model that samples deterministically through comfy.sample."""

from __future__ import annotations

import pytest
import torch
from conftest import sample

from devkit import standin_files, tiny_models

EXPECTED_MODEL_CLASS = {
    "sd15": "BaseModel",
    "sdxl": "SDXL",
    "sd3": "SD3",
    "flux": "Flux",
    "chroma": "Chroma",
    "flux2": "Flux2",
    "qwen_image": "QwenImage",
    "pixart_alpha": "PixArt",
    "lumina2": "Lumina2",
    "zimage": "Lumina2",
    "wan21": "WAN21",
    "hunyuan_video": "HunyuanVideo",
}


@pytest.fixture(scope="module")
def patchers():
    return {name: tiny_models.build_patcher(name, seed=0) for name in tiny_models.FAMILIES}


def test_family_builds_the_real_comfyui_model_class(family, patchers):
    import comfy.model_patcher

    patcher = patchers[family.name]
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
    assert type(patcher.model).__name__ == EXPECTED_MODEL_CLASS[family.name]
    assert type(patcher.model.model_config).__name__ == family.model_config
    assert all(torch.isfinite(p).all() for p in patcher.model.parameters())


def test_family_samples_finite_deterministic_latents_with_cfg(family, patchers):
    patcher = patchers[family.name]
    side = max(family.min_side, 64)
    first = sample(patcher, family, seed=7, cfg=4.0, height=side, width=side + 32, batch=2)
    again = sample(patcher, family, seed=7, cfg=4.0, height=side, width=side + 32, batch=2)
    other_seed = sample(patcher, family, seed=8, cfg=4.0, height=side, width=side + 32, batch=2)

    expected = tuple(family.empty_latent(side, side + 32, batch=2, frames=5).shape)
    assert tuple(first.shape) == expected
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed)


def test_sdxl_tiny_has_attention_only_below_full_resolution(patchers):
    from comfy.ldm.modules.attention import SpatialTransformer

    unet = patchers["sdxl"].model.diffusion_model
    full_res = [layer for block in unet.input_blocks[:2] for layer in block]
    downsampled = [layer for block in unet.input_blocks[2:] for layer in block]
    assert not any(isinstance(layer, SpatialTransformer) for layer in full_res)
    assert any(isinstance(layer, SpatialTransformer) for layer in downsampled)


@pytest.mark.parametrize(("kind", "config_class"), [("sd15", "SD15"), ("sd3", "SD3")])
def test_loader_detects_the_standin_files_as_their_family(kind, config_class):
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model_state_dict(standin_files.loader_state_dict(kind))
    assert type(patcher.model.model_config).__name__ == config_class


def test_random_init_leaves_the_global_rng_alone():
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)  # construction itself draws from it
    state = torch.random.get_rng_state()
    tiny_models.random_init_(first, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    tiny_models.random_init_(second, seed=3)
    assert torch.equal(first.weight, second.weight)

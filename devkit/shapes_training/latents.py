"""Encode training scenes once with the exported demo VAE (through ComfyUI's own ``comfy.sd.VAE``).

The denoisers train on these cached latents (``.comfyui/shapes_cache/latents.pt``): encoding a 128x128
scene costs far more than a denoiser step on its 16x16 latent, so each scene is encoded once. The cache holds
the SD1.x latents (4 channels); the SD3 ones are the same numbers through the 16-channel file's scale and
shift (:func:`to_sd3_raw`, checked against a real 16-channel encode).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from devkit import REPO_ROOT, comfy_env
from devkit.shapes_training import scenes
from devkit.shapes_training.training import TRAIN_SEED

CACHE = REPO_ROOT / ".comfyui" / "shapes_cache" / "latents.pt"
CHUNK = 64


def load_vae(path: Path):
    """A ``comfy.sd.VAE`` from one of the demo VAE files, as the stock VAELoader builds it."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


def vae_affine(path: Path) -> tuple[float, float]:
    import safetensors.torch

    state = safetensors.torch.load_file(str(path))
    return state["vae_scale"].item(), state["vae_shift"].item()


def to_sd3_raw(raw4: torch.Tensor, vae4: Path, vae16: Path) -> torch.Tensor:
    """16-channel raw latents [B, 16, h, w] from 4-channel ones [B, 4, h, w] (same encoder, padded)."""
    s4, b4 = vae_affine(vae4)
    s16, b16 = vae_affine(vae16)
    encoded = (raw4 - b4) * s4  # the encoder's own output
    raw16 = torch.full((raw4.shape[0], 16, *raw4.shape[2:]), b16)
    raw16[:, :4] = encoded / s16 + b16
    return raw16


def scene_seed(index: int) -> int:
    """Scenes are drawn in chunks of CHUNK, each chunk from its own seed."""
    return TRAIN_SEED * 1_000 + index // CHUNK


def build_cache(count: int) -> dict:
    from devkit.shapes_training.train_vae import VAE_FILE

    vae = load_vae(VAE_FILE)
    latents, prompts = [], []
    for start in range(0, count, CHUNK):
        batch = scenes.sample_scenes(scene_seed(start), CHUNK)
        images, _ = scenes.render(batch)
        with torch.no_grad():  # VAE.encode leaves autograd on; a graph per chunk would pile up
            latents.append(vae.encode(images.permute(0, 2, 3, 1)).float())  # IMAGE layout [B, H, W, 3]
        prompts += [scene.prompt.text() for scene in batch]
        print(f"[latents] {start + CHUNK}/{count}", flush=True)
    cache = {"latents": torch.cat(latents)[:count], "prompts": prompts[:count]}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, CACHE)
    return cache


def load_cache() -> dict:
    return torch.load(CACHE, weights_only=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6144)
    args = parser.parse_args(argv)
    comfy_env.bootstrap_comfyui()
    build_cache(args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())

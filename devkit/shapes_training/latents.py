"""Encode training scenes once with the exported demo VAE (through ComfyUI's own ``comfy.sd.VAE``).

The denoisers train on these cached latents (``.comfyui/shapes_cache/latents.pt``): encoding a 128x128
scene costs far more than a denoiser step on its 16x16 latent, so each scene is encoded once. The cache holds
the SD1.x latents (4 channels); the SD3 ones are the same numbers through the 16-channel file's scale and
shift (:func:`to_sd3_raw`, checked against a real 16-channel encode). ``--side 256`` caches the same scenes
rendered at 256x256 (32x32 latents, ``latents-256.pt``) for the 256 px DiT: the VAE is convolutional, so it
encodes any side that is a multiple of 8.
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

CACHE_DIR = REPO_ROOT / ".comfyui" / "shapes_cache"
CHUNK = 64
LATENT_FACTOR = 8  # the VAE's downscale: a scene of side px is a latent of side / 8


def cache_path(side: int = scenes.SIDE) -> Path:
    """The cache file of the scenes rendered at ``side`` px: ``latents.pt`` at 128, ``latents-<side>.pt`` else."""
    return CACHE_DIR / ("latents.pt" if side == scenes.SIDE else f"latents-{side}.pt")


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


def build_cache(count: int, side: int = scenes.SIDE) -> dict:
    """Encode the first ``count`` training scenes, rendered at ``side`` px, into :func:`cache_path`. Every side
    caches the same scenes (the seeds do not depend on it)."""
    from devkit.shapes_training.train_vae import VAE_FILE

    vae = load_vae(VAE_FILE)
    latents, prompts = [], []
    for start in range(0, count, CHUNK):
        batch = scenes.sample_scenes(scene_seed(start), CHUNK)
        images, _ = scenes.render(batch, side)
        with torch.no_grad():  # VAE.encode leaves autograd on; a graph per chunk would pile up
            latents.append(vae.encode(images.permute(0, 2, 3, 1)).float())  # IMAGE layout [B, H, W, 3]
        prompts += [scene.prompt.text() for scene in batch]
        print(f"[latents] {start + CHUNK}/{count}", flush=True)
    cache = {"latents": torch.cat(latents)[:count], "prompts": prompts[:count]}
    path = cache_path(side)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def load_cache(side: int = scenes.SIDE) -> dict:
    """The cache of the scenes rendered at ``side`` px: latents [count, 4, side / 8, side / 8] and their prompts."""
    path = cache_path(side)
    cache = torch.load(path, weights_only=True)
    if cache["latents"].shape[-1] != side // LATENT_FACTOR:
        found = cache["latents"].shape[-1]
        raise ValueError(f"{path} holds latents of side {found}, not {side // LATENT_FACTOR}: rebuild it (latents.py)")
    return cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6144)
    parser.add_argument(
        "--side",
        type=int,
        default=scenes.SIDE,
        help=f"render the scenes at this side in px (a multiple of {LATENT_FACTOR}; 256 for the 256 px DiT)",
    )
    args = parser.parse_args(argv)
    if args.side < LATENT_FACTOR or args.side % LATENT_FACTOR:
        parser.error(f"--side must be a positive multiple of {LATENT_FACTOR} (the VAE's downscale), got {args.side}")
    comfy_env.bootstrap_comfyui()
    build_cache(args.count, args.side)
    return 0


if __name__ == "__main__":
    sys.exit(main())

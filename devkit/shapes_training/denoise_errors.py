"""Where along the noise levels does the UNet fall short of the DiT it learns from?

For held-out scenes (encoded with the demo VAE) and one fixed noise draw, each denoiser estimates the clean latent
from ``x0 + sigma * eps`` at a ladder of SD1.x sigmas, under the scene's own prompt. The table gives the mean square
error of each estimate: over the whole latent, inside the prompted objects, and after average pooling to a 4x4 grid
(the layout: where the objects are and what colour, without their edges and the background's texture). The DiT sees
the same noisy latent through :class:`devkit.shapes_training.teacher.DitTeacher`. A ratio far above 1 at high sigma
means the UNet draws a worse layout than its teacher; near 1 at low sigma, it finishes as well. Far steadier than
the sanity bar's 48 prompts for comparing two checkpoints. ``--side 256`` renders the scenes at 256x256 and compares
the committed UNet (trained at 128 px only) with the 256 px DiT's export::

    .comfyui/venv/bin/python devkit/shapes_training/denoise_errors.py [--checkpoint] [--samples 64] [--seed 3000001]
    .comfyui/venv/bin/python devkit/shapes_training/denoise_errors.py --side 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

# The committed models' side (the kit's scenes.SIDE), from a module that imports neither ComfyUI nor the kit: main
# imports ComfyUI before the kit, so that the kit finds the whole pack.
from benchmarks.quality_cells import SIDE
from devkit import comfy_env

SIGMAS = (14.0, 8.0, 5.0, 2.0, 1.0, 0.5, 0.3, 0.1)
DEFAULT_SEED = 3_000_001  # held out (training draws seeds below 10^6), and neither the bar's nor the choosing set
LAYOUT_POOL = 4  # 16x16 latent -> a 4x4 layout grid (8 on the 32x32 latent of a 256 px scene: the same grid)


def squared_errors(
    estimate: torch.Tensor, clean: torch.Tensor, objects: torch.Tensor, pool: int = LAYOUT_POOL
) -> dict[str, float]:
    """Mean square errors of ``estimate`` against ``clean`` [B, C, h, w]: all of it, inside ``objects`` [B, 1, h, w]
    (bool), and of their ``pool`` x ``pool`` average-pooled versions."""
    error = (estimate - clean).square().mean(1, keepdim=True)  # [B, 1, h, w]
    pooled = torch.nn.functional.avg_pool2d(estimate - clean, pool)  # [B, C, h / pool, w / pool]
    return {
        "all": error.mean().item(),
        "objects": error[objects].mean().item(),
        "layout": pooled.square().mean().item(),
    }


@torch.no_grad()
def denoise_errors(unet_weights: dict[str, torch.Tensor], samples: int, seed: int, side: int = SIDE) -> list[dict]:
    """Per sigma of SIGMAS: the UNet's (from ``unet_weights``) and the DiT's clean-estimate errors on scenes rendered
    at ``side`` px (the DiT exported for that side)."""
    from devkit.shapes_training import latents as latent_cache
    from devkit.shapes_training import scenes, train_denoiser
    from devkit.shapes_training.train_vae import VAE_FILE
    from tokenmerge.shapes import prompt as shapes_prompt

    unet = train_denoiser.build("sd15")
    unet.diffusion_model.load_state_dict(unet_weights)
    teacher = train_denoiser.load_teacher(unet, side)
    held_out = scenes.sample_scenes(seed, samples)
    images, _ = scenes.render(held_out, side)
    raw = latent_cache.load_vae(VAE_FILE).encode(images.permute(0, 2, 3, 1)).float()  # IMAGE layout [B, H, W, 3]
    _, masks = scenes.render(held_out, raw.shape[-1])
    objects = masks.amax(1, keepdim=True) > 0.5  # union of the prompted objects [B, 1, h, w]
    context, pooled = shapes_prompt.encode_batch([scene.prompt for scene in held_out])
    clean = unet.process_latent_in(raw)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=gen)
    ms = unet.model_sampling
    pool = LAYOUT_POOL * side // SIDE
    rows = []
    for level in SIGMAS:
        sigma = torch.full((samples,), level)
        noisy = clean + level * noise
        eps = unet.diffusion_model(ms.calculate_input(sigma, noisy), ms.timestep(sigma), context)
        by_unet = squared_errors(noisy - level * eps, clean, objects, pool)
        by_dit = squared_errors(teacher.clean_estimate(noisy, sigma, context, pooled, gen), clean, objects, pool)
        rows.append({"sigma": level, "unet": by_unet, "dit": by_dit})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [
        "| sigma | UNet all / objects / layout | DiT all / objects / layout | ratio all / objects / layout |",
        "|---|---|---|---|",
    ]
    for row in rows:
        unet, dit = row["unet"], row["dit"]
        keys = ("all", "objects", "layout")
        lines.append(
            f"| {row['sigma']:g} | "
            + " / ".join(f"{unet[k]:.4f}" for k in keys)
            + " | "
            + " / ".join(f"{dit[k]:.4f}" for k in keys)
            + " | "
            + " / ".join(f"{unet[k] / dit[k]:.2f}" for k in keys)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="the training checkpoint's EMA weights, rounded as the export stores them (default: the committed file)",
    )
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="scene seed (any from 10^6 on is held out from training)"
    )
    parser.add_argument(
        "--side",
        type=int,
        default=SIDE,
        help=f"render the scenes at this side in px, against the DiT exported for it (default {SIDE})",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.seed < 1_000_000:
        parser.error(f"--seed must be at least 1000000 (training draws from the seeds below), got {args.seed}")
    if args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    if args.threads:
        torch.set_num_threads(args.threads)
    comfy_env.bootstrap_comfyui()
    import safetensors.torch

    from devkit.shapes_training import train_denoiser

    error = train_denoiser.side_error("sd3", args.side, export_needed=True)  # the DiT it compares with
    if error is not None:
        parser.error(error)
    if args.checkpoint:
        step, weights = train_denoiser.checkpoint_weights("sd15")
        print(f"[denoise_errors] sd15 checkpoint at step {step}", flush=True)
    else:
        weights = safetensors.torch.load_file(str(train_denoiser.UNET_FILE))
    print(format_rows(denoise_errors(weights, args.samples, args.seed, args.side)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

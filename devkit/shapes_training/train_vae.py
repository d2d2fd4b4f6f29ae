"""Train the demo VAE: ComfyUI's TAESD architecture (``comfy.taesd.taesd.TAESD``), 4 latent channels at 1/8.

The network is fully convolutional, so it trains on random crops of half the scene's side (64x64 crops of
128x128 scenes: 4x cheaper than whole scenes) and works on any size that is a multiple of 8. ``--sides 128 256``
takes its steps in turn from 128 px scenes and from 256 px ones (128x128 crops): a decoder that saw only 64 px
crops never met a flat area as wide as a large object at 256 px, and paints the interiors of large yellow ones
red. Loss: L1 + MSE of the reconstruction with the
object pixels weighted up and a chroma term (:func:`reconstruction_loss`), on latents with Gaussian noise
added (so the decoder forgives a denoiser's small errors), plus a small L2 pull on the latents (so their
scale stays bounded). ``--decoder-only`` freezes the encoder, so the decoder can go on improving after the
denoisers' latents were made; the export then keeps the committed ``vae_scale``/``vae_shift`` bit for bit.

``--export`` writes the two VAELoader files into ``demo_models/vae/``:

* ``tokenmerge_shapes_taesd.safetensors``: 4 channels, for the SD1.x demo UNet. ``vae_scale``/``vae_shift``
  are set so that the latents, after SD1.x's latent scale (0.18215), have mean 0 and std 1.
* ``tokenmerge_shapes_taesd3.safetensors``: the same weights padded to 16 channels for the SD3 demo DiT
  (SD3's latent format has 16). Channels 4-15 are constant; the DiT learns to ignore them. This saves a
  second training; the SD3 scale and shift (1.5305, 0.0609) are matched the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from devkit import comfy_env
from devkit.shapes_training import scenes
from devkit.shapes_training.training import DEMO_MODELS, TRAIN_SEED, Run

SD15_SCALE = 0.18215
SD3_SCALE, SD3_SHIFT = 1.5305, 0.0609
VAE_FILE = DEMO_MODELS / "vae" / "tokenmerge_shapes_taesd.safetensors"
VAE3_FILE = DEMO_MODELS / "vae" / "tokenmerge_shapes_taesd3.safetensors"


def build(latent_channels: int = 4) -> torch.nn.Module:
    from comfy.taesd.taesd import TAESD

    from devkit.tiny_models import random_init_

    return random_init_(TAESD(latent_channels=latent_channels), seed=0)


def crops(images: torch.Tensor, side: int, gen: torch.Generator) -> torch.Tensor:
    """One random side x side crop per image, at multiples of 8 px: [B, C, side, side]."""
    out = []
    for image in images:
        y, x = (torch.randint(0, (image.shape[-1] - side) // 8 + 1, (2,), generator=gen) * 8).tolist()
        out.append(image[:, y : y + side, x : x + side])
    return torch.stack(out)


def reconstruction_loss(y: torch.Tensor, x: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """L1 + MSE, with object pixels weighted 10x and a chroma term (each pixel minus its channel mean).

    The objects cover a few percent of the pixels and the backgrounds are nearly grey, so a plain loss is
    first minimised by a grey decoder; the weights make the objects' colours count from the start.
    """
    weight = 1 + 10 * objects  # [B, 1, H, W]
    plain = ((y - x).abs() + (y - x).pow(2)) * weight
    chroma = ((y - y.mean(1, keepdim=True)) - (x - x.mean(1, keepdim=True))).abs() * weight
    return (plain.mean() + 3 * chroma.mean()) / weight.mean()


def train(
    steps: int,
    batch: int,
    lr: float,
    decoder_only: bool = False,
    from_export: bool = False,
    save_every: int = 100,
    sides: tuple[int, ...] = (scenes.SIDE,),
) -> None:
    """Train to ``steps`` in total; ``decoder_only`` keeps the encoder (and so the latent space the denoisers were
    trained in) fixed and goes on improving the decoder; ``from_export`` starts, without a checkpoint, from the
    committed weights; step ``i`` renders its scenes at ``sides[i % len(sides)]`` px and crops half of that."""
    vae = build()
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    run = Run("vae", {"vae": vae}, optimizer)
    if from_export and not run.resumed:
        import safetensors.torch

        exported = safetensors.torch.load_file(str(VAE_FILE))  # fp16 weights; export recomputes scale and shift
        vae.load_state_dict({k: v.float() for k, v in exported.items()})
        run.start_from(*run.last_export(), source=VAE_FILE.name)
    gen = torch.Generator().manual_seed(TRAIN_SEED + run.step)
    while run.step < steps:
        run.warm_up_lr(lr)
        side = sides[run.step % len(sides)]
        images, masks = scenes.render(scenes.sample_scenes(TRAIN_SEED * 7919 + run.step, batch), side)
        both = crops(torch.cat([images, masks.amax(1, keepdim=True)], 1), side // 2, gen)  # [B, 3 + 1, s/2, s/2]
        x, objects = both[:, :3] * 2 - 1, both[:, 3:]  # TAESD's encoder input is [-1, 1] (encode() maps it to [0, 1])
        with torch.set_grad_enabled(not decoder_only):
            z = vae.taesd_encoder(x * 0.5 + 0.5)
        z_noisy = z + 0.1 * z.detach().std() * torch.randn(z.shape, generator=gen)
        y = vae.taesd_decoder(z_noisy) * 2 - 1
        loss = reconstruction_loss(y, x, objects) + 1e-4 * z.pow(2).mean()
        run.optimise(loss)
        run.advance(loss, steps, log_every=20, save_every=save_every)


def latent_stats(vae: torch.nn.Module, count: int = 128) -> tuple[float, float]:
    """Mean and std of the raw encoder output over ``count`` held-out scenes."""
    images, _ = scenes.render(scenes.sample_scenes(999_983, count))
    with torch.no_grad():
        z = vae.taesd_encoder(images)
    return z.mean().item(), z.std().item()


AFFINE = ("vae_scale", "vae_shift")


def committed_affine(state: dict[str, torch.Tensor]) -> tuple[dict, dict] | None:
    """The committed files' scale and shift (4-channel, 16-channel) when ``state``'s encoder, stored in fp16, is the
    committed encoder (a decoder-only run from the export); None when the encoder changed or nothing is committed."""
    import safetensors.torch

    if not (VAE_FILE.exists() and VAE3_FILE.exists()):
        return None
    committed = safetensors.torch.load_file(str(VAE_FILE))
    encoder = [k for k in state if k.startswith("taesd_encoder.")]
    if any(not torch.equal(state[k].half(), committed[k]) for k in encoder):
        return None
    committed3 = safetensors.torch.load_file(str(VAE3_FILE))
    return {k: committed[k] for k in AFFINE}, {k: committed3[k] for k in AFFINE}


def export() -> None:
    import safetensors.torch

    vae = build()
    run = Run("vae", {"vae": vae}, torch.optim.Adam(vae.parameters()))
    mean, std = latent_stats(vae)
    # TAESD.encode: enc / vae_scale + vae_shift. Target raw latents: std 1 / SD15_SCALE, mean 0.
    scale = std * SD15_SCALE
    state = {k: v for k, v in vae.state_dict().items() if k.startswith("taesd_")}
    state |= {"vae_scale": torch.tensor(scale), "vae_shift": torch.tensor(-mean / scale)}
    kept = committed_affine(state)
    if kept is not None:  # a decoder-only run: every cached latent and denoiser keeps its scale exactly
        state |= kept[0]
        scale = kept[0]["vae_scale"].item()
    VAE_FILE.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.half().contiguous() if v.ndim else v.float() for k, v in state.items()}, VAE_FILE)
    # 16 channels: pad the encoder's last conv with zero rows and the decoder's first conv with zero columns.
    padded = dict(state)
    enc_w, enc_b = "taesd_encoder.14.weight", "taesd_encoder.14.bias"
    dec_w = "taesd_decoder.1.weight"
    padded[enc_w] = torch.cat([state[enc_w], torch.zeros(12, *state[enc_w].shape[1:])])
    padded[enc_b] = torch.cat([state[enc_b], torch.zeros(12)])
    padded[dec_w] = torch.cat([state[dec_w], torch.zeros(state[dec_w].shape[0], 12, 3, 3)], dim=1)
    scale3 = std * SD3_SCALE
    padded |= {"vae_scale": torch.tensor(scale3), "vae_shift": torch.tensor(SD3_SHIFT - mean / scale3)}
    if kept is not None:
        padded |= kept[1]
        scale3 = kept[1]["vae_scale"].item()
    safetensors.torch.save_file(
        {k: v.half().contiguous() if v.ndim else v.float() for k, v in padded.items()}, VAE3_FILE
    )
    run.log(
        f"exported at step {run.step}: raw encoder mean {mean:.4f} std {std:.4f}; "
        f"vae_scale {scale:.4f} (4ch), {scale3:.4f} (16ch)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=700, help="total optimiser steps (resumes from a checkpoint)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--decoder-only", action="store_true", help="keep the encoder fixed (latent space frozen)")
    parser.add_argument(
        "--from-export",
        action="store_true",
        help="without a checkpoint, continue from the committed weights (step from the log)",
    )
    parser.add_argument(
        "--sides",
        type=int,
        nargs="+",
        default=[scenes.SIDE],
        help="scene sides in px, one per step in turn (each step crops half its side)",
    )
    parser.add_argument("--export", action="store_true", help="write the VAELoader files from the checkpoint")
    args = parser.parse_args(argv)
    if any(side % 16 for side in args.sides):
        parser.error(f"--sides must be multiples of 16 (their half-side crops are whole latents), got {args.sides}")
    comfy_env.bootstrap_comfyui()
    torch.manual_seed(0)
    if args.export:
        export()
    else:
        train(
            args.steps,
            args.batch,
            args.lr,
            decoder_only=args.decoder_only,
            from_export=args.from_export,
            sides=tuple(args.sides),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo models' sanity bar: do unmerged CFG samples show the prompted objects, and does CFG matter?

Samples held-out prompts (scenes no model trained on) with CFG and without it (cfg 1), decodes them with the
demo VAE and asks the classifier, per prompted object, whether its slot holds the prompted shape and colour.
The bar (issue 7): at least 90 % with CFG, clearly less without. The colour-only and shape-only rates say
which half is missing. ``--checkpoint`` judges the EMA weights of the training checkpoint (stored as the export would
store them) instead of the committed file, so a run can be checked mid-way without an export. ``--side 256`` samples
the 256 px DiT (its export, or with ``--checkpoint`` its run's checkpoint) at 256x256 and judges the samples
downscaled to the classifier's 128 px::

    .comfyui/venv/bin/python devkit/shapes_training/sanity.py sd15 [--checkpoint] [--samples 48] [--grid out.png]
    .comfyui/venv/bin/python devkit/shapes_training/sanity.py sd3 --side 256 [--checkpoint]
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

BAR = 0.9


def checkpoint_model(family: str, side: int = SIDE):
    """The ModelPatcher of the EMA weights in the training checkpoint of ``family`` on ``side`` px scenes."""
    import comfy.sd

    from devkit.shapes_training.train_denoiser import checkpoint_weights

    step, weights = checkpoint_weights(family, side)
    print(f"[sanity] {family} checkpoint at step {step}", flush=True)
    return comfy.sd.load_diffusion_model_state_dict(weights)


def judged_view(images: torch.Tensor) -> torch.Tensor:
    """Samples [B, 3, side, side] as the classifier knows scenes: area-downscaled (each pixel the mean of the square
    it covers, so antialiased) to the 128 px it was trained on [B, 3, 128, 128]; a 128 px sample is unchanged."""
    return torch.nn.functional.interpolate(images, size=(SIDE, SIDE), mode="area")


def rates(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Shares of the prompted objects (occupied slots of ``labels`` [B, 5]) whose slot the classifier's ``predicted``
    labels [B, 5] name right: shape and colour, colour alone, shape alone (an empty prediction is wrong in all)."""
    from devkit.shapes_training import scenes

    occupied = labels > 0
    want, got = labels[occupied] - 1, predicted[occupied] - 1  # class - 1 = shape * colours + colour; -1 is empty
    colours = len(scenes.COLOURS)
    named = got >= 0
    return {
        "object": (got == want).float().mean().item(),
        "colour": (named & (got % colours == want % colours)).float().mean().item(),
        "shape": (named & (got // colours == want // colours)).float().mean().item(),
    }


def sanity(
    family: str,
    checkpoint: bool,
    samples: int,
    steps: int,
    batch: int,
    cfg: float,
    grid: Path | None = None,
    seed: int | None = None,
    side: int = SIDE,
) -> dict[str, dict[str, float]]:
    from benchmarks import quality
    from devkit.shapes_training import classifier, scenes
    from devkit.shapes_training.training import EVAL_SEED

    # The files as the benchmark loads them; a checkpoint (of any side) goes into the committed 128 px ones' place.
    loaded = quality.load_model(family, SIDE if checkpoint else side)
    if checkpoint:
        loaded.model = checkpoint_model(family, side)
    model = loaded.model
    held_out = scenes.sample_scenes(EVAL_SEED if seed is None else seed, samples)
    labels = torch.stack([scene.slot_labels() for scene in held_out])
    images: dict[float, list[torch.Tensor]] = {cfg: [], 1.0: []}
    with torch.no_grad():
        for start in range(0, samples, batch):
            chunk = held_out[start : start + batch]
            seeds = list(range(start, start + len(chunk)))
            for scale, decoded in images.items():
                latents = quality.sample_batch(loaded, model, seeds, [s.prompt for s in chunk], steps, scale, side)
                decoded.append(quality.decode(loaded, latents))
    judge = classifier.load()
    with torch.no_grad():
        result = {
            f"cfg {scale:g}": rates(judge(judged_view(torch.cat(batches))).argmax(-1), labels)
            for scale, batches in images.items()
        }
    if grid is not None:
        write_grid(grid, torch.cat(images[cfg])[:16], [s.prompt.text() for s in held_out[:16]])
    return result


def write_grid(path: Path, images: torch.Tensor, prompts: list[str]) -> None:
    """The first samples [N, 3, H, W] in a grid, each titled with its prompt (for a look by eye)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = (len(images) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, text in zip(axes.flat, images, prompts, strict=False):
        axis.imshow(image.permute(1, 2, 0).numpy())
        axis.set_title(text.replace(" and ", "\nand ").replace(" on a", "\non a"), fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=("sd15", "sd3"))
    parser.add_argument("--checkpoint", action="store_true", help="judge the training checkpoint's EMA weights")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cfg", type=float, default=3.0, help="the guidance scale (the benchmark's)")
    parser.add_argument("--grid", type=Path, help="write the first 16 CFG samples to this PNG")
    parser.add_argument(
        "--seed",
        type=int,
        help="scene seed (default EVAL_SEED; any seed from 10^6 on is held out): "
        "a second held-out set to choose between checkpoints, so the reported one stays unbiased",
    )
    parser.add_argument(
        "--side",
        type=int,
        default=SIDE,
        help=f"sd3: sample the model trained on scenes of this side in px (default {SIDE}), judged downscaled",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    comfy_env.bootstrap_comfyui()
    comfy_env.import_pack()  # the benchmark's conditioning reads the pack's prompt encoder
    from devkit.shapes_training.train_denoiser import side_error

    if args.seed is not None and args.seed < 1_000_000:
        parser.error(f"--seed must be at least 1000000 (training draws from the seeds below), got {args.seed}")
    # A run's checkpoint can be judged before it is exported.
    error = side_error(args.family, args.side, export_needed=args.side != SIDE and not args.checkpoint)
    if error is not None:
        parser.error(error)
    result = sanity(
        args.family, args.checkpoint, args.samples, args.steps, args.batch, args.cfg, args.grid, args.seed, args.side
    )
    name = args.family if args.side == SIDE else f"{args.family} at {args.side} px"
    for cell, rates in result.items():
        print(f"[sanity] {name} {cell}: " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()), flush=True)
    met = result[f"cfg {args.cfg:g}"]["object"] >= BAR
    print(f"[sanity] bar ({BAR:.0%} of objects with CFG): {'met' if met else 'not met'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The judge of the demo world: a small CNN that names the object in each of the five position slots.

Input: images [B, 3, H, W] in [0, 1] (any size; resized to 64x64). Output: logits [B, 5, SLOT_CLASSES]
(class 0 = empty slot, else shape x colour, see :mod:`.scenes`). Its 256-wide penultimate features serve
the quality benchmark's FID-like distance. Trained on freshly rendered scenes with blur and noise, so
VAE-decoded images (slightly soft) are in its distribution. ``python -m devkit.shapes_training.classifier``
trains it and writes ``demo_models/classifier/tokenmerge_shapes_classifier.safetensors``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from torch import nn

from devkit.shapes_training import scenes
from devkit.shapes_training.training import DEMO_MODELS, EVAL_SEED, Run
from tokenmerge.shapes.prompt import POSITIONS

CLASSIFIER_FILE = DEMO_MODELS / "classifier" / "tokenmerge_shapes_classifier.safetensors"
SIDE = 64


class SlotClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
            )

        self.body = nn.Sequential(stage(3, 32), stage(32, 64), stage(64, 96), nn.AdaptiveAvgPool2d(4))  # [B, 96, 4, 4]
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(96 * 4 * 4, 256), nn.SiLU())
        self.head = nn.Linear(256, len(POSITIONS) * scenes.SLOT_CLASSES)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, 256]."""
        x = nn.functional.interpolate(images, size=(SIDE, SIDE), mode="area") * 2 - 1
        return self.features(self.body(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images)).view(-1, len(POSITIONS), scenes.SLOT_CLASSES)


def load() -> SlotClassifier:
    import safetensors.torch

    model = SlotClassifier()
    model.load_state_dict(safetensors.torch.load_file(str(CLASSIFIER_FILE)))
    return model.eval()


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random blur (a 3x3 box on half the batch) and Gaussian noise, like VAE-decoded samples."""
    blurred = nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    pick = (torch.rand(images.shape[0], 1, 1, 1, generator=gen) < 0.5).float()
    images = pick * blurred + (1 - pick) * images
    return (images + 0.03 * torch.randn(images.shape, generator=gen)).clamp(0, 1)


def accuracy(
    model: SlotClassifier, count: int = 512, vae=None, side: int = scenes.SIDE, seed: int = EVAL_SEED
) -> float:
    """Fraction of held-out scene objects whose slot is named right (empty slots not counted); with ``vae``, of the
    scenes sent through it. Scenes rendered at another ``side`` are judged area-downscaled to the 128 px the
    classifier was trained on, as the sanity check judges samples of that side."""
    from devkit.shapes_training.sanity import judged_view

    batch = scenes.sample_scenes(seed, count)
    images, _ = scenes.render(batch, side)
    if vae is not None:
        images = torch.cat([vae_round_trip(images[i : i + 32], vae) for i in range(0, count, 32)])
    images = judged_view(images)  # [B, 3, 128, 128]
    labels = torch.stack([s.slot_labels() for s in batch])
    with torch.no_grad():
        predicted = model(images).argmax(-1)
    occupied = labels > 0
    return (predicted[occupied] == labels[occupied]).float().mean().item()


def vae_round_trip(images: torch.Tensor, vae) -> torch.Tensor:
    """``images`` [B, 3, H, W] encoded and decoded by a ``comfy.sd.VAE`` (what a sample looks like at best)."""
    with torch.no_grad():
        decoded = vae.decode(vae.encode(images.permute(0, 2, 3, 1)))  # IMAGE layout [B, H, W, 3]
    return decoded.float().movedim(-1, 1).clamp(0, 1)


VAE_POOL = 2048


def train(steps: int, batch: int, lr: float = 2e-3, through_vae: bool = False) -> None:
    """Train to ``steps`` in total; ``through_vae`` replaces half of each batch by scenes sent through the demo VAE
    (a pool of VAE_POOL, made once), so the judge knows the VAE's softened shapes and colours (resume an earlier
    run with it to fine-tune)."""
    model = SlotClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    run = Run("classifier", {"model": model}, optimizer)
    run.set_lr(lr)
    vae = None
    if through_vae:
        from devkit import comfy_env
        from devkit.shapes_training.latents import load_vae
        from devkit.shapes_training.train_vae import VAE_FILE

        comfy_env.bootstrap_comfyui()
        vae = load_vae(VAE_FILE)
        pool_scenes = scenes.sample_scenes(400_000, VAE_POOL)
        pool_images = torch.cat(
            [vae_round_trip(scenes.render(pool_scenes[i : i + 32])[0], vae) for i in range(0, VAE_POOL, 32)]
        )
        pool_labels = torch.stack([s.slot_labels() for s in pool_scenes])
    gen = torch.Generator().manual_seed(7 + run.step)
    while run.step < steps:
        batch_scenes = scenes.sample_scenes(500_000 + run.step, batch)
        images, _ = scenes.render(batch_scenes)
        labels = torch.stack([s.slot_labels() for s in batch_scenes])
        if vae is not None:
            pick = torch.randint(0, VAE_POOL, (batch // 2,), generator=gen)
            images[: batch // 2], labels[: batch // 2] = pool_images[pick], pool_labels[pick]
        logits = model(augment(images, gen))
        loss = nn.functional.cross_entropy(logits.reshape(-1, scenes.SLOT_CLASSES), labels.reshape(-1))
        run.optimise(loss)
        run.advance(loss, steps, log_every=50, save_every=200)
    import safetensors.torch

    CLASSIFIER_FILE.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, CLASSIFIER_FILE)
    run.log(f"held-out object accuracy on clean renders: {accuracy(model.eval()):.4f}")
    if vae is not None:
        run.log(f"held-out object accuracy through the VAE: {accuracy(model, 256, vae):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--through-vae", action="store_true", help="half of each batch through the demo VAE")
    parser.add_argument(
        "--vae-ceiling",
        type=int,
        metavar="SIDE",
        help="train nothing: print the share of held-out objects named right in scenes of SIDE px sent through the "
        "demo VAE (the most any denoiser's samples can score at that side)",
    )
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="--vae-ceiling: the held-out scene seed")
    parser.add_argument("--count", type=int, default=128, help="--vae-ceiling: the number of scenes")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.vae_ceiling is None:
        train(args.steps, args.batch, args.lr, args.through_vae)
        return 0
    from devkit import comfy_env
    from devkit.shapes_training.latents import load_vae
    from devkit.shapes_training.train_vae import VAE_FILE

    comfy_env.bootstrap_comfyui()
    share = accuracy(load(), args.count, load_vae(VAE_FILE), args.vae_ceiling, args.seed)
    print(
        f"[classifier] {share:.1%} of the objects of {args.count} scenes (seed {args.seed}) at {args.vae_ceiling} px "
        "named right through the VAE",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

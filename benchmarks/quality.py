"""Quality benchmark: how much each merging method changes the images of a trained model, and how fast it is.

The models are the pack's small trained shapes models (``devkit/shapes_training``): the SD1.x-family UNet and the SD3
DiT, loaded through ComfyUI's own loaders and sampled through ``comfy.sample.sample`` (the KSampler path)
with classifier-free guidance. A fixed, held-out prompt set (scenes the models never saw) and fixed seeds
are sampled once per cell (method x ratio, plus the recommended presets and hybrid options); the cells
take turns on every batch, so the speed-ups are ratios from the same run.

Metrics per cell (see :mod:`.quality_metrics`):

* fidelity to the unmerged output of the same seed: PSNR and SSIM over the whole image, and inside and outside
  the prompted objects (the scene's object masks, widened by 3 px, since a sample's object may sit a little off
  the place the prompt gives it), each a mean over the prompts with its standard error, and paired against
  spatial ToMe at the same ratio (the difference of each prompt's values, its mean and standard error);
* a per-image perceptual distance to the unmerged image in the classifier's features;
* prompt fidelity: our classifier's accuracy on the prompted objects (shape and colour at their slot);
* distribution quality: Frechet distance of the classifier's features against renders of the same scenes;
* speed-up: unmerged sampling time / the cell's, the median over batches (with the spread).

And once per model, from the unmerged run: importance localisation, the ROC AUC and top-k IoU of the CFG
importance |cond - uncond| (what IBTM reads) against the prompted objects' masks, per step.

Writes ``benchmarks/results/quality-<date>.md`` (``--quick``: ``quality-quick-<date>.md``; with other
``--models`` than sd15 and sd3, their names before the date: ``quality-sd3-<date>.md``), the figures next to it
and a JSON of the numbers. Usage::

    .comfyui/venv/bin/python -m benchmarks.quality [--quick] [--samples 128 [sd3=512]] [--steps 20] [--models sd15 sd3]

``--samples`` takes a count for every model and ``MODEL=N`` for one: the DiT samples about 20x faster than the
UNet, so it can afford the prompts that narrow its accuracy figures. ``sd3-256`` is the DiT fine-tuned on 256 px
scenes (256 image tokens per block), sampled at 256 px; the classifier judges its images area-downscaled to 128
px. The conditions are ``quality_cells.py``, the metrics ``quality_metrics.py``, the report ``quality_report.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks import quality_metrics as qm  # noqa: E402
from benchmarks.quality_cells import CFG, MODELS, SIDE, cells_for  # noqa: E402
from benchmarks.quality_report import report, write_figures  # noqa: E402
from devkit import comfy_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
# What the JSON beside the report keeps of each model's result (not the images).
JSON_KEYS = (
    "family",
    "side",
    "rows",
    "real_accuracy",
    "no_cfg_accuracy",
    "no_cfg_frechet",
    "auc_by_step",
    "iou_by_step",
)


@dataclass
class Loaded:
    family: str
    side: int  # the scenes' side in px that it was trained on and is sampled at
    model: Any
    vae: Any
    scheduler: str


def load_model(family: str, side: int = SIDE) -> Loaded:
    """``family``'s denoiser trained on ``side`` px scenes and its VAE, loaded as the stock UNETLoader and
    VAELoader do."""
    import comfy.sd
    import comfy.utils

    from devkit.shapes_training import train_denoiser, train_vae

    vae_file, scheduler = (train_vae.VAE_FILE, "normal") if family == "sd15" else (train_vae.VAE3_FILE, "simple")
    model = comfy.sd.load_diffusion_model(str(train_denoiser.weights_file(family, side)))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_file)))
    return Loaded(family, side, model, vae, scheduler)


def conditioning(prompts: list) -> tuple[list, list]:
    from tokenmerge.shapes import prompt as shapes_prompt

    context, pooled = shapes_prompt.encode_batch(prompts)
    empty_context, empty_pooled = shapes_prompt.encode_batch([shapes_prompt.ScenePrompt()])
    return [[context, {"pooled_output": pooled}]], [[empty_context, {"pooled_output": empty_pooled}]]


class ImportanceProbe:
    """A post-CFG function on the unmerged model that keeps each step's CFG importance [B, h, w]."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []

    def __call__(self, args: dict) -> torch.Tensor:
        from tokenmerge.merging.importance import cfg_importance

        self.maps.append(cfg_importance(args["cond_denoised"], args["uncond_denoised"], args["sigma"]))
        return args["denoised"]


def sample_batch(
    loaded: Loaded, model, seeds: list[int], prompts: list, steps: int, cfg: float, side: int = SIDE
) -> torch.Tensor:
    """Latents [B, C, side / 8, side / 8] of one batch of ``side`` px samples (one seed per image, as a batch of
    single-seed samplings would give)."""
    import comfy.sample

    latent = torch.zeros(len(seeds), model.model.latent_format.latent_channels, side // 8, side // 8)
    noise = torch.cat([comfy.sample.prepare_noise(latent[:1], seed) for seed in seeds])
    positive, negative = conditioning(prompts)
    return comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        "dpmpp_2m",
        loaded.scheduler,
        positive,
        negative,
        latent,
        disable_pbar=True,
        seed=seeds[0],
    )


def decode(loaded: Loaded, latents: torch.Tensor) -> torch.Tensor:
    return loaded.vae.decode(latents).float().movedim(-1, 1).clamp(0, 1)  # [B, H, W, 3] -> [B, 3, H, W]


def object_masks(scenes_batch: list, grid: int, side: int = SIDE) -> torch.Tensor:
    """Union of the prompted objects' masks, rendered at ``side`` px, on a grid x grid [B, grid, grid] (bool)."""
    from devkit.shapes_training import scenes

    _, masks = scenes.render(scenes_batch, side)
    union = masks.amax(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(union, grid).squeeze(1) > 0.5


def object_pixels(scenes_batch: list, side: int = SIDE, widen: int = 3) -> torch.Tensor:
    """Pixels of the prompted objects [B, side, side] (bool): :func:`object_masks` at full size, widened by
    ``widen`` pixels of a 128 px scene each way (twice as many at 256 px)."""
    union = object_masks(scenes_batch, side, side).unsqueeze(1).float()  # [B, 1, side, side]
    reach = widen * side // SIDE
    return torch.nn.functional.max_pool2d(union, 2 * reach + 1, stride=1, padding=reach).squeeze(1) > 0


@dataclass
class CellResult:
    images: list[torch.Tensor] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@torch.no_grad()
def run_model(
    name: str,
    samples: int,
    batch: int,
    steps: int,
    ratios: tuple[float, ...],
    quick: bool,
    log: Callable[[str], None],
    only: list[str] | None = None,
) -> dict:
    from devkit.shapes_training import classifier as shapes_classifier
    from devkit.shapes_training import scenes
    from devkit.shapes_training.sanity import judged_view
    from devkit.shapes_training.training import EVAL_SEED

    loaded = load_model(*MODELS[name])
    side = loaded.side
    cells = cells_for(loaded.family, ratios, quick)
    if only:  # the unmerged reference and the cells named
        cells = [cells[0], *(cell for cell in cells[1:] if any(fnmatch.fnmatchcase(cell.name, pat) for pat in only))]
    held_out = scenes.sample_scenes(EVAL_SEED, samples)
    results = {cell.name: CellResult() for cell in cells}
    auc_by_step: list[list[float]] = [[] for _ in range(steps)]
    iou_by_step: list[list[float]] = [[] for _ in range(steps)]
    no_cfg: list[torch.Tensor] = []
    example_importance = None
    patched = {cell.name: cell.patch(loaded.model) for cell in cells}
    probe = ImportanceProbe()  # on the unmerged cell: its own clone, so the importance maps cost the others nothing
    patched["unmerged"] = loaded.model.clone()
    patched["unmerged"].set_model_sampler_post_cfg_function(probe)
    for start in range(0, samples, batch):
        chunk = held_out[start : start + batch]
        seeds = list(range(start, start + len(chunk)))
        prompts = [scene.prompt for scene in chunk]
        rotation = (start // batch) % len(cells)
        for cell in cells[rotation:] + cells[:rotation]:  # every cell takes every place in the order
            model = patched[cell.name]
            # One untimed step first: ComfyUI swaps the loaded model and the first call of a patch warms up,
            # which would otherwise land on whichever cell comes first.
            sample_batch(loaded, model, seeds, prompts, 1, CFG, side)
            probe.maps.clear()
            began = time.perf_counter()
            latents = sample_batch(loaded, model, seeds, prompts, steps, CFG, side)
            results[cell.name].seconds.append(time.perf_counter() - began)
            results[cell.name].images.append(decode(loaded, latents))
            if cell.name == "unmerged":
                if start == 0:  # the examples' importance at 40 % of the run, where IBTM is fully at work
                    example_importance = probe.maps[int(0.4 * steps)][:4]
                masks = object_masks(chunk, side // 8, side)  # [B, h, w] of the latent, as the maps
                for step, imp in enumerate(probe.maps[:steps]):
                    for i in range(len(chunk)):
                        auc_by_step[step].append(qm.roc_auc(imp[i], masks[i]))
                        iou_by_step[step].append(qm.top_k_iou(imp[i], masks[i]))
        no_cfg.append(decode(loaded, sample_batch(loaded, loaded.model, seeds, prompts, steps, 1.0, side)))
        log(f"{name}: {start + len(chunk)}/{samples} samples")

    judge = shapes_classifier.load()
    real, _ = scenes.render(held_out)
    labels = torch.stack([scene.slot_labels() for scene in held_out])

    def judged(images: torch.Tensor) -> tuple[float, torch.Tensor]:
        view = judged_view(images)  # the classifier's 128 px
        with torch.no_grad():
            predicted = judge(view).argmax(-1)
            features = judge.embed(view)
        occupied = labels > 0
        return (predicted[occupied] == labels[occupied]).float().mean().item(), features

    real_accuracy, real_features = judged(real)
    no_cfg_accuracy, no_cfg_features = judged(torch.cat(no_cfg))
    reference = torch.cat(results["unmerged"].images)
    verdicts = {cell.name: judged(torch.cat(results[cell.name].images)) for cell in cells}
    reference_features = verdicts["unmerged"][1]
    inside = object_pixels(held_out, side)
    base_seconds = results["unmerged"].seconds
    rows = []
    for cell in cells:
        images = torch.cat(results[cell.name].images)
        accuracy, features = verdicts[cell.name]
        per_image = {  # a value per prompt, for the standard errors and the paired differences of the report
            "psnr_in": qm.psnr(images, reference, inside),
            "psnr_out": qm.psnr(images, reference, ~inside),
            "ssim_in": qm.ssim(images, reference, inside),
            "ssim_out": qm.ssim(images, reference, ~inside),
            "feature_distance": qm.feature_distance(features, reference_features),
        }
        speedups = [b / s for b, s in zip(base_seconds, results[cell.name].seconds, strict=True)]
        quartiles = statistics.quantiles(speedups, n=4) if len(speedups) > 1 else [speedups[0]] * 3
        psnr = qm.psnr(images, reference)
        rows.append(
            {
                "cell": cell.name,
                "method": cell.method,
                "ratio": cell.ratio,
                "preset": cell.preset,
                "speedup": statistics.median(speedups),
                "speedup_q1": quartiles[0],
                "speedup_q3": quartiles[2],
                "seconds_per_image": statistics.median(results[cell.name].seconds) / batch,
                "psnr": psnr.clamp(max=1e9).mean().item() if psnr.isfinite().any() else math.inf,
                "ssim": qm.ssim(images, reference).mean().item(),
                "accuracy": accuracy,
                "frechet": qm.frechet_distance(features, real_features),
                **{
                    f"{name}{suffix}": value
                    for name, values in per_image.items()
                    for suffix, value in zip(("", "_se"), qm.mean_and_error(values), strict=True)
                },
                "per_image": {name: values.tolist() for name, values in per_image.items()},
            }
        )
    examples = {name: torch.cat(results[name].images)[:4] for name in results}
    return {
        "family": name,
        "side": side,
        "rows": rows,
        "real_accuracy": real_accuracy,
        "no_cfg_accuracy": no_cfg_accuracy,
        "no_cfg_frechet": qm.frechet_distance(no_cfg_features, real_features),
        "auc_by_step": [_nanmean(v) for v in auc_by_step],
        "iou_by_step": [_nanmean(v) for v in iou_by_step],
        "examples": examples,
        "real_examples": scenes.render(held_out[:4], side)[0],
        "prompts": [s.prompt.text() for s in held_out[:4]],
        "example_importance": example_importance,
    }


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def report_stem(args: argparse.Namespace) -> Path:
    """The report's path less its suffix: ``quality[-quick][-<models>]-<date>``, the models named unless they are the
    two committed ones, so that a run of other models never overwrites their report of the same day."""
    models = "" if sorted(args.models) == ["sd15", "sd3"] else "-" + "-".join(args.models)
    day = dt.datetime.now(dt.UTC).date().isoformat()
    return Path(args.out) / f"quality{'-quick' if args.quick else ''}{models}-{day}"


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[list[dict], Path]:
    """Run the benchmark as ``args`` says; returns the per-model results and the report path."""
    comfy_env.bootstrap_comfyui()
    comfy_env.import_pack()
    began = time.perf_counter()
    results = []
    stem = report_stem(args)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix(".md")
    for name in args.models:
        result = run_model(
            name, args.samples[name], args.batch, args.steps, tuple(args.ratios), args.quick, log, args.only
        )
        result["figures"] = write_figures(result, stem) if not args.no_figures else []
        results.append(result)
        path.write_text(report(results, args, time.perf_counter() - began))  # each model's rows as soon as done
    numbers = [{k: v for k, v in r.items() if k in JSON_KEYS} for r in results]
    stem.with_suffix(".json").write_text(json.dumps(numbers, indent=1, default=str))
    log(f"wrote {path}")
    return results, path


DEFAULT_SAMPLES = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 samples, 6 steps, ratio 0.5: proves it works (CI)")
    parser.add_argument(
        "--samples",
        nargs="+",
        default=[str(DEFAULT_SAMPLES)],
        metavar="N|MODEL=N",
        help="held-out prompts per cell: N for every model, MODEL=N for one (e.g. 24 sd3=192)",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["sd15", "sd3"],
        choices=tuple(MODELS),
        help="sd15 (the UNet), sd3 (the 128 px DiT), sd3-256 (the DiT fine-tuned on 256 px scenes)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="GLOB",
        help="run only the unmerged cell and the cells whose name matches one of these patterns",
    )
    args = parser.parse_args(argv)
    args.samples = samples_by_model(args.samples, args.models, parser.error)
    if args.quick:
        args.samples = {family: min(n, 8) for family, n in args.samples.items()}
        args.batch, args.steps, args.ratios = min(args.batch, 8), 6, [0.5]
    return args


def samples_by_model(values: list[str], models: list[str], error: Callable[[str], None]) -> dict[str, int]:
    """``--samples`` values (``N`` for every model, ``MODEL=N`` for one) as {model: prompts} for ``models``."""
    default, counts = None, {}
    for value in values:
        model, _, count = value.rpartition("=")
        if model and model not in MODELS:
            error(f"--samples: unknown model {model!r} in {value!r} (models: {', '.join(MODELS)})")
        if not count.isdigit() or int(count) < 1:
            error(f"--samples: {value!r} needs a whole count of at least 1 (N or MODEL=N)")
        if model:
            counts[model] = int(count)
        else:
            default = int(count)
    return {model: counts.get(model, DEFAULT_SAMPLES if default is None else default) for model in models}


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quality benchmark: how much each merging method changes the images of a trained model, and how fast it is.

The models are the pack's small trained shapes models (``devkit/shapes``): the SD1.x-family UNet and the SD3
DiT, loaded through ComfyUI's own loaders and sampled through ``comfy.sample.sample`` (the KSampler path)
with classifier-free guidance. A fixed, held-out prompt set (scenes the models never saw) and fixed seeds
are sampled once per cell (method x ratio, plus the recommended presets and hybrid options); the cells
take turns on every batch, so the speed-ups are ratios from the same run.

Metrics per cell (see :mod:`.quality_metrics`):

* fidelity to the unmerged output of the same seed: PSNR and SSIM;
* prompt fidelity: our classifier's accuracy on the prompted objects (shape and colour at their slot);
* distribution quality: Frechet distance of the classifier's features against renders of the same scenes;
* speed-up: unmerged sampling time / the cell's, the median over batches (with the spread).

And once per model, from the unmerged run: importance localisation, the ROC AUC and top-k IoU of the CFG
importance |cond - uncond| (what IBTM reads) against the prompted objects' masks, per step.

Writes ``benchmarks/results/quality-<date>.md`` (``--quick``: ``quality-quick-<date>.md``), the figures
next to it and a JSON of the numbers. Usage::

    .comfyui/venv/bin/python -m benchmarks.quality [--quick] [--samples 128 [sd3=512]] [--steps 20] [--models sd15 sd3]

``--samples`` takes a count for every model and ``FAMILY=N`` for one: the DiT samples about 20x faster than the
UNet, so it can afford the prompts that narrow its accuracy figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import itertools
import json
import math
import platform
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
from devkit import comfy_env  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
# The guidance scale the shapes models draw best at: on the DiT, cfg 3 names 77 % of the objects, cfg 5 57 % (it
# saturates plain backgrounds), cfg 1 74 % (devkit/shapes/sanity.py, 2026-11-30).
CFG = 3.0
SIDE = 128


@dataclass(frozen=True)
class Cell:
    """One benchmark condition: a label, its method and ratio, and how to patch the loaded model."""

    name: str
    method: str  # unmerged / tome / ibtm / sdtm
    ratio: float
    patch: Callable[[Any], Any] = field(compare=False)
    preset: bool = False


def _config(method: str, ratio: float, **options):
    from tokenmerge.patching.config import MergeConfig, Method

    return MergeConfig(Method(method), ratio=ratio, **{"max_downsample": 1, **options})


def cells_for(family: str, ratios: tuple[float, ...], quick: bool) -> list[Cell]:
    """The cells of one model: unmerged, methods x ratios, the recommended presets (the Simple nodes), hybrid
    options and IBTM's knobs one at a time. Quick mode adds a second unmerged cell, whose PSNR against the first
    must be infinite.

    On the UNet the Simple nodes at ratio 0.5 are exactly the ``tome 0.5`` / ``ibtm 0.5`` cells (same config),
    so they are marked as the presets there; on the DiT the merging cells cover all blocks, and the Simple nodes
    (IBTM on the middle half of the blocks, SDTM at 0.4) get cells of their own.
    """
    from tokenmerge.nodes.importance import TokenMergeImportance
    from tokenmerge.nodes.sdtm import TokenMergeSDTM
    from tokenmerge.patching.apply import apply_token_merge
    from tokenmerge.patching.config import DstMode, Match

    def merged(method: str, ratio: float, **options) -> Callable[[Any], Any]:
        config = _config(method, ratio, **options)  # validated here, before any sampling
        return lambda model: apply_token_merge(model, config)

    dit = family == "sd3"
    extra = {"block_range": (0.0, 1.0)} if dit else {}
    cells = [Cell("unmerged", "unmerged", 0.0, lambda m: m)]
    if quick:
        cells.append(Cell("unmerged (repeat)", "unmerged", 0.0, lambda m: m))
    for ratio in ratios:
        preset = not dit and ratio == 0.5
        cells.append(
            Cell(f"tome {ratio}", "tome", ratio, merged("tome", ratio, prune_until=0.0, **extra), preset=preset)
        )
        cells.append(Cell(f"ibtm {ratio}", "ibtm", ratio, merged("importance", ratio, **extra), preset=preset))
        if dit:
            # SDTM's ratio is the centre of its schedule: the deviation shrinks near the ceiling (1 - 1/4 windows).
            deviation = round(min(0.2, ratio, 0.75 - ratio), 2)
            cells.append(
                Cell(
                    f"sdtm {ratio}", "sdtm", ratio, merged("sdtm", ratio, deviation=deviation, prune_until=0.0, **extra)
                )
            )
    if quick:
        return cells
    cells.append(Cell("ibtm 0.5 dst top_k", "ibtm", 0.5, merged("importance", 0.5, dst_mode=DstMode.TOP_K, **extra)))
    cells.append(Cell("ibtm 0.5 no prune", "ibtm", 0.5, merged("importance", 0.5, prune_until=0.0, **extra)))
    # Where IBTM trails spatial ToMe: its knobs one at a time at ratio 0.5, on either side of MergeConfig's defaults.
    for option, value in (
        ("pool_factor", 1.0),
        ("pool_factor", 2.0),
        ("dst_fraction", 0.1),
        ("dst_fraction", 0.4),
        ("prune_until", 0.3),
    ):
        cells.append(
            Cell(f"ibtm 0.5 {option} {value}", "ibtm", 0.5, merged("importance", 0.5, **{option: value}, **extra))
        )
    # What a source matches on (issue 30): the features layer-normalised, and (IBTM) the nearest destination.
    for method in ("tome", "importance", *(("sdtm",) if dit else ())):
        label = "ibtm" if method == "importance" else method
        cells.append(
            Cell(
                f"{label} 0.5 match normalized",
                label,
                0.5,
                merged(
                    method,
                    0.5,
                    match=Match.NORMALIZED,
                    **{"prune_until": 0.0} if method != "importance" else {},
                    **extra,
                ),
            )
        )
    cells.append(Cell("ibtm 0.5 match position", "ibtm", 0.5, merged("importance", 0.5, match=Match.POSITION, **extra)))
    cells.append(
        Cell(
            "ibtm 0.5 match position, pool_factor 1.0",
            "ibtm",
            0.5,
            merged("importance", 0.5, match=Match.POSITION, pool_factor=1.0, **extra),
        )
    )
    if not dit:  # the 8x8 blocks too (max_downsample 2): 64 more tokens per block merged
        cells.append(
            Cell("tome 0.5 max_downsample 2", "tome", 0.5, merged("tome", 0.5, prune_until=0.0, max_downsample=2))
        )
        cells.append(Cell("ibtm 0.5 max_downsample 2", "ibtm", 0.5, merged("importance", 0.5, max_downsample=2)))
    if dit:
        cells.append(
            Cell(
                "ibtm preset (Simple node, 0.5)",
                "ibtm",
                0.5,
                lambda m: TokenMergeImportance.execute(m, 0.5).result[0],
                preset=True,
            )
        )
        cells.append(
            Cell(
                "sdtm preset (Simple node, 0.4)",
                "sdtm",
                0.4,
                lambda m: TokenMergeSDTM.execute(m, 0.4).result[0],
                preset=True,
            )
        )
        for options, label in (
            ({"proportional_attention": True}, "proportional attention"),
            ({"prompt_scale_structure": 1.5}, "prompt scale 1.5 structure"),
            ({"prompt_scale_structure": 1.5, "prompt_scale_detail": 1.2}, "prompt scale 1.5 / 1.2"),
        ):
            cells.append(
                Cell(
                    f"sdtm 0.4 {label}",
                    "sdtm",
                    0.4,
                    merged("sdtm", 0.4, deviation=0.2, prune_until=0.0, **extra, **options),
                )
            )
    return cells


@dataclass
class Loaded:
    family: str
    model: Any
    vae: Any
    scheduler: str


def load_family(family: str) -> Loaded:
    import comfy.sd
    import comfy.utils

    from devkit.shapes import train_denoiser, train_vae

    unet_file, vae_file, scheduler = {
        "sd15": (train_denoiser.UNET_FILE, train_vae.VAE_FILE, "normal"),
        "sd3": (train_denoiser.DIT_FILE, train_vae.VAE3_FILE, "simple"),
    }[family]
    model = comfy.sd.load_diffusion_model(str(unet_file))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_file)))
    return Loaded(family, model, vae, scheduler)


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


def sample_batch(loaded: Loaded, model, seeds: list[int], prompts: list, steps: int, cfg: float) -> torch.Tensor:
    """Latents of one batch (one seed per image, as a batch of single-seed samplings would give)."""
    import comfy.sample

    latent = torch.zeros(len(seeds), model.model.latent_format.latent_channels, SIDE // 8, SIDE // 8)
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


def object_masks(scenes_batch: list, side: int) -> torch.Tensor:
    """Union of the prompted objects' masks on a side x side grid [B, side, side] (bool)."""
    from devkit.shapes import scenes

    _, masks = scenes.render(scenes_batch)
    union = masks.amax(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(union, side).squeeze(1) > 0.5


@dataclass
class CellResult:
    images: list[torch.Tensor] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@torch.no_grad()
def run_family(
    family: str,
    samples: int,
    batch: int,
    steps: int,
    ratios: tuple[float, ...],
    quick: bool,
    log: Callable[[str], None],
    only: list[str] | None = None,
) -> dict:
    from devkit.shapes import classifier as shapes_classifier
    from devkit.shapes import scenes
    from devkit.shapes.training import EVAL_SEED

    loaded = load_family(family)
    cells = cells_for(family, ratios, quick)
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
            sample_batch(loaded, model, seeds, prompts, 1, CFG)
            probe.maps.clear()
            began = time.perf_counter()
            latents = sample_batch(loaded, model, seeds, prompts, steps, CFG)
            results[cell.name].seconds.append(time.perf_counter() - began)
            results[cell.name].images.append(decode(loaded, latents))
            if cell.name == "unmerged":
                if start == 0:  # the examples' importance at 40 % of the run, where IBTM is fully at work
                    example_importance = probe.maps[int(0.4 * steps)][:4]
                masks = object_masks(chunk, SIDE // 8)
                for step, imp in enumerate(probe.maps[:steps]):
                    for i in range(len(chunk)):
                        auc_by_step[step].append(qm.roc_auc(imp[i], masks[i]))
                        iou_by_step[step].append(qm.top_k_iou(imp[i], masks[i]))
        no_cfg.append(decode(loaded, sample_batch(loaded, loaded.model, seeds, prompts, steps, 1.0)))
        log(f"{family}: {start + len(chunk)}/{samples} samples")

    judge = shapes_classifier.load()
    real, _ = scenes.render(held_out)
    labels = torch.stack([scene.slot_labels() for scene in held_out])

    def judged(images: torch.Tensor) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            predicted = judge(images).argmax(-1)
            features = judge.embed(images)
        occupied = labels > 0
        return (predicted[occupied] == labels[occupied]).float().mean().item(), features

    real_accuracy, real_features = judged(real)
    no_cfg_accuracy, no_cfg_features = judged(torch.cat(no_cfg))
    reference = torch.cat(results["unmerged"].images)
    base_seconds = results["unmerged"].seconds
    rows = []
    for cell in cells:
        images = torch.cat(results[cell.name].images)
        accuracy, features = judged(images)
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
            }
        )
    examples = {name: torch.cat(results[name].images)[:4] for name in results}
    return {
        "family": family,
        "rows": rows,
        "real_accuracy": real_accuracy,
        "no_cfg_accuracy": no_cfg_accuracy,
        "no_cfg_frechet": qm.frechet_distance(no_cfg_features, real_features),
        "auc_by_step": [_nanmean(v) for v in auc_by_step],
        "iou_by_step": [_nanmean(v) for v in iou_by_step],
        "examples": examples,
        "real_examples": real[:4],
        "prompts": [s.prompt.text() for s in held_out[:4]],
        "example_importance": example_importance,
    }


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


# ------------------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 2) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def verdict(rows: list[dict], method: str) -> list[str]:
    """IBTM (or SDTM) against spatial ToMe, at equal ratio and at equal measured speed-up (ToMe interpolated)."""

    def plain(r: dict) -> bool:  # the method x ratio cells (not the hybrids)
        return r["cell"] == f"{r['method']} {r['ratio']}"

    tome = sorted((r for r in rows if r["method"] == "tome" and plain(r)), key=lambda r: r["speedup"])
    lines = []
    for row in (r for r in rows if r["method"] == method and plain(r)):
        same_ratio = next((t for t in tome if t["ratio"] == row["ratio"]), None)
        if same_ratio is None:
            continue

        def at_speed(key: str, speed: float) -> float:
            points = [(t["speedup"], t[key]) for t in tome]
            if speed <= points[0][0]:
                return points[0][1]
            for (s0, v0), (s1, v1) in itertools.pairwise(points):
                if s0 <= speed <= s1:
                    return v0 + (v1 - v0) * (speed - s0) / max(s1 - s0, 1e-9)
            return points[-1][1]

        lines.append(
            f"| {row['ratio']} | {_fmt(row['psnr'])} vs {_fmt(same_ratio['psnr'])} | "
            f"{_fmt(row['accuracy'], 3)} vs {_fmt(same_ratio['accuracy'], 3)} | {_fmt(row['speedup'])} vs "
            f"{_fmt(same_ratio['speedup'])} | {_fmt(row['psnr'])} vs {_fmt(at_speed('psnr', row['speedup']))} | "
            f"{_fmt(row['accuracy'], 3)} vs {_fmt(at_speed('accuracy', row['speedup']), 3)} |"
        )
    return lines


def write_figures(result: dict, stem: Path) -> list[str]:
    """Quality-vs-speed curves, localisation per step and an example grid; returns the file names."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from tokenmerge.merging.heatmap import colorize, normalize

    family, rows = result["family"], result["rows"]
    names = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for method, colour in (("tome", "tab:blue"), ("ibtm", "tab:red"), ("sdtm", "tab:green")):
        points = sorted(
            (r["speedup"], r["accuracy"], r["psnr"], r["ratio"])
            for r in rows
            if r["method"] == method and r["cell"] == f"{method} {r['ratio']}"
        )
        if not points:
            continue
        axes[0].plot([p[0] for p in points], [p[1] for p in points], "o-", color=colour, label=method)
        axes[1].plot([p[0] for p in points], [p[2] for p in points], "o-", color=colour, label=method)
        for p in points:
            axes[0].annotate(str(p[3]), (p[0], p[1]), fontsize=7)
    axes[0].axhline(result["real_accuracy"], ls=":", color="grey", label="real renders")
    axes[0].axhline(result["no_cfg_accuracy"], ls="--", color="grey", label="unmerged, no CFG")
    unmerged = next(r for r in rows if r["cell"] == "unmerged")
    axes[0].plot([1.0], [unmerged["accuracy"]], "k*", label="unmerged")
    axes[0].set(xlabel="measured speed-up", ylabel="classifier accuracy", title=f"{family}: prompt fidelity")
    axes[1].set(xlabel="measured speed-up", ylabel="PSNR vs unmerged (dB)", title=f"{family}: fidelity")
    axes[2].plot(range(1, len(result["auc_by_step"]) + 1), result["auc_by_step"], "o-", label="ROC AUC")
    axes[2].plot(range(1, len(result["iou_by_step"]) + 1), result["iou_by_step"], "s-", label="top-k IoU")
    axes[2].set(xlabel="step", ylim=(0, 1), title=f"{family}: CFG importance vs object masks")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    names.append(f"{stem.name}-{family}-curves.png")
    fig.savefig(stem.parent / names[-1], dpi=110)
    plt.close(fig)

    columns = ["real render", "unmerged", "tome 0.5", "ibtm 0.5"] + (["sdtm 0.4"] if family == "sd3" else [])
    columns = [c for c in columns if c == "real render" or c in result["examples"]]
    fig, axes = plt.subplots(
        len(result["prompts"]), len(columns) + 1, figsize=(2.1 * (len(columns) + 1), 2.3 * len(result["prompts"]))
    )
    for i, text in enumerate(result["prompts"]):
        for j, name in enumerate(columns):
            image = result["real_examples"][i] if name == "real render" else result["examples"][name][i]
            axes[i][j].imshow(image.permute(1, 2, 0).numpy())
            axes[i][j].set_title(name, fontsize=8)
        importance = result.get("example_importance")
        heat = colorize(normalize(importance[i : i + 1]))[0] if importance is not None else None
        if heat is not None:
            axes[i][-1].imshow(heat.numpy(), interpolation="nearest")
            axes[i][-1].set_title("CFG importance", fontsize=8)
        axes[i][0].set_ylabel(text.replace(" and ", "\nand ").replace(" on a", "\non a"), fontsize=6)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    names.append(f"{stem.name}-{family}-examples.png")
    fig.savefig(stem.parent / names[-1], dpi=100)
    plt.close(fig)
    return names


def report(results: list[dict], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        f"# Quality benchmark{' (quick mode)' if args.quick else ''}, {dt.datetime.now(dt.UTC).date().isoformat()}",
        "",
        (
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}, CPU. Command: `python -m benchmarks.quality {' '.join(sys.argv[1:])}`. "
            f"Wall time {seconds / 60:.1f} min."
        ),
        "",
        (
            f"Held-out prompts x 1 seed per cell ({', '.join(f'{f} {n}' for f, n in args.samples.items())}), "
            f"{SIDE}x{SIDE} px, {args.steps} steps dpmpp_2m, cfg "
            f"{CFG}, batch {args.batch}. PSNR/SSIM against the unmerged image of the same seed; accuracy: the prompted "
            "objects our classifier names right (shape and colour at their slot); Frechet: classifier features vs "
            "renders of the same scenes (lower is better); speed-up: unmerged time / cell time per batch, median "
            "[quartiles]."
        ),
        "",
    ]
    for result in results:
        lines += [
            f"## {result['family']}",
            "",
            (
                f"Reference points: real renders {result['real_accuracy']:.3f} accuracy; unmerged without CFG (cfg 1) "
                f"{result['no_cfg_accuracy']:.3f} accuracy, Frechet {result['no_cfg_frechet']:.2f}."
            ),
            "",
            "| cell | ratio | speed-up | s/image | PSNR dB | SSIM | accuracy | Frechet |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['cell']} | {r['ratio']} | {_fmt(r['speedup'])} [{_fmt(r['speedup_q1'])}-"
            f"{_fmt(r['speedup_q3'])}] | {r['seconds_per_image']:.3f} | {_fmt(r['psnr'])} | "
            f"{_fmt(r['ssim'], 3)} | {_fmt(r['accuracy'], 3)} | {_fmt(r['frechet'])} |"
            for r in result["rows"]
        ]
        auc = result["auc_by_step"]
        lines += [
            "",
            "CFG importance against the prompted objects' masks (unmerged run), per step: ROC AUC "
            + ", ".join(_fmt(a) for a in auc)
            + "; top-k IoU "
            + ", ".join(_fmt(a) for a in result["iou_by_step"])
            + ".",
            "",
        ]
        for method in ("ibtm", "sdtm"):
            verdict_rows = verdict(result["rows"], method)
            if verdict_rows:
                lines += [
                    f"Verdict, {method} vs spatial ToMe (first value {method}):",
                    "",
                    (
                        "| ratio | PSNR, same ratio | accuracy, same ratio | speed-up | PSNR, same speed | "
                        "accuracy, same speed |"
                    ),
                    "|---|---|---|---|---|---|",
                    *verdict_rows,
                    "",
                ]
        lines += [f"![{name}]({name})" for name in result["figures"]] + [""]
    return "\n".join(lines)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[list[dict], Path]:
    """Run the benchmark as ``args`` says; returns the per-model results and the report path."""
    comfy_env.bootstrap_comfyui()
    comfy_env.import_pack()
    began = time.perf_counter()
    results = []
    stem = Path(args.out) / f"quality{'-quick' if args.quick else ''}-{dt.datetime.now(dt.UTC).date().isoformat()}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix(".md")
    for family in args.models:
        result = run_family(
            family, args.samples[family], args.batch, args.steps, tuple(args.ratios), args.quick, log, args.only
        )
        result["figures"] = write_figures(result, stem) if not args.no_figures else []
        results.append(result)
        path.write_text(report(results, args, time.perf_counter() - began))  # each model's rows as soon as done
    numbers = [
        {
            k: v
            for k, v in r.items()
            if k
            in ("family", "rows", "real_accuracy", "no_cfg_accuracy", "no_cfg_frechet", "auc_by_step", "iou_by_step")
        }
        for r in results
    ]
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
        metavar="N|FAMILY=N",
        help="held-out prompts per cell: N for every model, FAMILY=N for one (e.g. 24 sd3=192)",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--models", nargs="+", default=["sd15", "sd3"], choices=("sd15", "sd3"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="GLOB",
        help="run only the unmerged cell and the cells whose name matches one of these patterns",
    )
    args = parser.parse_args(argv)
    args.samples = samples_by_family(args.samples, args.models, parser.error)
    if args.quick:
        args.samples = {family: min(n, 8) for family, n in args.samples.items()}
        args.batch, args.steps, args.ratios = min(args.batch, 8), 6, [0.5]
    return args


def samples_by_family(values: list[str], families: list[str], error: Callable[[str], None]) -> dict[str, int]:
    """``--samples`` values (``N`` for every model, ``FAMILY=N`` for one) as {family: prompts} for ``families``."""
    default, counts = None, {}
    for value in values:
        family, _, count = value.rpartition("=")
        if family and family not in ("sd15", "sd3"):
            error(f"--samples: unknown model {family!r} in {value!r} (models: sd15, sd3)")
        if not count.isdigit() or int(count) < 1:
            error(f"--samples: {value!r} needs a whole count of at least 1 (N or FAMILY=N)")
        if family:
            counts[family] = int(count)
        else:
            default = int(count)
    return {family: counts.get(family, DEFAULT_SAMPLES if default is None else default) for family in families}


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

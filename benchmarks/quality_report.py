"""The quality benchmark's report (``quality.py``): the verdict of IBTM and SDTM against spatial ToMe, the figures
(curves and example images) and the markdown page."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import platform
import sys
from pathlib import Path

import torch

from benchmarks.quality_cells import CFG
from benchmarks.quality_metrics import mean_and_error


def _fmt(value: float, digits: int = 2) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def plain(r: dict) -> bool:
    """Whether row ``r`` is one of the method x ratio cells (not a preset, a hybrid or a knob)."""
    return r["cell"] == f"{r['method']} {r['ratio']}"


def verdict(rows: list[dict], method: str) -> list[str]:
    """IBTM (or SDTM) against spatial ToMe, at equal ratio and at equal measured speed-up (ToMe interpolated)."""
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


def _pm(mean: float, error: float, digits: int = 2) -> str:
    return f"{_fmt(mean, digits)} ± {_fmt(error, digits)}"


def object_table(rows: list[dict]) -> list[str]:
    """Each merged cell's fidelity inside and outside the prompted objects, mean ± standard error over the prompts."""
    lines = [
        "| cell | PSNR in objects | PSNR outside | SSIM in objects | SSIM outside | feature distance |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["method"] == "unmerged":
            continue
        lines.append(
            f"| {r['cell']} | {_pm(r['psnr_in'], r['psnr_in_se'])} | {_pm(r['psnr_out'], r['psnr_out_se'])} | "
            f"{_pm(r['ssim_in'], r['ssim_in_se'], 3)} | {_pm(r['ssim_out'], r['ssim_out_se'], 3)} | "
            f"{_pm(r['feature_distance'], r['feature_distance_se'], 3)} |"
        )
    return lines


def paired_lines(rows: list[dict], method: str) -> list[str]:
    """``method`` minus spatial ToMe at each ratio both ran, prompt by prompt (the same seeds), as mean ± standard
    error of the differences: a difference beyond about twice its error is outside the sampling error."""
    by_cell = {r["cell"]: r for r in rows}
    lines = []
    for row in rows:
        tome = by_cell.get(f"tome {row['ratio']}")
        if row["method"] != method or not plain(row) or tome is None:
            continue
        cells = []
        for key, digits in (("psnr_in", 2), ("psnr_out", 2), ("ssim_in", 3), ("ssim_out", 3), ("feature_distance", 3)):
            difference = torch.tensor(row["per_image"][key], dtype=torch.float64) - torch.tensor(
                tome["per_image"][key], dtype=torch.float64
            )
            mean, error = mean_and_error(difference[difference.isfinite()])  # both finite: a prompt of both
            cells.append(f"{mean:+.{digits}f} ± {error:.{digits}f}")
        lines.append(f"| {row['ratio']} | " + " | ".join(cells) + " |")
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

    columns = ["real render", "unmerged", "tome 0.5", "ibtm 0.5"] + (["sdtm 0.4"] if family.startswith("sd3") else [])
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
            f"{args.steps} steps dpmpp_2m, cfg "
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
            f"Sampled at {result['side']}x{result['side']} px.",
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
        lines += [
            "",
            (
                "Inside and outside the prompted objects (each image against the unmerged one of its seed; objects: "
                f"the scene's masks widened by {3 * result['side'] // 128} px), mean ± standard error over the "
                "prompts; feature distance: "
                "unit-length classifier features, 0 = the unmerged image's, lower is better:"
            ),
            "",
            *object_table(result["rows"]),
        ]
        for method in ("ibtm", "sdtm"):
            paired = paired_lines(result["rows"], method)
            if paired:
                lines += [
                    "",
                    (
                        f"Paired, {method} minus spatial ToMe at the same ratio (prompt by prompt, same seeds; mean "
                        f"± standard error; higher PSNR/SSIM and lower feature distance are better for {method}):"
                    ),
                    "",
                    "| ratio | PSNR in objects | PSNR outside | SSIM in objects | SSIM outside | feature distance |",
                    "|---|---|---|---|---|---|",
                    *paired,
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

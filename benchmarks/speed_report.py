"""The speed benchmark's report (``speed.py``): per-model tables, the targets, plots, and the markdown page with the
commands that made it and the analysis appended."""

from __future__ import annotations

import argparse
import math
import os
import platform
from pathlib import Path

import torch


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}{suffix}"


def table(result: dict) -> list[str]:
    if result.get("error"):
        return [f"#### {result['model']}", "", f"Failed: `{result['error']}`", ""]
    lines = [
        f"#### {result['model']} ({result['cut']}; {result['steps']} steps, {result['rounds']} timed runs)",
        "",
        (
            "| condition | s/step (min-max) | speed-up | ideal (FLOPs) | measured / ideal | TFLOP/step | "
            "peak MiB | overhead: match / merge / unmerge / capture ms per step (share of step) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        o = r["overhead_seconds"]
        parts = " / ".join(f"{o[k] * 1e3:.0f}" for k in ("match", "merge", "unmerge", "capture"))
        name = f"**{r['name']}** (preset)" if r["preset"] else r["name"]
        lines.append(
            f"| {name} | {r['seconds_per_step']:.3f} ({r['min']:.3f}-{r['max']:.3f}) | {r['speedup']:.2f}x | "
            f"{_fmt(r['ideal'], suffix='x')} | {_fmt(r['measured_over_ideal'])} | "
            f"{r['tflop_per_step']:.2f} | {r['peak_mib']:.0f} | {parts} ({r['overhead_share']:.1%}) |"
        )
    return [*lines, ""]


def find(results: dict[str, list[dict]], backend: str, model_prefix: str, condition: str) -> dict | None:
    for result in results.get(backend, []):
        if result["model"].startswith(model_prefix):
            for row in result["rows"]:
                if row["name"] == condition:
                    return row
    return None


def targets(results: dict[str, list[dict]]) -> list[str]:
    """The issue's targets, each checked against this run's rows (skipped where the run lacks the row)."""
    lines = ["| target | measured | met |", "|---|---|---|"]

    def check(label: str, value: float | None, ok: bool | None, shown: str) -> None:
        if value is not None:
            lines.append(f"| {label} | {shown} | {'yes' if ok else '**no**'} |")

    ours = find(results, "pytorch", "SD1.5 512", "ibtm 0.5")
    builtin = find(results, "pytorch", "SD1.5 512", "builtin 0.5")
    if ours and builtin:
        check(
            "SD1.5 512², PyTorch attention, IBTM 0.5 (preset): ≥ 1.3x and ≥ the built-in at 0.5",
            ours["speedup"],
            ours["speedup"] >= 1.3 and ours["speedup"] >= builtin["speedup"],
            f"{ours['speedup']:.2f}x vs built-in {builtin['speedup']:.2f}x",
        )
    sdtm = find(results, "pytorch", "SD3", "sdtm 0.4 (Simple node)")
    if sdtm:
        check(
            "SD3-medium width 1024², SDTM default: ≥ 1.5x per step",
            sdtm["speedup"],
            sdtm["speedup"] >= 1.5,
            f"{sdtm['speedup']:.2f}x",
        )
    merged = [
        (b, res["model"], r)
        for b, per in results.items()
        for res in per
        for r in res["rows"]
        if r["preset"] and r["method"] != "unpatched"
    ]
    for backend, model, r in merged:
        check(
            f"{model}, {backend}, {r['name']}: overhead < 10 %, measured / ideal ≥ 0.8",
            r["overhead_share"],
            r["overhead_share"] < 0.10 and r["measured_over_ideal"] >= 0.8,
            f"overhead {r['overhead_share']:.1%} of the step, measured / ideal {_fmt(r['measured_over_ideal'])}",
        )
    return [*lines, ""]


def plots(results: dict[str, list[dict]], stem: Path) -> list[str]:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for backend, per_model in results.items():
        fig, axes = plt.subplots(len(per_model), 1, figsize=(9, 2.4 * len(per_model)), squeeze=False)
        for ax, result in zip(axes[:, 0], per_model, strict=True):
            if not result["rows"]:
                continue
            rows = [r for r in result["rows"] if r["method"] != "unpatched"]
            x = range(len(rows))
            ax.bar([i - 0.2 for i in x], [r["speedup"] for r in rows], 0.4, label="measured")
            ax.bar([i + 0.2 for i in x], [r["ideal"] for r in rows], 0.4, label="ideal (FLOP model)", alpha=0.6)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xticks(list(x), [r["name"] for r in rows], rotation=20, ha="right", fontsize=7)
            ax.set_ylabel("speed-up")
            ax.set_title(f"{result['model']} ({backend} attention)", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        path = stem.parent / f"{stem.name}-{backend}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def report(results: dict[str, list[dict]], args: argparse.Namespace, figures: list[str], run: dict) -> str:
    lines = [
        f"# Speed benchmark, {run['date']}",
        "",
        (
            f"Machine: {args.machine} ({platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}), fp32. No GPU was available for this run."
        ),
        (
            "Each condition: two untimed runs (one counting the FLOPs, one profiled for memory and overhead), then "
            "the timed runs (their number and steps in each model's heading), uninstrumented, conditions alternating; "
            "batch 1 with cfg 5 (2 rows per step), euler; median seconds per step, min-max over the runs. Random "
            "weights at real widths (the compute does not depend on the values)."
        ),
        "Commands:",
        "",
        *(
            f"- `python -m benchmarks.speed {' '.join(c['argv'])}` ({c['minutes']:.0f} min)"
            + (f"; {c['note']}" if c.get("note") else "")
            for c in run["commands"]
        ),
        "",
        (
            "Columns: **speed-up** over unpatched from the same process; **ideal**: FLOPs of the unpatched run over "
            "the merged run's (matching excluded), the bound merging can reach; **measured / ideal**; **peak MiB**: "
            "activation memory, the largest sum of live tensors during a run above its start; **overhead**: CPU time "
            "in the pack's profiler ranges."
        ),
        "",
        "## Targets",
        "",
        *targets(results),
    ]
    for backend, per_model in results.items():
        lines += [f"## {backend} attention", ""]
        for result in per_model:
            lines += table(result)
    lines += [f"![{name}]({name})" for name in figures] + [""]
    return with_analysis(lines, args.notes)


def with_analysis(lines: list[str], notes: str | None) -> str:
    """The report's markdown: ``lines``, then the ``notes`` file as its analysis section if given."""
    if notes:
        lines = [*lines, "## Analysis", "", Path(notes).read_text()]
    return "\n".join(lines) + "\n"

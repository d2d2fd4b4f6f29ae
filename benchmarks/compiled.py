"""Compiled speed benchmark: seconds per sampling step of real-size models under ComfyUI's TorchCompileModel
(``set_torch_compile_wrapper``, what the node does), unpatched and merged, next to the same two in eager mode.

Conditions per model: ``unpatched`` and ``merged`` (the Simple node's preset: Token Merge (Importance) 0.5 on a
UNet, and also Token Merge (SDTM) 0.4 on a DiT), each eager and compiled (inductor). Every compiled condition
gets two untimed warm-up runs (the first compiles every graph a run needs, the second the few variants that
switching between models adds); the first one's time minus the condition's median run time is reported as the
**compile time**, with the graphs dynamo built (``unique_graphs``) in the warm-ups and in the timed runs (0 there:
nothing recompiles once warm). Then ``--rounds`` timed runs per condition, the
conditions alternating (A B C D A B C D ...), all in one process; seconds per step = run time / steps, from the
sampler's start to its last step. Batch 1 with cfg 5 (2 rows per step).

``--device cuda`` runs on an NVIDIA GPU (``--dtype`` fp16/bf16, PyTorch SDPA attention, which ComfyUI picks on a
GPU) and writes ``compiled-<machine>-<date>.md``; on this CPU the default is fp32 with PyTorch attention (a
compiled graph of the CPU's default sub-quadratic attention breaks at ComfyUI's own memory checks). ``--smoke``
runs the tiny SD1.x for 2 steps (CI runs it, on the CPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.speed import Condition, patch, run_seconds  # noqa: E402
from benchmarks.speed_models import MODELS  # noqa: E402
from benchmarks.speed_report import with_analysis  # noqa: E402
from devkit import comfy_env, tiny_models  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_MODELS = ("sd15-768", "sd3-1024")


@dataclass(frozen=True)
class Cell:
    condition: Condition
    compiled: bool

    @property
    def name(self) -> str:
        return f"{self.condition.name}{' compiled' if self.compiled else ''}"


def cells_for(unet: bool) -> list[Cell]:
    merged = [Condition("ibtm 0.5", "ibtm", 0.5, preset=True)]
    if not unet:
        merged.append(Condition("sdtm 0.4", "sdtm", 0.4, preset=True))
    return [
        Cell(c, compiled) for compiled in (False, True) for c in [Condition("unpatched", "unpatched", 0.0), *merged]
    ]


def graphs() -> int:
    import torch._dynamo

    return torch._dynamo.utils.counters["stats"]["unique_graphs"]  # noqa: SLF001


def run_model(name: str, steps: int, rounds: int, dtype: torch.dtype, log) -> dict:
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    spec = MODELS[name]()
    base = tiny_models.build_patcher(spec.family, seed=0, scale=0.5, dtype=dtype)
    cells = cells_for(spec.unet)
    models = {}
    for cell in cells:
        model = patch(base, cell.condition)
        if cell.compiled:
            model = model.clone()
            set_torch_compile_wrapper(model, backend="inductor")
        models[cell.name] = model
    warmup, built, times = {}, dict.fromkeys(models, 0), {cell.name: [] for cell in cells}
    with torch.inference_mode():
        # Two warm-up passes: the first compiles every graph of a run; the second, in the timed runs' alternating
        # order, the variants that switching models (ComfyUI re-applies each patcher's object patches) adds.
        for warm_pass in range(2):
            for cell in cells:
                before, began = graphs(), time.perf_counter()
                run_seconds(spec, models[cell.name], steps)
                if warm_pass == 0:
                    warmup[cell.name] = time.perf_counter() - began
                built[cell.name] += graphs() - before
                log(
                    f"  {spec.name} / {cell.name}: warm-up {warm_pass + 1} {time.perf_counter() - began:.1f} s, "
                    f"{built[cell.name]} graphs"
                )
        before = graphs()
        for round_index in range(rounds):
            order = cells[round_index % len(cells) :] + cells[: round_index % len(cells)]
            for cell in order:
                times[cell.name].append(run_seconds(spec, models[cell.name], steps) / steps)
                log(f"  {spec.name} / {cell.name}: {times[cell.name][-1]:.3f} s/step")
        rebuilt = graphs() - before
    eager_base = statistics.median(times["unpatched"])
    compiled_base = statistics.median(times["unpatched compiled"])
    rows = []
    for cell in cells:
        step = statistics.median(times[cell.name])
        rows.append(
            {
                "name": cell.name,
                "method": cell.condition.method,
                "compiled": cell.compiled,
                "seconds_per_step": step,
                "min": min(times[cell.name]),
                "max": max(times[cell.name]),
                "vs_eager_unpatched": eager_base / step,
                "vs_same_mode_unpatched": (compiled_base if cell.compiled else eager_base) / step,
                "compile_seconds": warmup[cell.name] - step * steps if cell.compiled else 0.0,
                "warmup_graphs": built[cell.name],
            }
        )
    return {
        "model": spec.name,
        "cut": spec.cut,
        "steps": steps,
        "rounds": rounds,
        "rows": rows,
        "graphs_in_timed_runs": rebuilt,
    }


def report(results: list[dict], args: argparse.Namespace, minutes: float) -> str:
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.machine()}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}"
    )
    lines = [
        f"# Compiled speed benchmark, {args.date}",
        "",
        (
            f"Machine: {args.machine} ({device}), torch {torch.__version__}, {args.dtype}, "
            f"{args.attention} attention, inductor."
        ),
        f"Command: `python -m benchmarks.compiled {' '.join(args.argv)}` ({minutes:.0f} min).",
        "",
        (
            "Columns: **s/step** median (min-max) of the timed runs; **vs eager unpatched**; **vs unpatched, same "
            "mode**: the merging speed-up among compiled (or among eager) conditions; **compile s**: the warm-up "
            "run minus a timed run of as many steps; **graphs**: graphs dynamo built in the warm-up."
        ),
        "",
    ]
    for result in results:
        lines += [
            (
                f"## {result['model']} ({result['cut']}; {result['steps']} steps, {result['rounds']} timed runs; "
                f"graphs built during the timed runs: {result['graphs_in_timed_runs']})"
            ),
            "",
            ("| condition | s/step (min-max) | vs eager unpatched | vs unpatched, same mode | compile s | graphs |"),
            "|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            compile_s = f"{r['compile_seconds']:.0f}" if r["compiled"] else "-"
            lines.append(
                f"| {r['name']} | {r['seconds_per_step']:.3f} ({r['min']:.3f}-{r['max']:.3f}) | "
                f"{r['vs_eager_unpatched']:.2f}x | {r['vs_same_mode_unpatched']:.2f}x | {compile_s} | "
                f"{r['warmup_graphs'] if r['compiled'] else '-'} |"
            )
        lines.append("")
    return with_analysis(lines, args.notes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=3, help="steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per condition")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: fp32 on the CPU, bf16 on a GPU")
    parser.add_argument("--attention", choices=("pytorch", "sub-quadratic"), default="pytorch")
    parser.add_argument("--smoke", action="store_true", help="the tiny SD1.x, 2 steps, 1 round (CI)")
    parser.add_argument("--machine", help="machine label for the report name (default: cpu<N> or the GPU)")
    parser.add_argument("--notes", help="markdown file appended to the report as its analysis")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    args.machine = args.machine or (args.device if args.device == "cuda" else f"cpu{os.cpu_count()}")
    if args.smoke:
        args.models, args.steps, args.rounds = ["smoke"], 2, 1
    args.date = dt.datetime.now(dt.UTC).date().isoformat()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    comfy_env.bootstrap_comfyui(pytorch_attention=args.attention == "pytorch", device=args.device)
    comfy_env.import_pack()
    results = [
        run_model(name, args.steps, args.rounds, DTYPES[args.dtype], log=lambda m: print(m, flush=True))
        for name in args.models
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"compiled-{'smoke-' if args.smoke else ''}{args.machine}-{args.date}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(report(results, args, (time.perf_counter() - began) / 60))
    print(f"wrote {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

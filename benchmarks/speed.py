"""Speed benchmark: seconds per sampling step of real-size models, unpatched vs the built-in TomePatchModel vs this
pack's spatial ToMe, IBTM and SDTM, with a FLOP-model bound and a breakdown of the merging overhead.

Models are ComfyUI's own classes at the real widths and token counts, with random weights (the values do not
change the compute); the depth of the largest ones is cut so that a step fits this CPU, and the report says
where. Every condition gets two untimed runs first: one under ``torch.utils.flop_counter.FlopCounterMode``, which
counts the FLOPs the run executes (projections, MLPs, attention, convolutions), and one under ``torch.profiler``
for the overhead and memory below (apart, since the FLOP counter's per-op dispatch would inflate the small ops of
the overhead ranges). Then ``--rounds`` timed runs per condition, with no instrument, the conditions alternating
(A B C A B C ...). A run's clock starts when the sampler starts (after
ComfyUI has loaded the model) and stops at its last step; seconds per step = run time / steps. Batch 1 with
cfg 5, so each step is one forward of 2 rows (cond + uncond).

* speed-up: the median seconds per step of unpatched over the condition's, from the same process;
* ideal: the FLOP model's bound, FLOPs of the unpatched run over the merged run's, the similarity matmuls of
  the matching left out (they are overhead, not work that merging keeps); ``measured / ideal`` says how close
  the implementation comes to what removing those FLOPs allows;
* overhead: CPU seconds inside this pack's profiler ranges (``tokenmerge.match`` = similarity and matching,
  ``tokenmerge.merge`` / ``tokenmerge.unmerge`` = gathers and scatters, ``tokenmerge.capture`` = the CFG
  importance), from the profiled run, as a share of the timed step (the profiler's per-op cost weighs more on
  the small ops of the ranges than on the big ones, so the share errs high);
* peak memory: the largest sum of live tensor allocations during the untimed run, above what was live at its
  start (the activations; the weights are the same for every condition), from the profiler's allocation events.

``python -m benchmarks.speed`` runs every model under both attention backends (ComfyUI's CPU default, the
sub-quadratic attention, and ``--use-pytorch-cross-attention``; each in its own process, since ComfyUI picks the
backend at import) and writes ``benchmarks/results/speed-<machine>-<date>.md`` with PNG plots and the raw JSON.
``--smoke`` runs one tiny model in a few seconds, to prove that the harness works (CI runs it). The flags
``--models``, ``--grid-models`` (every method at every ratio; the others get unpatched and the recommended
presets), ``--ratios``, ``--steps``, ``--rounds``, ``--backends`` (the first one runs the grid) and
``--other-backend-models`` choose the work; ``--append`` adds models to the day's run (its other rows kept, each
command listed in the report), and ``--rebuild DATE --notes FILE`` rewrites a run's report with an analysis.
The models are ``speed_models.py``, the report's tables and plots ``speed_report.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.speed_models import DEFAULT_MODELS, MODELS, ModelSpec  # noqa: E402
from benchmarks.speed_report import plots, report  # noqa: E402
from devkit import comfy_env, tiny_models  # noqa: E402

CFG = 5.0
BACKENDS = {"pytorch": True, "sub-quadratic": False}  # label -> --use-pytorch-cross-attention
RANGES = ("tokenmerge.match", "tokenmerge.merge", "tokenmerge.unmerge", "tokenmerge.capture")


# ------------------------------------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Condition:
    name: str
    method: str  # unpatched / builtin / tome / ibtm / sdtm
    ratio: float
    preset: bool = False


def conditions_for(spec: ModelSpec, ratios: tuple[float, ...], grid: bool) -> list[Condition]:
    """The conditions of one model: unpatched and the recommended presets of the README; with ``grid``, also this
    pack's methods at every ratio (spatial ToMe and the built-in TomePatchModel, the baselines, at 0.5)."""
    cells = [Condition("unpatched", "unpatched", 0.0)]
    if grid:
        methods = ("ibtm",) if spec.unet else ("ibtm", "sdtm")
        baselines = ("builtin", "tome") if spec.unet else ("tome",)
        cells += [Condition(f"{m} 0.5", m, 0.5) for m in baselines]
        cells += [Condition(f"{m} {r}", m, r, preset=m == "ibtm" and r == 0.5) for r in ratios for m in methods]
    else:
        cells.append(Condition("ibtm 0.5", "ibtm", 0.5, preset=True))
    if spec.unet:
        cells.append(Condition("ibtm 0.5 + cross-attn + FF", "ibtm-max", 0.5, preset=True))
    else:
        cells.append(Condition("sdtm 0.4 (Simple node)", "sdtm", 0.4, preset=True))
    return cells


def patch(base: Any, condition: Condition) -> Any:
    """The patched clone a user gets for ``condition``, through the same node code the graph runs."""
    from comfy_extras.nodes_tomesd import TomePatchModel

    from tokenmerge.nodes.importance import TokenMergeImportance, TokenMergeImportanceAdvanced, TokenMergeSpatialToMe
    from tokenmerge.nodes.sdtm import TokenMergeSDTM
    from tokenmerge.patching.apply import apply_token_merge
    from tokenmerge.patching.config import MergeConfig, Method

    method, ratio = condition.method, condition.ratio
    if method == "unpatched":
        return base.clone()
    if method == "builtin":
        return TomePatchModel.execute(base, ratio).result[0]
    if method == "tome":
        return TokenMergeSpatialToMe.execute(
            base, ratio, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
        ).result[0]
    if method == "ibtm":
        return TokenMergeImportance.execute(base, ratio).result[0]
    if method == "ibtm-max":
        return TokenMergeImportanceAdvanced.execute(
            base,
            ratio,
            max_downsample="auto",
            dst_fraction=0.25,
            pool_factor=1.4,
            dst_mode="random",
            merge_cross_attention=True,
            merge_feed_forward=True,
            prune_until=0.1,
            start_percent=0.0,
            end_percent=1.0,
            seed=0,
        ).result[0]
    if method == "sdtm" and condition.preset:
        return TokenMergeSDTM.execute(base, ratio).result[0]
    # The Simple node's settings, except that the deviation shrinks near the ratio ceiling (1 - 1/4 windows):
    # SDTM's ratio is the centre of its schedule.
    deviation = round(min(0.2, ratio, 0.75 - ratio), 2)
    return apply_token_merge(
        base,
        MergeConfig(
            Method.SDTM, ratio=ratio, max_downsample=1, block_range=(0.0, 1.0), deviation=deviation, prune_until=0.0
        ),
    )


# ----------------------------------------------------------------------------------------- measurement
def peak_tensor_bytes(prof: torch.profiler.profile) -> int:
    """Largest sum of live tensor allocations during a profiled run, above what was live when it started (from
    the profiler's allocation events; unlike the resident set, not hidden by the allocator's reuse)."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@dataclass
class Measured:
    seconds_per_step: list[float] = field(default_factory=list)  # timed runs
    flops: float = 0.0  # the counted run; the rest from the profiled run
    match_flops: float = 0.0
    peak_mib: float = 0.0
    overhead: dict[str, float] = field(default_factory=dict)  # CPU seconds per step in each profiler range


def sample(spec: ModelSpec, patcher: Any, steps: int, on_start: Callable[[], None] | None = None) -> None:
    import comfy.patcher_extension
    import comfy.sample

    if on_start is not None:

        def started(executor, *args, **kwargs):
            on_start()
            return executor(*args, **kwargs)

        patcher = patcher.clone()
        patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, "tokenmerge_bench", started)
    latent = spec.family.empty_latent(spec.height, spec.width, frames=spec.frames)
    comfy.sample.sample(
        patcher,
        comfy.sample.prepare_noise(latent, 0),
        steps,
        CFG,
        "euler",
        spec.scheduler,
        spec.family.conditioning(1, spec.text_tokens),
        spec.family.conditioning(2, spec.text_tokens),
        latent,
        disable_pbar=True,
        seed=0,
    )


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *_args, **_kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _ranges(events: list) -> tuple[dict[str, float], float]:
    """Seconds inside each outermost ``tokenmerge.*`` range, and the FLOPs under ``tokenmerge.match``."""
    seconds = dict.fromkeys(RANGES, 0.0)
    match_flops = 0.0

    def flops_under(event) -> float:
        return (event.flops or 0) + sum(flops_under(child) for child in event.cpu_children)

    for event in events:
        if event.name not in seconds:
            continue
        parent, nested = event.cpu_parent, False
        while parent is not None:
            nested = nested or parent.name in seconds
            parent = parent.cpu_parent
        if nested:
            continue
        seconds[event.name] += event.cpu_time_total / 1e6
        if event.name == "tokenmerge.match":
            match_flops += flops_under(event)
    return seconds, match_flops


def count_flops(spec: ModelSpec, patcher: Any, steps: int, result: Measured) -> None:
    """The first untimed run: the FLOPs it executes."""
    from torch.utils.flop_counter import FlopCounterMode

    # torch counts the CUDA SDPA kernels but not the CPU one, which --use-pytorch-cross-attention runs.
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}  # noqa: SLF001
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        sample(spec, patcher, steps)
    result.flops = float(counter.get_total_flops())


def profiled_run(spec: ModelSpec, patcher: Any, steps: int, result: Measured) -> None:
    """The second untimed run, under the profiler: the pack's ranges, the FLOPs of its matching, the activation
    memory."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True, with_flops=True, profile_memory=True
    ) as prof:
        sample(spec, patcher, steps)
    result.peak_mib = peak_tensor_bytes(prof) / 2**20
    seconds, result.match_flops = _ranges(prof.events())
    result.overhead = {name: value / steps for name, value in seconds.items()}


def run_seconds(spec: ModelSpec, patcher: Any, steps: int) -> float:
    """Seconds from the sampler's start (after ComfyUI loaded the model) to its last step, for one run."""
    began: list[float] = []
    sample(spec, patcher, steps, on_start=lambda: began.append(time.perf_counter()))
    return time.perf_counter() - began[0]


def timed_run(spec: ModelSpec, patcher: Any, steps: int, result: Measured) -> None:
    result.seconds_per_step.append(run_seconds(spec, patcher, steps) / steps)


def run_model(
    spec: ModelSpec, ratios: tuple[float, ...], steps: int, rounds: int, grid: bool, log: Callable[[str], None]
) -> dict:
    """All conditions of one model in this process; returns the per-condition rows."""
    base = tiny_models.build_patcher(spec.family, seed=0, scale=0.5)
    conditions = conditions_for(spec, ratios, grid)
    patched = {c.name: patch(base, c) for c in conditions}
    measured = {c.name: Measured() for c in conditions}
    with torch.inference_mode():
        for c in conditions:
            began = time.perf_counter()
            count_flops(spec, patched[c.name], steps, measured[c.name])
            profiled_run(spec, patched[c.name], steps, measured[c.name])
            log(
                f"  {spec.name} / {c.name}: {measured[c.name].flops / 1e12:.2f} TFLOP per run "
                f"(counted and profiled in {time.perf_counter() - began:.0f} s)"
            )
        for round_index in range(rounds):
            order = conditions[round_index % len(conditions) :] + conditions[: round_index % len(conditions)]
            for c in order:
                timed_run(spec, patched[c.name], steps, measured[c.name])
                log(f"  {spec.name} / {c.name}: {measured[c.name].seconds_per_step[-1]:.3f} s/step")
    base_step = statistics.median(measured["unpatched"].seconds_per_step)
    base_flops = measured["unpatched"].flops
    rows = []
    for c in conditions:
        m = measured[c.name]
        step = statistics.median(m.seconds_per_step)
        work = m.flops - m.match_flops  # both per run of ``steps`` steps
        overhead = {name.split(".")[1]: value for name, value in m.overhead.items()}
        ideal = base_flops / work if work else float("nan")
        speedup = base_step / step
        rows.append(
            {
                **asdict(c),
                "seconds_per_step": step,
                "min": min(m.seconds_per_step),
                "max": max(m.seconds_per_step),
                "speedup": speedup,
                "ideal": ideal,
                "measured_over_ideal": speedup / ideal,
                "tflop_per_step": m.flops / steps / 1e12,
                "match_gflop_per_step": m.match_flops / steps / 1e9,
                "peak_mib": m.peak_mib,
                "overhead_seconds": overhead,
                "overhead_share": sum(overhead.values()) / step,
            }
        )
    return {"model": spec.name, "cut": spec.cut, "steps": steps, "rounds": rounds, "rows": rows}


# ---------------------------------------------------------------------------------------------- driver
def child(args: argparse.Namespace) -> int:
    """Run the models under one attention backend (ComfyUI fixes it at import) and write their rows as JSON."""
    comfy_env.bootstrap_comfyui(pytorch_attention=BACKENDS[args.child])
    comfy_env.import_pack()
    results = json.loads(Path(args.json).read_text()) if args.append and Path(args.json).exists() else []
    done = {result["model"] for result in results if not result.get("error")}
    results = [result for result in results if result["model"] in done]  # a failed model is run again
    for name in args.models:
        spec = MODELS[name]()
        if spec.name in done:
            print(f"[{args.child}] {spec.name}: already in {args.json}", flush=True)
            continue
        print(f"[{args.child}] {spec.name}", flush=True)
        try:
            results.append(
                run_model(spec, tuple(args.ratios), args.steps, args.rounds, name in args.grid_models, log=print)
            )
        except Exception as exc:  # noqa: BLE001  one model's failure must not lose the others' rows
            print(f"[{args.child}] {spec.name} failed: {exc!r}", flush=True)
            results.append({"model": spec.name, "cut": spec.cut, "rows": [], "error": repr(exc)})
        Path(args.json).write_text(json.dumps(results, indent=1))  # each model's rows as soon as done
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--steps", type=int, default=4, help="steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per condition")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument(
        "--grid-models",
        nargs="*",
        default=["sd15-512", "sd3-1024"],
        choices=list(MODELS),
        help="models that get every method at every ratio (the others: unpatched and the presets)",
    )
    parser.add_argument(
        "--other-backend-models",
        nargs="*",
        choices=list(MODELS),
        help="models for the backends after the first, with the presets only (default: --models)",
    )
    parser.add_argument("--smoke", action="store_true", help="one tiny model, 2 steps, 1 round (CI)")
    parser.add_argument("--machine", default=f"cpu{os.cpu_count()}", help="machine label for the report name")
    parser.add_argument("--notes", help="markdown file appended to the report as its analysis")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--append", action="store_true", help="add the models missing from today's run in --out, keeping its rows"
    )
    parser.add_argument(
        "--rebuild",
        metavar="DATE",
        help="only rewrite the report and plots of the run of DATE in --out (e.g. with --notes)",
    )
    parser.add_argument("--child", choices=list(BACKENDS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command as the report shows it: where the files go and the analysis notes are not part of the run.
    shown, items = [], iter(argv)
    for item in items:
        if item in ("--out", "--notes", "--rebuild"):
            next(items, None)  # and its value
            continue
        shown.append(item)
    args.argv = shown
    if args.smoke:
        args.models, args.grid_models, args.other_backend_models = ["smoke"], ["smoke"], ["smoke"]
        args.ratios, args.steps, args.rounds = [0.5], 2, 1
    if args.other_backend_models is None:
        args.other_backend_models = args.models
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    began = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    date = args.rebuild or dt.datetime.now(dt.UTC).date().isoformat()
    stem = out / f"speed-{'smoke-' if args.smoke else ''}{args.machine}-{date}"
    results: dict[str, list[dict]] = {}
    for index, backend in enumerate(args.backends):
        # The first backend gets the grid; the others compare the backends on the presets.
        models, grid = (args.models, args.grid_models) if index == 0 else (args.other_backend_models, [])
        json_path = stem.parent / f"{stem.name}-{backend}.json"
        if args.rebuild:
            if json_path.exists():
                results[backend] = json.loads(json_path.read_text())
            continue
        if not models:
            continue
        command = [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--models",
            *models,
            "--grid-models",
            *grid,
            "--ratios",
            *map(str, args.ratios),
            "--steps",
            str(args.steps),
            "--rounds",
            str(args.rounds),
            "--child",
            backend,
            "--json",
            str(json_path),
            *(["--append"] if args.append else []),
        ]
        subprocess.run(command, cwd=REPO, check=True)
        results[backend] = json.loads(json_path.read_text())
    run_path = stem.parent / f"{stem.name}-run.json"
    run = (
        json.loads(run_path.read_text())
        if (args.rebuild or args.append) and run_path.exists()
        else {"date": date, "commands": []}
    )
    if not args.rebuild:
        run["commands"].append({"argv": args.argv, "minutes": (time.perf_counter() - began) / 60})
        run_path.write_text(json.dumps(run, indent=1))
    figures = plots(results, stem)
    path = stem.with_suffix(".md")
    path.write_text(report(results, args, figures, run))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A quick timing of a real-size model for ``make demo``: the demo's shapes DiT has 64 image tokens, whose
sub-second runs time mostly the sampler's overhead, so the demo also times the SD3-family model of the speed
benchmark (ComfyUI's own class at SD3-medium's width and 1024² token count, random weights, 2 of its 24 joint
blocks) unmerged, with spatial ToMe 0.5 and with IBTM 0.5, through the same node code the workflow runs.

One untimed 1-step run of the unmerged model (ComfyUI loads it, the allocator warms up), then ``--rounds`` timed
runs of ``--steps`` steps each per condition, the conditions alternating (A B C, B C A, ...) so that drift of the
machine's speed falls on all of them. Seconds per step as ``speed.py`` measures them: from the sampler's start to
its last step.
Writes ``{"model", "cut", "steps", "rounds", "rows": [{"name", "seconds_per_step": [...], "median", "speedup"}]}``
to ``--json``; prints a line per run so the demo shows its progress.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.speed import Condition, patch, run_seconds
from benchmarks.speed_models import MODELS
from devkit import comfy_env, tiny_models

# What the demo workflow compares, with the same nodes and ratio.
CONDITIONS = (
    Condition("unmerged", "unpatched", 0.0),
    Condition("spatial ToMe 0.5", "tome", 0.5),
    Condition("IBTM 0.5", "ibtm", 0.5),
)


def time_conditions(model: str, steps: int, rounds: int) -> dict:
    """The rows of ``CONDITIONS`` on ``MODELS[model]``, timed as the module docstring says."""
    import torch

    spec = MODELS[model]()
    began = time.perf_counter()
    base = tiny_models.build_patcher(spec.family, seed=0, scale=0.5)
    patched = {c.name: patch(base, c) for c in CONDITIONS}
    print(f"[demo speed] {spec.name} ({spec.cut}), random weights, built in {time.perf_counter() - began:.0f} s")
    seconds: dict[str, list[float]] = {c.name: [] for c in CONDITIONS}
    with torch.inference_mode():
        warm = run_seconds(spec, patched[CONDITIONS[0].name], 1)
        print(f"[demo speed] warm-up ({CONDITIONS[0].name}, 1 step): {warm:.1f} s", flush=True)
        for index in range(rounds):
            shift = index % len(CONDITIONS)
            for c in CONDITIONS[shift:] + CONDITIONS[:shift]:
                seconds[c.name].append(run_seconds(spec, patched[c.name], steps) / steps)
                print(f"[demo speed] round {index + 1}/{rounds} {c.name}: {seconds[c.name][-1]:.2f} s/step", flush=True)
    base_step = statistics.median(seconds[CONDITIONS[0].name])
    rows = [
        {
            "name": c.name,
            "seconds_per_step": seconds[c.name],
            "median": statistics.median(seconds[c.name]),
            "speedup": base_step / statistics.median(seconds[c.name]),
        }
        for c in CONDITIONS
    ]
    return {"model": spec.name, "cut": spec.cut, "steps": steps, "rounds": rounds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd3-1024", choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=2, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=1, help="timed runs per condition")
    parser.add_argument("--json", type=Path, required=True, help="where the rows go")
    args = parser.parse_args(argv)
    comfy_env.bootstrap_comfyui(pytorch_attention=True)
    comfy_env.import_pack()
    args.json.write_text(json.dumps(time_conditions(args.model, args.steps, args.rounds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

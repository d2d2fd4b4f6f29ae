"""Seconds per sampling step of a full-size SD1.5 UNet (random weights: values do not change the compute),
unpatched vs ComfyUI's built-in TomePatchModel vs this pack's spatial ToMe and importance merging.

One run samples each condition in turn (A B C D, repeated ``--rounds`` times) through ``comfy.sample.sample``
with batch 1 and cfg > 1 (cond and uncond in one batch of 2), times every step with the sampler's
callback and reports medians and the speed-up against unpatched from the same run. Writes
``benchmarks/results/unet-step-<attention>-<date>.md``. Usage:

    .comfyui/venv/bin/python -m benchmarks.unet_step [--size 512] [--steps 5] [--rounds 2] [--sdpa]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devkit import comfy_env, tiny_models  # noqa: E402

SD15_FULL = {
    **tiny_models.SD15_LOADABLE, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
}


def build_conditions(ratio: float) -> dict:
    from comfy_extras.nodes_tomesd import TomePatchModel

    comfy_env.import_pack()
    from tokenmerge.nodes import importance as nodes

    family = tiny_models.TinyFamily("sd15_full", "SD15", SD15_FULL, latent_channels=4, context_dim=768)
    base = tiny_models.build_patcher(family, seed=0)
    fast = {"max_downsample": "auto", "dst_fraction": 0.25, "pool_factor": 1.4, "dst_mode": "random",
            "merge_cross_attention": True, "merge_feed_forward": True, "prune_until": 0.1,
            "start_percent": 0.0, "end_percent": 1.0, "seed": 0}
    return family, {
        "unpatched": base,
        f"builtin TomePatchModel {ratio}": TomePatchModel.execute(base, ratio)[0],
        f"ours spatial ToMe {ratio}": nodes.TokenMergeSpatialToMe.execute(
            base, ratio, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0)[0],
        f"ours importance {ratio}": nodes.TokenMergeImportance.execute(base, ratio)[0],
        f"ours importance {ratio} + cross-attn + FF": nodes.TokenMergeImportanceAdvanced.execute(
            base, ratio, **fast)[0],
    }


def time_steps(patcher, family, size: int, steps: int) -> list[float]:
    import comfy.sample

    latent = family.empty_latent(size, size)
    stamps = [time.perf_counter()]
    comfy.sample.sample(patcher, comfy.sample.prepare_noise(latent, 0), steps, 5.0, "euler", "normal",
                        family.conditioning(1, 77), family.conditioning(2, 77), latent, disable_pbar=True,
                        callback=lambda *_: stamps.append(time.perf_counter()), seed=0)
    return [b - a for a, b in itertools.pairwise(stamps)][1:]  # drop step 0 (warm-up, prune)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--sdpa", action="store_true", help="--use-pytorch-cross-attention")
    args = parser.parse_args()
    comfy_env.bootstrap_comfyui(pytorch_attention=args.sdpa)
    family, conditions = build_conditions(args.ratio)
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(args.rounds):
        for name, patcher in conditions.items():
            times[name] += time_steps(patcher, family, args.size, args.steps)
            print(f"{name}: {statistics.median(times[name]):.2f} s/step so far", flush=True)
    base = statistics.median(times["unpatched"])
    today = dt.datetime.now(dt.UTC).date()
    attention = "pytorch-sdpa" if args.sdpa else "sub-quadratic"
    lines = [
        f"# SD1.5 UNet step time, {args.size}x{args.size}, {attention} attention",
        "",
        (f"{today} · {platform.processor() or platform.machine()} · torch threads 2 · fp32 · "
         f"batch 1 with cfg 5 (one forward of 2 rows per step) · euler · {args.steps} steps per run, step 0 "
         f"dropped · {args.rounds} rounds alternating the conditions · random weights (compute is the same)"),
        "",
        "| condition | median s/step | min-max | speed-up vs unpatched |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | {base / median:.2f}x |")
    report = "\n".join(lines) + "\n"
    out = REPO / "benchmarks" / "results" / f"unet-step-{args.size}-{attention}-{today}.md"
    out.write_text(report)
    print(report)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

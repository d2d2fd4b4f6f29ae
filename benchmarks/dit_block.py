"""Seconds per call of one full-width DiT block, unpatched vs SDTM's structure and detail stages, on this CPU.

Blocks (random weights, fp32, batch 2 = cond + uncond, 1024x1024 image = 4096 image tokens):
* SD3-medium width: ``JointBlock`` with hidden 1536, 24 heads, 154 text tokens;
* Flux width: ``DoubleStreamBlock`` with hidden 3072, 24 heads, 512 text tokens, RoPE.

Each block runs through this pack's real block replace (``DiTMerger.block_replace``); the stage and the
ratio are pinned per condition. The per-step figure combines the block times over a run with the
default schedule (every 3rd step protected = full; structure stage on the first 40 % of the steps, detail
after; ratio 0.4 +- 0.2 cosine), weighting each step's stage time at that stage's mean ratio. Writes
``benchmarks/results/dit-block-<date>.md``. Usage: ``.comfyui/venv/bin/python -m benchmarks.dit_block``.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devkit import comfy_env, tiny_models  # noqa: E402

STEPS, SWITCH, PROTECT, RATIO, DEVIATION = 28, 0.4, 3, 0.4, 0.2


def sd3_block():
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock

    block = JointBlock(
        1536,
        24,
        mlp_ratio=4.0,
        qkv_bias=True,
        pre_only=False,
        operations=comfy.ops.disable_weight_init,
        dtype=torch.float32,
        device="cpu",
    )
    tiny_models.random_init_(block, 0)
    g = torch.Generator().manual_seed(0)
    args = {
        "img": torch.randn(2, 4096, 1536, generator=g),
        "txt": torch.randn(2, 154, 1536, generator=g),
        "vec": torch.randn(2, 1536, generator=g),
        "transformer_options": {},
    }

    def run(a):
        txt, img = block(a["txt"], a["img"], c=a["vec"], transformer_options={})
        return {"txt": txt, "img": img}

    return "sd3", block, block.x_block.mlp, args, run


def flux_block():
    import comfy.ops
    from comfy.ldm.flux.layers import DoubleStreamBlock, EmbedND

    block = DoubleStreamBlock(
        3072, 24, 4.0, qkv_bias=True, operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu"
    )
    tiny_models.random_init_(block, 0)
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(ys), ys, xs], dim=-1).view(1, 4096, 3).float()
    ids = torch.cat([torch.zeros(1, 512, 3), img_ids], dim=1).expand(2, -1, -1)
    pe = EmbedND(128, 10000, [16, 56, 56])(ids)
    args = {
        "img": torch.randn(2, 4096, 3072, generator=g),
        "txt": torch.randn(2, 512, 3072, generator=g),
        "vec": torch.randn(2, 3072, generator=g),
        "pe": pe,
        "attn_mask": None,
        "transformer_options": {},
    }

    def run(a):
        img, txt = block(img=a["img"], txt=a["txt"], vec=a["vec"], pe=a["pe"], transformer_options={})
        return {"img": img, "txt": txt}

    return "flux", block, block.img_mlp, args, run


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(build, reps: int) -> dict[str, float]:
    comfy_env.import_pack()
    from tokenmerge.merging.sdtm import cosine_ratio
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    family, _block, mlp, args, run = build()
    progress = [i / STEPS for i in range(STEPS)]
    structure_steps = [p for i, p in enumerate(progress) if p < SWITCH and i % PROTECT]
    detail_steps = [p for i, p in enumerate(progress) if p >= SWITCH and i % PROTECT]
    stage_ratio = {
        "structure": statistics.mean(cosine_ratio(RATIO, DEVIATION, p) for p in structure_steps),
        "detail": statistics.mean(cosine_ratio(RATIO, DEVIATION, p) for p in detail_steps),
    }
    results = {}
    with torch.inference_mode():
        results["full"] = timed(lambda: run(args), reps)
        original_mlp = mlp.forward
        for stage, sigma in (("structure", 1.0), ("detail", 0.1)):
            config = MergeConfig(
                Method.SDTM,
                ratio=round(stage_ratio[stage], 4),
                max_downsample=1,
                deviation=0.0,
                protect_every=0,
                prune_until=0.0,
            )
            state = MergeState()
            merger = DiTMerger(config, state, family, (1, 2, 2), switch_sigma=0.5)
            key = ("double_block", 0)
            mlp.forward = merger.mlp_forward(original_mlp, key)  # what the MLP object patch installs
            merger.mlp_keys.add(key)
            replace = merger.block_replace(key)

            def call(replace=replace, state=state, sigma=sigma):
                state.call = {
                    "latent_shape": [2, 16, 128, 128],
                    "cond_or_uncond": [1, 0],
                    "sigmas": torch.tensor([sigma]),
                    "sample_sigmas": None,
                }
                return replace(args, {"original_block": run})

            results[stage] = timed(call, reps)
            results[f"{stage}_ratio"] = stage_ratio[stage]
            results[f"{stage}_tokens"] = state.counters["tokens_out"] / max(1, state.counters["tokens_in"])
        mlp.forward = original_mlp
    protected = sum(1 for i in range(STEPS) if i % PROTECT == 0)
    per_step = (
        protected * results["full"]
        + len(structure_steps) * results["structure"]
        + len(detail_steps) * results["detail"]
    ) / STEPS
    results["step_speedup"] = results["full"] / per_step
    return results


def main() -> int:
    comfy_env.bootstrap_comfyui(pytorch_attention=True)
    today = dt.datetime.now(dt.UTC).date()
    lines = [
        f"# SDTM block speed on CPU, {today}",
        "",
        (
            "2-core CPU, torch threads 2, fp32, PyTorch SDPA, batch 2 (cond + uncond), 4096 image tokens "
            f"(1024x1024), median of 3 calls after a warm-up. Run: {STEPS} steps, every {PROTECT}rd protected "
            f"(full), structure stage below {SWITCH:.0%} of the steps, ratio {RATIO} +- {DEVIATION} (cosine)."
        ),
        "",
        (
            "| block | full s | structure s (ratio, tokens kept) | speed-up | detail s (MLP only; ratio) | speed-up "
            "| per-step speed-up over the run |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, build in (("SD3-medium width (1536)", sd3_block), ("Flux width (3072)", flux_block)):
        r = measure(build, reps=3)
        print(name, r, flush=True)
        lines.append(
            f"| {name} | {r['full']:.2f} | {r['structure']:.2f} ({r['structure_ratio']:.2f}, "
            f"{r['structure_tokens']:.0%}) | {r['full'] / r['structure']:.2f}x | {r['detail']:.2f} "
            f"({r['detail_ratio']:.2f}) | {r['full'] / r['detail']:.2f}x | {r['step_speedup']:.2f}x |"
        )
    report = "\n".join(lines) + "\n"
    out = REPO / "benchmarks" / "results" / f"dit-block-{today}.md"
    out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

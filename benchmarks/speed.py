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
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
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

from devkit import comfy_env, tiny_models  # noqa: E402

CFG = 5.0
BACKENDS = {"pytorch": True, "sub-quadratic": False}  # label -> --use-pytorch-cross-attention
RANGES = ("tokenmerge.match", "tokenmerge.merge", "tokenmerge.unmerge", "tokenmerge.capture")
UNET_HEADS = {"num_heads": 8, "num_head_channels": -1}  # SD1.5: 8 heads at every level


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: its family (config and conditioning shapes), the image it samples and what was cut."""

    name: str
    family: tiny_models.TinyFamily
    width: int
    height: int
    text_tokens: int
    unet: bool  # UNet family (the built-in TomePatchModel applies) or DiT (SDTM applies)
    scheduler: str = "normal"
    frames: int = 1
    cut: str = "full depth"


def _sd15(side: int) -> ModelSpec:
    config = {
        **tiny_models.SD15_LOADABLE,
        **UNET_HEADS,
        "channel_mult": [1, 2, 4, 4],
        "num_res_blocks": [2] * 4,
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "transformer_depth_middle": 1,
    }
    family = tiny_models.TinyFamily("sd15", "SD15", config, latent_channels=4, context_dim=768)
    return ModelSpec(f"SD1.5 {side}x{side}", family, side, side, 77, unet=True)


def _sdxl() -> ModelSpec:
    config = {
        **tiny_models.UNET_COMMON,
        "model_channels": 320,
        "channel_mult": [1, 2, 4],
        "num_res_blocks": [2] * 3,
        "transformer_depth": [0, 0, 2, 2, 2, 2],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 2, 2, 2],
        "transformer_depth_middle": 2,
        "context_dim": 2048,
        "use_linear_in_transformer": True,
        "adm_in_channels": 2816,
        "num_classes": "sequential",
        "num_heads": -1,
        "num_head_channels": 64,
    }
    family = tiny_models.TinyFamily("sdxl", "SDXL", config, latent_channels=4, context_dim=2048, pooled_dim=1280)
    return ModelSpec(
        "SDXL 1024x1024",
        family,
        1024,
        1024,
        77,
        unet=True,
        cut="lowest level 2 transformer blocks per attention layer instead of 10 (the merged 64x64 level is full)",
    )


def _sd3() -> ModelSpec:
    config = {
        **tiny_models.SD3_TINY,
        "depth": 24,
        "num_blocks": 2,
        "adm_in_channels": 2048,
        "pos_embed_max_size": 192,
        "num_patches": 36864,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
    }
    family = tiny_models.TinyFamily("sd3", "SD3", config, latent_channels=16, context_dim=4096, pooled_dim=2048)
    return ModelSpec(
        "SD3-medium width 1024x1024",
        family,
        1024,
        1024,
        154,
        unet=False,
        scheduler="simple",
        cut="2 of 24 joint blocks (width 1536, 24 heads)",
    )


def _flux() -> ModelSpec:
    config = {
        **tiny_models.FLUX_TINY,
        "hidden_size": 3072,
        "num_heads": 24,
        "depth": 1,
        "depth_single_blocks": 1,
        "context_in_dim": 4096,
        "vec_in_dim": 768,
    }
    family = tiny_models.TinyFamily(
        "flux", "Flux", config, latent_channels=16, context_dim=4096, pooled_dim=768, cond_extras={"guidance": 3.5}
    )
    return ModelSpec(
        "Flux width 1024x1024",
        family,
        1024,
        1024,
        512,
        unet=False,
        scheduler="simple",
        cut="1 of 19 double blocks and 1 of 38 single blocks (width 3072)",
    )


def _pixart() -> ModelSpec:
    config = {
        **tiny_models.PIXART_ALPHA_TINY,
        "hidden_size": 1152,
        "num_heads": 16,
        "depth": 2,
        "caption_channels": 4096,
        "input_size": 128,
        "pe_interpolation": 2,
    }
    family = tiny_models.TinyFamily(
        "pixart_alpha", "PixArtAlpha", config, latent_channels=4, context_dim=4096, min_side=256
    )
    return ModelSpec("PixArt-alpha 1024x1024", family, 1024, 1024, 120, unet=False, cut="2 of 28 blocks (width 1152)")


def _wan() -> ModelSpec:
    config = {
        **tiny_models.WAN21_TINY,
        "dim": 1536,
        "ffn_dim": 8960,
        "num_heads": 12,
        "num_layers": 2,
        "text_dim": 4096,
    }
    family = tiny_models.TinyFamily("wan21", "WAN21_T2V", config, latent_channels=16, context_dim=4096, video=True)
    return ModelSpec(
        "Wan 2.1 1.3B width 512x320x17",
        family,
        512,
        320,
        512,
        unet=False,
        scheduler="simple",
        frames=17,
        cut="2 of 30 blocks (width 1536); 17 frames = 5 latent frames, 3200 tokens",
    )


# The newer families below keep two blocks, so that IBTM's preset (the middle half of the blocks) merges one of them
# (with one block it would merge none), at sizes where a step takes seconds on a 2-core CPU.
def _flux2() -> ModelSpec:
    config = {
        **tiny_models.FLUX2_TINY,
        "hidden_size": 6144,
        "num_heads": 48,
        "axes_dim": [32, 32, 32, 32],
        "depth": 0,
        "depth_single_blocks": 2,
        "context_in_dim": 15360,
    }
    family = tiny_models.TinyFamily(
        "flux2",
        "Flux2",
        config,
        latent_channels=128,
        context_dim=15360,
        pooled_dim=64,
        cond_extras={"guidance": 4.0},
        downscale=16,
    )
    return ModelSpec(
        "Flux 2 dev width 512x512",
        family,
        512,
        512,
        512,
        unet=False,
        scheduler="simple",
        cut="2 of 48 single blocks and none of the 8 double blocks (width 6144, 48 heads); 1024 image "
        "and 512 text tokens",
    )


def _zimage() -> ModelSpec:
    config = {
        **tiny_models.ZIMAGE_TINY,
        "dim": 3840,
        "n_heads": 30,
        "n_kv_heads": 30,
        "cap_feat_dim": 2560,
        "n_layers": 2,
        "n_refiner_layers": 1,
    }
    family = tiny_models.TinyFamily("zimage", "ZImage", config, latent_channels=16, context_dim=2560)
    return ModelSpec(
        "Z-Image width 512x512",
        family,
        512,
        512,
        128,
        unet=False,
        scheduler="simple",
        cut="2 of 30 layers, 1 of 2 noise and 1 of 2 caption refiner layers (unmerged; width 3840, "
        "30 heads); 1024 image and 128 caption tokens",
    )


def _wan22() -> ModelSpec:
    config = {
        **tiny_models.WAN21_TINY,
        "dim": 3072,
        "ffn_dim": 14336,
        "num_heads": 24,
        "num_layers": 2,
        "in_dim": 48,
        "out_dim": 48,
        "text_dim": 4096,
    }
    family = tiny_models.TinyFamily(
        "wan22", "WAN22_T2V", config, latent_channels=48, context_dim=4096, video=True, downscale=16
    )
    return ModelSpec(
        "Wan 2.2 5B width 832x480x17",
        family,
        832,
        480,
        512,
        unet=False,
        scheduler="simple",
        frames=17,
        cut="2 of 30 blocks (width 3072); text to video; 17 frames = 5 latent frames, 1950 tokens",
    )


def _hunyuan() -> ModelSpec:
    config = {
        **tiny_models.HUNYUAN_VIDEO_TINY,
        "hidden_size": 3072,
        "num_heads": 24,
        "context_in_dim": 4096,
        "vec_in_dim": 768,
    }
    family = tiny_models.TinyFamily(
        "hunyuan_video", "HunyuanVideo", config, latent_channels=16, context_dim=4096, pooled_dim=768, video=True
    )
    return ModelSpec(
        "HunyuanVideo width 512x320x17",
        family,
        512,
        320,
        256,
        unet=False,
        scheduler="simple",
        frames=17,
        cut="1 of 20 double blocks and 1 of 40 single blocks (width 3072); 17 frames = 5 latent frames, 3200 tokens",
    )


def _smoke() -> ModelSpec:
    return ModelSpec("tiny SD1.x (smoke)", tiny_models.FAMILIES["sd15"], 128, 128, 16, unet=True)


MODELS: dict[str, Callable[[], ModelSpec]] = {
    "sd15-512": lambda: _sd15(512),
    "sd15-768": lambda: _sd15(768),
    "sdxl-1024": _sdxl,
    "sd3-1024": _sd3,
    "flux-1024": _flux,
    "pixart-1024": _pixart,
    "wan-video": _wan,
    "flux2-512": _flux2,
    "zimage-512": _zimage,
    "wan22-video": _wan22,
    "hunyuan-video": _hunyuan,
    "smoke": _smoke,
}
DEFAULT_MODELS = (
    "sd15-512",
    "sd15-768",
    "sdxl-1024",
    "sd3-1024",
    "flux-1024",
    "pixart-1024",
    "wan-video",
    "flux2-512",
    "zimage-512",
    "wan22-video",
    "hunyuan-video",
)


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

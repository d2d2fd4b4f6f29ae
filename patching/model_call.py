"""What one model call tells the block patches, decided once per call by the APPLY_MODEL wrapper, outside any
``torch.compile`` graph (TorchCompileModel compiles the diffusion model inside that wrapper).

The wrapper reads the step and sigma (``steps.py``; the only host reads of a call), decides whether and how the
step merges, derives the seed stream of the step's random draws as a device tensor and pools the latest
importance map to every token grid the blocks will see, with its ordering. Block patches read only these
decisions (booleans, enums, the step's merge ratio) and tensors, never the step index or sigma: a compiled model
recompiles when a decision flips (a few times a run), not at every step, and no block call waits for the host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..merging.draws import stream_of
from ..merging.ibtm import importance_order
from ..merging.importance import to_token_grid
from ..merging.plan import MergeMode
from ..merging.sdtm import cosine_ratio
from .config import DetailDestination, Method
from .steps import current_sigma, run_steps, step_position

if TYPE_CHECKING:
    from .config import MergeConfig
    from .state import MergeState


class GridImportance(NamedTuple):
    """The importance map of the previous step on one token grid."""

    grid: torch.Tensor  # [S * frames, h * w], higher = more important
    order: torch.Tensor | None  # [S * frames, h * w] token indices by falling importance (IBTM only)


LEADING_REFERENCE = "leading"  # the reference method of a latent placed before the image tokens


@dataclass(frozen=True)
class ModelCall:
    """One model call: its layout, its place in the run and the merging decisions of its step."""

    latent_shape: tuple[int, ...]
    cond_or_uncond: tuple[int, ...] = (0,)
    sigma: float | None = None  # the call's sigma (first row), None outside a sampler
    step: int = 0  # index in the run's schedule (steps.py)
    steps: int = 0  # steps of the run, 0 outside a sampler
    progress: float = 0.0  # fraction of the run done
    active: bool = True  # the step lies within start_percent..end_percent
    mode: MergeMode = MergeMode.MEAN  # pruning in the first prune_until of the run
    ratio: float = 0.0  # fraction of a grid's tokens merged at this step (SDTM: its cosine schedule)
    # tokens merged on each (h, w) grid: int(h * w * ratio), computed here so that a compiled graph sees an int
    # (SDTM's schedule changes it every step: one recompile makes it symbolic; a float there would not trace)
    merge_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    structure: bool = True  # SDTM: the structure stage (sigma above the switch)
    protected: bool = False  # SDTM: a full step that refreshes the cache
    # SDTM, protected call: whether the merged steps before the next protected one include structure-stage
    # steps, and whether they include detail-stage steps (what the cache must keep for them)
    stages_ahead: tuple[bool, bool] = (True, False)
    seed: torch.Tensor | None = None  # [] int64 on the call's device: the stream of this step's draws
    importance: dict[tuple[int, int], GridImportance] = field(default_factory=dict)  # (h, w) -> map on that grid
    text_tokens: int | None = None  # length of the call's text context (c_crossattn), where it has one
    # reference images (Flux Kontext / Flux 2 / QwenImage-Edit editing) whose tokens get the zero timestep's
    # modulation ("index_timestep_zero"): the model hands the blocks token ranges the merge would move
    reference_timestep_zero: bool = False
    # a reference latent placed before the image tokens (HunyuanVideo / HunyuanImage ``ref_latent``)
    leading_references: bool = False

    @property
    def chunks(self) -> int:
        return max(1, len(self.cond_or_uncond))


def grid_importance(maps: torch.Tensor, h: int, w: int, ordered: bool = True) -> GridImportance:
    """``maps`` [S * frames, H, W] at latent resolution on the h x w token grid, with its ordering if ``ordered``."""
    grid = to_token_grid(maps, h, w)
    return GridImportance(grid, importance_order(grid) if ordered else None)


def model_call(
    config: MergeConfig,
    state: MergeState,
    x: torch.Tensor,
    options: dict,
    grids: list[tuple[int, int, int]],
    switch_sigma: float | None = None,
    *,
    text_tokens: int | None = None,
    reference_method: str | None = None,
) -> ModelCall:
    """The :class:`ModelCall` of ``x`` [B, C, (T,) H, W] with ``options`` (its ``transformer_options``), whose
    blocks see the (frames, h, w) token ``grids``; ``switch_sigma`` is SDTM's stage switch. ``text_tokens`` is the
    length of the call's text context and ``reference_method`` how its reference images are placed (``None``:
    no reference image)."""
    step, progress = step_position(options)
    sigma = current_sigma(options)
    schedule = options.get("sample_sigmas")
    sdtm = config.method is Method.SDTM
    ratio = cosine_ratio(config.ratio, config.deviation, progress) if sdtm else config.ratio
    protect = sdtm and config.protect_every > 0 and step % config.protect_every == 0
    structure = sigma is None or switch_sigma is None or sigma > switch_sigma
    cond_or_uncond = tuple(options.get("cond_or_uncond") or (0,))  # never empty: one chunk per entry
    return ModelCall(
        latent_shape=tuple(x.shape),
        cond_or_uncond=cond_or_uncond,
        sigma=sigma,
        step=step,
        steps=run_steps(options),
        progress=progress,
        active=config.start_percent <= progress <= config.end_percent,
        mode=MergeMode.PRUNE if progress < config.prune_until else MergeMode.MEAN,
        ratio=ratio,
        merge_counts={(h, w): int(h * w * ratio) for _, h, w in grids},
        structure=structure,
        protected=protect,
        stages_ahead=_stages_ahead(step, schedule, config.protect_every, switch_sigma, structure)
        if protect
        else (structure, not structure),
        seed=torch.tensor(stream_of(config.seed, step), dtype=torch.int64, device=x.device),
        importance=_pooled_importance(config, state, x, len(cond_or_uncond), grids),
        text_tokens=text_tokens,
        reference_timestep_zero=reference_method == "index_timestep_zero",
        leading_references=reference_method == LEADING_REFERENCE,
    )


def _stages_ahead(
    step: int, schedule: object, protect_every: int, switch_sigma: float | None, structure: bool
) -> tuple[bool, bool]:
    """(structure-stage steps ahead, detail-stage steps ahead) among the merged steps after protected ``step``."""
    if schedule is None or switch_sigma is None:
        return structure, not structure
    sigmas = torch.as_tensor(schedule).flatten().tolist()
    ahead = sigmas[step + 1 : min(step + protect_every, len(sigmas) - 1)]
    return any(sigma > switch_sigma for sigma in ahead), any(sigma <= switch_sigma for sigma in ahead)


def _pooled_importance(
    config: MergeConfig, state: MergeState, x: torch.Tensor, chunks: int, grids: list[tuple[int, int, int]]
) -> dict[tuple[int, int], GridImportance]:
    """The latest importance map on each grid, for the methods that merge by it; empty before the first map."""
    importance = state.importance
    by_importance = config.method is Method.IMPORTANCE
    if importance is None or not (by_importance or config.detail_destination is DetailDestination.IMPORTANCE):
        return {}
    samples = x.shape[0] // chunks
    latent_hw = tuple(x.shape[-2:])
    frames = x.shape[2] if x.ndim == 5 else 1
    # video-shaped latents ([B, C, T, H, W]: Wan, QwenImage) give [S, T, H, W] maps, even with one frame
    expected = (samples, *((frames,) if importance.ndim == 4 else ()), *latent_hw)
    if tuple(importance.shape) != expected or importance.device != x.device:
        state.warn_once(
            "importance_shape",
            f"tokenmerge: importance map {tuple(importance.shape)} does not match "
            f"the call's latent {list(expected)} (area conditioning?); spatial ToMe is used for such "
            "calls",
            logging.INFO,
        )
        return {}
    # calls split by memory (cond, then uncond) share the step's map: pool it once per map and layout
    key = (expected, tuple(grids))
    cached = state.pooled_importance
    if cached is not None and cached[0] is importance and cached[1] == key:
        return cached[2]
    maps = importance.reshape(samples * frames, *latent_hw)  # [S, (T,) H, W] -> [S * T, H, W]
    pooled = {(h, w): grid_importance(maps, h, w, by_importance) for _, h, w in grids}
    state.pooled_importance = (importance, key, pooled)
    return pooled

"""Diffusion-transformer adapters (SD3/3.5, Flux, PixArt alpha/sigma, Wan 2.1): merge only the image tokens that
enter a block, run the block on fewer tokens, unmerge its image output.

* SD3, Flux and Wan: ``patches_replace["dit"]`` block replaces that call the block they replaced (the
  ``original_block`` ComfyUI hands in, which is any earlier pack's replace, or the block itself).
* PixArt has no replace point: an object patch on ``blocks.<i>.forward``, chained to the current one.

Text tokens are never merged. Positions stay right: RoPE tables (Flux ``pe``, Wan ``freqs``) are
gathered for the kept tokens, which keep their own position (a destination keeps its own); SD3 and
PixArt add absolute embeddings before the blocks. Modulation is per sample and broadcasts over any
token count. Wan merges within frames, so every frame keeps the same number of tokens.

The latent shape and the sampler's step information of the current call come from an APPLY_MODEL
wrapper (``state.call``); blocks only see tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..merging.plan import MergeMode, MergePlan, kept_order, merge, take_tokens, unmerge
from .planner import TokenPlanner

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import MergeConfig
    from .state import MergeState



def spatial_patch(diffusion_model: torch.nn.Module) -> tuple[int, int, int]:
    """(t, h, w) patch size of a DiT's image tokens."""
    patch = diffusion_model.patch_size
    if isinstance(patch, int):
        return 1, patch, patch
    return tuple(patch) if len(patch) == 3 else (1, *patch)


def dit_family(diffusion_model: torch.nn.Module) -> str | None:
    """Which adapter handles this diffusion model, by its class."""
    return {"OpenAISignatureMMDITWrapper": "sd3", "MMDiT": "sd3", "Flux": "flux", "PixArtMS": "pixart",
            "PixArt": "pixart", "WanModel": "wan"}.get(type(diffusion_model).__name__)


def block_keys(diffusion_model: torch.nn.Module, family: str) -> list[tuple[str, int]]:
    """Every block of the model in forward order, as ``patches_replace`` keys (PixArt: ("block", i))."""
    if family == "flux":
        return ([("double_block", i) for i in range(len(diffusion_model.double_blocks))]
                + [("single_block", i) for i in range(len(diffusion_model.single_blocks))])
    if family == "sd3":
        return [("double_block", i) for i in range(len(diffusion_model.joint_blocks))]
    if family == "wan":
        return [("double_block", i) for i in range(len(diffusion_model.blocks))]
    return [("block", i) for i in range(len(diffusion_model.blocks))]


def selected_blocks(keys: list[tuple[str, int]], block_range: tuple[float, float]) -> list[tuple[str, int]]:
    """The blocks whose position i (of n) satisfies start <= i / n < end (IBTM merges PixArt's middle half)."""
    start, end = block_range
    return [key for i, key in enumerate(keys) if start <= i / len(keys) < end]


class DiTMerger:
    """Block patches of one patched DiT; shares its :class:`MergeState` with the capture and the wrapper."""

    def __init__(self, config: MergeConfig, state: MergeState, family: str, patch: tuple[int, int, int]) -> None:
        self.config = config
        self.state = state
        self.family = family
        self.patch = patch
        self.planner = TokenPlanner(config, state)

    def __deepcopy__(self, memo: dict) -> DiTMerger:
        return self

    def _grid(self) -> tuple[int, int, int]:
        """(frames, h, w) of the current call's image-token grid."""
        shape = self.state.call["latent_shape"]
        pt, ph, pw = self.patch
        frames = math.ceil(shape[2] / pt) if len(shape) == 5 else 1
        return frames, math.ceil(shape[-2] / ph), math.ceil(shape[-1] / pw)

    def _image_tokens(self) -> int:
        return math.prod(self._grid()) if self.state.call is not None else 0

    def _plan(self, img: torch.Tensor, key: object) -> tuple[MergePlan, MergeMode] | None:
        call = self.state.call
        if call is None:
            return None
        frames, h, w = self._grid()
        shape = call["latent_shape"]
        try:
            return self.planner.plan(img, h, w, call, shape[-2:], key, frames=frames)
        except Exception as exc:  # noqa: BLE001  never fail a run because of merging
            self.planner.skip("plan_error", f"building the merge plan failed ({exc!r})")
            return None

    # --------------------------------------------------------------------- patches_replace["dit"]
    def block_replace(self, key: tuple[str, int], previous: Callable[[dict, dict], dict] | None = None,
                      ) -> Callable[[dict, dict], dict]:
        """Replace for block ``key``; it calls ``previous`` (a replace set earlier by another node) if any."""
        kind = key[0]

        def replace(args: dict, extra: dict) -> dict:
            def original(block_args: dict) -> dict:
                return previous(block_args, extra) if previous is not None else extra["original_block"](block_args)

            if self._unsupported(args):
                return original(args)
            # Flux single blocks see cat(txt, img): the text length is what exceeds the image grid
            txt_len = args["img"].shape[1] - self._image_tokens() if kind == "single_block" else 0
            img = args["img"][:, txt_len:]
            planned = self._plan(img, key)
            if planned is None:
                return original(args)
            plan, mode = planned
            new_args = dict(args)
            merged = merge(img, plan, mode)
            new_args["img"] = torch.cat([args["img"][:, :txt_len], merged], dim=1) if txt_len else merged
            if args.get("pe") is not None:
                new_args["pe"] = self._gather_positions(args["pe"], plan)
            out = original(new_args)
            result = dict(out)
            out_img = out["img"]
            if txt_len:
                result["img"] = torch.cat([out_img[:, :txt_len], unmerge(out_img[:, txt_len:], plan)], dim=1)
            else:
                result["img"] = unmerge(out_img, plan)
            return result

        return replace

    def _unsupported(self, args: dict) -> bool:
        if args.get("attn_mask") is not None:
            self.planner.skip("attn_mask", "blocks with an attention mask are not merged yet")
            return True
        vec = args.get("vec")
        # e0 is [B, T_e, 6, C]; T_e > 1 means one timestep per frame, which repeat_e spreads over tokens by position
        if self.family == "wan" and isinstance(vec, torch.Tensor) and vec.ndim == 4 and vec.shape[1] > 1:
            self.planner.skip("wan_per_frame", "Wan per-frame timestep modulation (Wan 2.2 TI2V) is not merged yet")
            return True
        return False

    def _gather_positions(self, pe: torch.Tensor, plan: MergePlan) -> torch.Tensor:
        order = kept_order(plan)
        if self.family == "wan":  # freqs [1, L, 1, D/2, 2, 2]: image tokens only
            return take_tokens(pe, 1, order)
        # Flux pe [B, 1, L_txt + L_img, D/2, 2, 2], text first
        txt_len = pe.shape[2] - plan.num_tokens
        image = take_tokens(pe[:, :, txt_len:], 2, order)
        text = pe[:, :, :txt_len].expand(image.shape[0], *pe.shape[1:2], txt_len, *pe.shape[3:])
        return torch.cat([text, image], dim=2)

    # ------------------------------------------------------------------------ PixArt object patch
    def block_forward(self, previous: Callable[..., torch.Tensor], key: tuple[str, int]) -> Callable[..., Any]:
        """``blocks.<i>.forward`` replacement for PixArt, chained to ``previous``."""

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            planned = self._plan(x, key)
            if planned is None:
                return previous(x, *args, **kwargs)
            plan, mode = planned
            return unmerge(previous(merge(x, plan, mode), *args, **kwargs), plan)

        return forward

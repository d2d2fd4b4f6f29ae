"""Diffusion-transformer adapters (SD3/3.5, Flux 1 and 2, Chroma, QwenImage, PixArt alpha/sigma, Lumina 2, Z-Image,
Wan 2.1/2.2, HunyuanVideo): merge only the image tokens that enter a block, run the block (or its sub-layers) on
fewer tokens, and give every token its own input plus its group's unmerged update.

* SD3, Flux (and Chroma, which runs Flux's blocks with its own modulations), QwenImage, Wan and HunyuanVideo (Flux's
  blocks, text first or, in ComfyUI 0.3.x, image first: ``image_first``):
  ``patches_replace["dit"]`` block replaces that call the block they replaced (the ``original_block`` ComfyUI
  hands in, which is any earlier pack's replace, or the block itself). The block runs on the merged tokens; its
  update (output minus the merged input, copied first where blocks add to their input in place) is unmerged.
* Lumina 2 / Z-Image and PixArt have no replace point: object patches on their blocks (``dit_object_patches.py``);
  PixArt's block hands its plan to object patches on its attention, cross-attention and MLP (``sublayers.py``).
* The SDTM detail stage merges only the MLP, through the same sub-layer patches; SDTM's protected steps and cache
  blend are ``protected_steps.py``.

``install`` puts the patches on a clone; the families' tables (classes, block keys, layouts) are
``dit_families.py``, and what the other block inputs become for the merged tokens (RoPE rows, masks, per-frame
order) is ``dit_layout.py``.

Text tokens are never merged. Positions stay right: RoPE tables (Flux/QwenImage/HunyuanVideo ``pe``, Wan
``freqs``, Lumina ``freqs_cis``) are gathered for the kept tokens, which keep their own position (a destination
keeps its own); SD3 and PixArt add absolute embeddings before the blocks. Modulation is per sample and broadcasts
over any token count (Wan 2.2 TI2V: per frame, see ``dit_layout.frame_order``). Wan and HunyuanVideo merge within
frames, so every frame keeps the same number of tokens.

Attention over merged tokens (proportional attention, SDTM prompt reweighting; ``merging/attention_bias.py``)
reaches the upstream attention as a per-key logit bias through the block's ``transformer_options``
(``attention_override.py``); PixArt's attention takes no options, so there the options are ignored.

The latent shape and the sampler's step information of the current call come from an APPLY_MODEL
wrapper (``state.call``); blocks only see tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from ..merging.attention_bias import key_bias, multiplicity
from ..merging.plan import merge, splice, take_tokens, unmerge
from . import update_cache
from .attention_override import with_key_bias
from .chain import chain_object_patch, chained
from .config import Method
from .dit_families import (
    BLOCK_MODULES,
    JOINT_FAMILIES,
    REFERENCE_FAMILIES,
    block_keys,
    image_first,
    merged_sublayer_names,
    selected_blocks,
    spatial_patch,
)
from .dit_layout import frame_order, gather_positions, merged_mask
from .dit_object_patches import lumina_layer_forward, pixart_block_forward
from .planner import Planned, TokenPlanner
from .protected_steps import ProtectedSteps
from .state import Count, StateHolder
from .sublayers import SublayerCall, sublayer_forward, sublayer_paths

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import MergeConfig
    from .state import MergeState


class DiTMerger(StateHolder):
    """Block patches of one patched DiT; shares its :class:`MergeState` with the capture and the wrapper."""

    def __init__(
        self,
        config: MergeConfig,
        state: MergeState,
        family: str,
        patch: tuple[int, int, int],
        blocks: list[tuple[str, int]] = (),
        switch_sigma: float | None = None,
        pad_multiple: int | None = None,
        *,
        image_first: bool = False,
    ) -> None:
        super().__init__(state)
        self.config = config
        self.family = family
        self.patch = patch
        self.pad_multiple = pad_multiple  # Lumina 2 / Z-Image: the image part is padded to a multiple of this
        self.image_first = image_first  # joint sequences are [image, text] (see ``image_first()``)
        self.mask_arg = "attention_mask" if family == "hunyuan" else "attn_mask"  # the replace args' mask entry
        self.switch_sigma = switch_sigma  # SDTM: sigmas above it are the structure stage
        self.planner = TokenPlanner(config, state, blocks)
        self.sublayers: dict[tuple[str, int], frozenset[str]] = {}  # block -> its sub-layers that carry a patch
        self.protected = ProtectedSteps(
            config, state, family, self.sublayers, blends=self.planner.strategy.blends_cache
        )

    def token_grid(self, latent_shape: tuple[int, ...] | list[int]) -> tuple[int, int, int]:
        """(frames, h, w) of the image-token grid of a latent of ``latent_shape``."""
        pt, ph, pw = self.patch
        frames = math.ceil(latent_shape[2] / pt) if len(latent_shape) == 5 else 1
        return frames, math.ceil(latent_shape[-2] / ph), math.ceil(latent_shape[-1] / pw)

    def token_grids(self, latent_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """Every grid the blocks of a call see (one for a DiT), for the call wrapper."""
        return [self.token_grid(latent_shape)]

    def image_tokens(self) -> int:
        """Image tokens of the call in progress (0 outside one)."""
        call = self.state.call
        return math.prod(self.token_grid(call.latent_shape)) if call is not None else 0

    def plan_block(self, img: torch.Tensor, key: object) -> Planned | None:
        """The planner's plan for the image tokens ``img`` of block ``key`` in the call in progress, or ``None``."""
        call = self.state.call
        if call is None:
            return None
        frames, h, w = self.token_grid(call.latent_shape)
        return self.planner.plan(img, h, w, key, frames=frames)

    def merged_sublayers(self, planned: Planned) -> frozenset[str]:
        """The sub-layers that run on the merged tokens in this call (empty: the whole block is merged)."""
        if planned.mlp_only:
            return frozenset({"mlp"})
        return merged_sublayer_names(self.family, self.config) if self.family == "pixart" else frozenset()

    def with_sublayers(
        self, key: tuple[str, int], call: SublayerCall, run: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """``run(*args, **kwargs)`` with ``call`` handed to the sub-layer patches of block ``key``."""
        patched = self.sublayers.get(key)
        if not (call.merged or call.stored) or not patched:
            return run(*args, **kwargs)
        # counted here, not in the sub-layer patches: a block may run them under torch.utils.checkpoint (SD3),
        # whose compiled form refuses side effects
        if call.fuse and any(
            update_cache.lookup(self.state, name, key, call.planned.plan.dst_idx.shape[0]) is not None
            for name in call.merged & patched
        ):
            self.state.count(Count.FUSED_CALLS)
        self.state.sublayer_calls[key] = call
        try:
            return run(*args, **kwargs)
        finally:
            self.state.sublayer_calls.pop(key, None)

    # --------------------------------------------------------------------- patches_replace["dit"]
    def block_replace(
        self,
        key: tuple[str, int],
        previous: Callable[[dict, dict], dict] | None = None,
    ) -> Callable[[dict, dict], dict]:
        """Replace for block ``key``; it calls ``previous`` (a replace set earlier by another node) if any."""
        kind = key[0]

        def replace(args: dict, extra: dict) -> dict:
            def original(block_args: dict) -> dict:
                return previous(block_args, extra) if previous is not None else extra["original_block"](block_args)

            span = None if self._unsupported(args) else self._image_span(kind, args)
            if span is None:
                return original(args)
            start, trailing = span  # the generated image tokens are img[:, start:start + n]
            n = self.image_tokens()
            img = args["img"][:, start : start + n]
            if self.protected.active():
                call, block = self.protected.refresh(key, img.shape[0])
                before = self.protected.kept_input(img) if block else None
                out = self.with_sublayers(key, dataclasses.replace(call, tokens=n), original, args)
                self.protected.store_block(key, before, out["img"][:, start : start + n])
                return out
            planned = self.plan_block(img, key)
            if planned is None:
                return original(args)
            plan = planned.plan
            # tokens before and after the image in the block's attention: [text, image, references] or, image first,
            # [image, text]
            if kind == "single_block":
                lead, tail = start, trailing
            elif self.image_first:
                lead, tail = 0, trailing + self._text_keys(args)
            else:
                lead, tail = self._text_keys(args), trailing
            if planned.mlp_only:  # attention runs on all tokens; the prompt reweighting of the stage still applies
                unmerged_args = self._with_key_bias(args, planned, lead, n, tail)
                call = SublayerCall(planned, self.merged_sublayers(planned), fuse=True, tokens=n)
                return self.with_sublayers(key, call, original, unmerged_args)
            merged = merge(img, plan, planned.mode)
            new_args = dict(args)
            if start or trailing:
                new_args["img"] = splice(args["img"], start, start + n, merged)
            else:  # the block gets ``merged`` itself, which in-place families overwrite
                new_args["img"], merged = merged, self.protected.kept_input(merged)
            if args.get("pe") is not None:
                new_args["pe"] = gather_positions(self.family, args["pe"], plan, tail)
            if args.get(self.mask_arg) is not None:
                new_args[self.mask_arg] = merged_mask(args[self.mask_arg], plan, lead, tail)
                if new_args[self.mask_arg] is None:
                    shape, length = list(args[self.mask_arg].shape), lead + plan.num_tokens + tail
                    self.planner.skip(
                        "attn_mask", f"an attention mask of shape {shape} over {length} tokens is not merged"
                    )
                    return original(args)
            order = frame_order(self.family, args, plan)
            if order is not None:  # one modulation per frame: the merged tokens frame by frame (Wan only: start 0)
                new_args["img"] = new_args["img"][:, order]
                new_args["pe"] = take_tokens(new_args["pe"], 1, order.expand(new_args["pe"].shape[0], -1))
            out = dict(original(self._with_key_bias(new_args, planned, lead, plan.num_out, tail, order)))
            if order is not None:
                out["img"] = out["img"][:, torch.argsort(order)]
            M = plan.num_out
            update = self.protected.blended(
                "block", key, unmerge(out["img"][:, start : start + M] - merged, plan), plan
            )
            out["img"] = splice(out["img"], start, start + M, img + update)
            return out

        return replace

    def _image_span(self, kind: str, args: dict) -> tuple[int, int] | None:
        """(start, trailing) of the generated image tokens in a block's ``img`` stream, from what the model says:
        double blocks (and every other replace family) see [image, references], Flux single blocks [text, image,
        references], the text length told by ``transformer_options["img_slice"]`` (newer ComfyUI) or by the
        call's text context; HunyuanVideo's image-first single blocks (``image_first``) [image, text]. Reference-image
        tokens (Flux Kontext, Flux 2, QwenImage-Edit) trail the image and pass through untouched; ``None`` (skipped
        with one warning) when the span cannot be known."""
        call = self.state.call
        if call is None:
            return None
        if call.leading_references:
            self.planner.skip(
                "leading_references",
                "reference latents placed before the image (HunyuanVideo / HunyuanImage ref_latent) are not merged yet",
            )
            return None
        start = 0
        options = args.get("transformer_options") or {}
        text_trails = kind == "single_block" and self.image_first  # cat(image, text)
        if kind == "single_block" and not text_trails:
            told = options.get("img_slice")
            start = told[0] if told else call.text_tokens
            if start is None:
                self.planner.skip("span", "the text length of a single block is unknown")
                return None
        trailing = args["img"].shape[1] - start - self.image_tokens()
        references = options.get("reference_image_num_tokens")
        if (
            trailing < 0
            or (references is not None and trailing != sum(references))
            or (references is None and trailing and self.family not in REFERENCE_FAMILIES and not text_trails)
        ):
            self.planner.skip(
                "span",
                f"a {kind} holds {args['img'].shape[1]} tokens where the latent gives "
                f"{self.image_tokens()} image tokens after {start} text tokens",
            )
            return None
        if trailing and call.reference_timestep_zero:
            self.planner.skip(
                "reference_timestep_zero",
                "reference images with their own timestep "
                "(index_timestep_zero) are not merged yet: their modulation ranges would move",
            )
            return None
        return start, trailing

    def _text_keys(self, args: dict) -> int:
        """Text tokens among the keys of a block's joint attention (0 where text comes in by cross-attention)."""
        return args["txt"].shape[1] if self.family in JOINT_FAMILIES and args.get("txt") is not None else 0

    def key_biases(
        self,
        planned: Planned,
        image: torch.Tensor,
        text_len: int,
        image_len: int,
        trailing: int = 0,
        order: torch.Tensor | None = None,
    ) -> dict[int, torch.Tensor] | None:
        """Key biases by key length (``attention_override.py``) for a block's attention over ``text_len`` text,
        ``image_len`` image and ``trailing`` pad or reference tokens (image first: the text); ``None`` when no bias
        applies (the defaults:
        nothing changes, bit for bit). ``image`` is the block's image input, for rows and device; ``order`` the
        frame-by-frame layout of the merged tokens, if any (``_frame_order``)."""
        proportional = self.config.proportional_attention and not planned.mlp_only
        text_keys = trailing if self.image_first else text_len
        text_scale = planned.text_scale if text_keys else 1.0
        if not proportional and text_scale == 1.0:
            return None
        counts = (
            multiplicity(planned.plan) if proportional else torch.ones(image.shape[0], image_len, device=image.device)
        )
        if order is not None:
            counts = counts[:, order]
        if self.image_first:  # [image, text]: the trailing tokens are the text
            joint = torch.cat(
                [key_bias(counts), counts.new_full((counts.shape[0], trailing), math.log(text_scale))], dim=1
            )
        else:
            joint = torch.nn.functional.pad(key_bias(counts, text_len, text_scale), (0, trailing))  # pads: bias 0
        biases = {joint.shape[1]: joint}
        if proportional and text_len:
            biases[image_len] = key_bias(counts)  # an image-only self-attention in the block (SD3.5 MMDiT-X)
        self.state.count(Count.BIASED_CALLS)
        return biases

    def _with_key_bias(
        self,
        args: dict,
        planned: Planned,
        text_len: int,
        image_len: int,
        trailing: int = 0,
        order: torch.Tensor | None = None,
    ) -> dict:
        """``args`` whose attention adds the key biases (none on the ``trailing`` reference tokens), or ``args``
        itself when none applies."""
        biases = self.key_biases(planned, args["img"], text_len, image_len, trailing, order)
        if biases is None:
            return args
        return {**args, "transformer_options": with_key_bias(args.get("transformer_options") or {}, biases)}

    def _unsupported(self, args: dict) -> bool:
        if self.family == "hunyuan" and (args.get("modulation_dims_img") or args.get("modulation_dims")):
            self.planner.skip(
                "modulation_ranges",
                "HunyuanVideo's per-token modulation ranges (image to video with a guiding frame) are not merged yet",
            )
            return True
        vec = args.get("vec")
        # e0 is [B, T_e, 6, C]; T_e > 1 is one timestep per frame (Wan 2.2 TI2V), merged frame by frame
        # (_frame_order); any other count would spread over tokens in a layout merging cannot keep
        if (
            self.family == "wan"
            and isinstance(vec, torch.Tensor)
            and vec.ndim == 4
            and vec.shape[1] > 1
            and (self.state.call is None or vec.shape[1] != self.token_grid(self.state.call.latent_shape)[0])
        ):
            self.planner.skip(
                "wan_modulation",
                f"Wan modulation with {vec.shape[1]} timesteps per sample does not match the latent's frames",
            )
            return True
        return False

    # ---------------------------------------------------------------- PixArt / Lumina 2 object patches
    def block_forward(self, previous: Callable[..., torch.Tensor], key: tuple[str, int]) -> Callable[..., Any]:
        """``blocks.<i>.forward`` (PixArt) or ``layers.<i>.forward`` (Lumina 2 / Z-Image) replacement, chained to
        ``previous`` (``dit_object_patches.py``)."""
        if self.family == "lumina":
            return lumina_layer_forward(self, previous, key)
        return pixart_block_forward(self, previous, key)

    def sublayer_forward(
        self,
        previous: Callable[..., torch.Tensor],
        key: tuple[str, int],
        name: str,
    ) -> Callable[..., torch.Tensor]:
        """``forward`` replacement of sub-layer ``name`` of block ``key`` (``sublayers.py``), chained to
        ``previous``; the block patch hands it the call's plan."""
        self.sublayers[key] = self.sublayers.get(key, frozenset()) | {name}
        return sublayer_forward(self.state, self.config, key, name, previous)


def install(patched: Any, model: Any, family: str, config: MergeConfig, state: MergeState) -> DiTMerger:
    """Install the block patches of DiT ``family`` on ``patched`` (a clone of ``model``), on the blocks of
    ``config.block_range``: block replaces chained to any earlier one, or object patches on blocks without a replace
    point, plus the sub-layer patches the config merges."""
    diffusion_model = model.model.diffusion_model
    switch_sigma = None
    if config.method is Method.SDTM:  # the stage switch, converted to a sigma once
        switch_sigma = float(model.get_model_object("model_sampling").percent_to_sigma(config.switch_percent))
    blocks = selected_blocks(block_keys(diffusion_model, family), config.block_range)
    merger = DiTMerger(
        config,
        state,
        family,
        spatial_patch(diffusion_model),
        blocks,
        switch_sigma,
        getattr(diffusion_model, "pad_tokens_multiple", None),
        image_first=image_first(diffusion_model),
    )
    existing = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    merged = merged_sublayer_names(family, config)
    for key in blocks:
        if family in BLOCK_MODULES:  # no replace point: an object patch on the block's forward
            name = f"diffusion_model.{BLOCK_MODULES[family]}.{key[1]}.forward"
            chain_object_patch(patched, name, lambda previous, key=key: merger.block_forward(previous, key))
        else:
            previous = existing.get(key)
            patched.set_model_patch_replace(chained(merger.block_replace(key, previous), previous), "dit", *key)
        for sublayer, path in sublayer_paths(family, key).items():
            if sublayer in merged:
                chain_object_patch(
                    patched,
                    f"diffusion_model.{path}.forward",
                    lambda previous, key=key, sublayer=sublayer: merger.sublayer_forward(previous, key, sublayer),
                )
    return merger

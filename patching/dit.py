"""Diffusion-transformer adapters (SD3/3.5, Flux 1 and 2, Chroma, QwenImage, PixArt alpha/sigma, Lumina 2, Z-Image,
Wan 2.1/2.2, HunyuanVideo): merge only the image tokens that enter a block, run the block (or its sub-layers) on
fewer tokens, and give every token its own input plus its group's unmerged update.

* SD3, Flux (and Chroma, which runs Flux's blocks with its own modulations), QwenImage, Wan and HunyuanVideo (Flux's
  blocks, text first or, in ComfyUI 0.3.x, image first: ``image_first``):
  ``patches_replace["dit"]`` block replaces that call the block they replaced (the ``original_block`` ComfyUI
  hands in, which is any earlier pack's replace, or the block itself). The block runs on the merged tokens; its
  update (output minus the merged input, copied first where blocks add to their input in place) is unmerged.
* Lumina 2 has no replace point: an object patch on ``layers.<i>.forward``, chained to the current one, merges
  the image span of ``cat(caption, image, pad)`` the same way.
* PixArt: an object patch on ``blocks.<i>.forward`` plans the call and hands the plan to object patches on the
  block's attention, cross-attention and MLP (``sublayers.py``), which run merged and return their output
  unmerged; the block itself adds each to the token's own residual, per sub-layer as the papers' code does.
* The SDTM detail stage merges only the MLP, through the same sub-layer patches.

Text tokens are never merged. Positions stay right: RoPE tables (Flux/QwenImage/HunyuanVideo ``pe``, Wan
``freqs``, Lumina ``freqs_cis``) are gathered for the kept tokens, which keep their own position (a destination
keeps its own); SD3 and PixArt add absolute embeddings before the blocks. Modulation is per sample and broadcasts
over any token count (Wan 2.2 TI2V: per frame, see ``_frame_order``). Wan and HunyuanVideo merge within frames,
so every frame keeps the same number of tokens.

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
from ..merging.plan import MergePlan, kept_order, merge, take_tokens, unmerge
from . import update_cache
from .attention_override import with_key_bias
from .config import Method
from .planner import Planned, TokenPlanner
from .state import StateHolder
from .sublayers import SublayerCall, sublayer_forward

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


# diffusion-model class (module and name: AuraFlow's class is also called MMDiT) -> adapter family
DIT_CLASSES = {
    "comfy.ldm.modules.diffusionmodules.mmdit.OpenAISignatureMMDITWrapper": "sd3",
    "comfy.ldm.modules.diffusionmodules.mmdit.MMDiT": "sd3",
    "comfy.ldm.flux.model.Flux": "flux",
    "comfy.ldm.chroma.model.Chroma": "flux",
    "comfy.ldm.qwen_image.model.QwenImageTransformer2DModel": "qwen",
    "comfy.ldm.pixart.pixartms.PixArtMS": "pixart",
    "comfy.ldm.lumina.model.NextDiT": "lumina",
    "comfy.ldm.wan.model.WanModel": "wan",
    "comfy.ldm.hunyuan_video.model.HunyuanVideo": "hunyuan",  # HunyuanVideo 1.0 / 1.5, HunyuanImage 2.1
}
# text and image tokens share one attention (text first; HunyuanVideo on releases whose blocks are flipped: image
# first, see ``image_first``)
JOINT_FAMILIES = {"sd3", "flux", "qwen", "lumina", "hunyuan"}
BLOCK_MODULES = {"pixart": "blocks", "lumina": "layers"}  # families without a replace point: object-patched blocks
PIXART_SUBLAYERS = frozenset({"attn", "cross_attn", "mlp"})
REFERENCE_FAMILIES = {"flux", "qwen"}  # reference-image tokens trail the image tokens (Kontext, Flux 2, Qwen-Edit)
IN_PLACE_FAMILIES = {"flux", "hunyuan"}  # blocks add their update to the input in place (Flux layers: img += ...)


def ignored_attention_options(config: MergeConfig, family: str) -> list[str]:
    """The attention options ``config`` sets that ``family`` cannot take: PixArt's attention gets no
    ``transformer_options`` (UNets are not covered yet), and a prompt factor cancels in cross-attention
    (Wan, PixArt: the prompt is the only thing such a softmax sees)."""
    names = []
    if config.proportional_attention and family in ("unet", "pixart"):
        names.append("proportional_attention")
    names += [
        name
        for name in ("prompt_scale_structure", "prompt_scale_detail")
        if getattr(config, name) != 1.0 and family not in JOINT_FAMILIES
    ]
    return names


def dit_family(diffusion_model: torch.nn.Module) -> str | None:
    """Which adapter handles this diffusion model, by its class."""
    cls = type(diffusion_model)
    return DIT_CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")


def block_keys(diffusion_model: torch.nn.Module, family: str) -> list[tuple[str, int]]:
    """Every block of the model in forward order, as ``patches_replace`` keys (PixArt: ("block", i))."""
    if family in ("flux", "hunyuan"):
        return [("double_block", i) for i in range(len(diffusion_model.double_blocks))] + [
            ("single_block", i) for i in range(len(diffusion_model.single_blocks))
        ]
    if family == "sd3":
        return [("double_block", i) for i in range(len(diffusion_model.joint_blocks))]
    if family == "wan":
        return [("double_block", i) for i in range(len(diffusion_model.blocks))]
    if family == "qwen":
        return [("double_block", i) for i in range(len(diffusion_model.transformer_blocks))]
    return [("block", i) for i in range(len(getattr(diffusion_model, BLOCK_MODULES[family])))]


def image_first(diffusion_model: torch.nn.Module) -> bool:
    """Whether the blocks' joint sequence puts the image before the text: HunyuanVideo in ComfyUI releases whose
    double blocks are ``flipped_img_txt`` (0.3.x: attention, RoPE table and mask over [image, text], single blocks
    over cat(image, text)); newer releases put the text first, as Flux does."""
    blocks = getattr(diffusion_model, "double_blocks", None) or ()
    return any(getattr(block, "flipped_img_txt", False) for block in blocks)


def selected_blocks(keys: list[tuple[str, int]], block_range: tuple[float, float]) -> list[tuple[str, int]]:
    """The blocks whose position i (of n) satisfies start <= i / n < end (IBTM merges PixArt's middle half)."""
    start, end = block_range
    return [key for i, key in enumerate(keys) if start <= i / len(keys) < end]


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

    def __deepcopy__(self, memo: dict) -> DiTMerger:
        return self

    def token_grid(self, latent_shape: tuple[int, ...] | list[int]) -> tuple[int, int, int]:
        """(frames, h, w) of the image-token grid of a latent of ``latent_shape``."""
        pt, ph, pw = self.patch
        frames = math.ceil(latent_shape[2] / pt) if len(latent_shape) == 5 else 1
        return frames, math.ceil(latent_shape[-2] / ph), math.ceil(latent_shape[-1] / pw)

    def token_grids(self, latent_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """Every grid the blocks of a call see (one for a DiT), for the call wrapper."""
        return [self.token_grid(latent_shape)]

    def _image_tokens(self) -> int:
        call = self.state.call
        return math.prod(self.token_grid(call.latent_shape)) if call is not None else 0

    def _plan(self, img: torch.Tensor, key: object) -> Planned | None:
        call = self.state.call
        if call is None:
            return None
        frames, h, w = self.token_grid(call.latent_shape)
        return self.planner.plan(img, h, w, key, frames=frames)

    # ------------------------------------------------------------- SDTM protected steps and cache
    def _protected(self) -> bool:
        """SDTM: every ``protect_every``-th step runs in full and refreshes the cache (decided per call)."""
        call = self.state.call
        return call is not None and call.protected

    def _refresh(self, key: tuple[str, int], rows: int) -> tuple[SublayerCall, bool]:
        """Protected call: what to cache until the next protected step, only what the merged steps in between
        blend with: the sub-layer outputs (handed to their patches in the returned call; the others' entries are
        dropped) and whether the whole-block update (the structure stage, or a whole-block detail stage)."""
        structure, detail = self.state.call.stages_ahead
        mlp_only = self.config.detail_mlp_only
        patched = self.sublayers.get(key, frozenset())
        if self.family == "pixart":  # every merged computation is a sub-layer
            stored = (patched if structure else frozenset()) | (
                (patched & {"mlp"} if mlp_only else patched) if detail else frozenset()
            )
            block = False
        else:
            stored = patched & {"mlp"} if detail and mlp_only else frozenset()
            block = structure or (detail and not mlp_only)
        for name in (patched - stored) | (frozenset() if block else {"block"}):  # before the call stores anew
            update_cache.drop(self.state, name, key, rows)
        return SublayerCall(None, stored=stored), block

    def _store_block(self, key: object, before: torch.Tensor | None, after: torch.Tensor) -> None:
        """A protected block call: keep its whole-block update when ``before`` (its input) is given."""
        self.state.count("protected_calls")
        if before is not None:
            update_cache.store(self.state, self.config, "block", key, after - before)

    def _blended(self, computation: str, key: object, update: torch.Tensor, plan: MergePlan) -> torch.Tensor:
        """SDTM: the unmerged ``update`` with its merged tokens blended with the cache; otherwise ``update``."""
        if self.config.method is not Method.SDTM:
            return update
        fused = update_cache.blend(self.state, self.config, computation, key, update, plan)
        if fused is None:
            return update
        self.state.count("fused_calls")
        return fused

    def _merged_sublayers(self, planned: Planned) -> frozenset[str]:
        """The sub-layers that run on the merged tokens in this call (empty: the whole block is merged)."""
        if planned.mlp_only:
            return frozenset({"mlp"})
        return merged_sublayer_names(self.family, self.config) if self.family == "pixart" else frozenset()

    def _with_sublayers(
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
            self.state.count("fused_calls")
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
            n = self._image_tokens()
            img = args["img"][:, start : start + n]
            if self._protected():
                call, block = self._refresh(key, img.shape[0])
                before = self._kept_input(img) if block else None
                out = self._with_sublayers(key, dataclasses.replace(call, tokens=n), original, args)
                self._store_block(key, before, out["img"][:, start : start + n])
                return out
            planned = self._plan(img, key)
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
                call = SublayerCall(planned, self._merged_sublayers(planned), fuse=True, tokens=n)
                return self._with_sublayers(key, call, original, unmerged_args)
            merged = merge(img, plan, planned.mode)
            new_args = dict(args)
            if start or trailing:
                new_args["img"] = splice(args["img"], start, start + n, merged)
            else:  # the block gets ``merged`` itself, which in-place families overwrite
                new_args["img"], merged = merged, self._kept_input(merged)
            if args.get("pe") is not None:
                new_args["pe"] = self._gather_positions(args["pe"], plan, tail)
            if args.get(self.mask_arg) is not None:
                new_args[self.mask_arg] = self._merged_mask(args[self.mask_arg], plan, lead, tail)
                if new_args[self.mask_arg] is None:
                    return original(args)
            order = self._frame_order(args, plan)
            if order is not None:  # one modulation per frame: the merged tokens frame by frame (Wan only: start 0)
                new_args["img"] = new_args["img"][:, order]
                new_args["pe"] = take_tokens(new_args["pe"], 1, order.expand(new_args["pe"].shape[0], -1))
            out = dict(original(self._with_key_bias(new_args, planned, lead, plan.num_out, tail, order)))
            if order is not None:
                out["img"] = out["img"][:, torch.argsort(order)]
            M = plan.num_out
            update = self._blended("block", key, unmerge(out["img"][:, start : start + M] - merged, plan), plan)
            out["img"] = splice(out["img"], start, start + M, img + update)
            return out

        return replace

    def _merged_mask(self, mask: torch.Tensor, plan: MergePlan, text_len: int, trailing: int) -> torch.Tensor | None:
        """The attention mask of a block's joint sequence [text, image, references] sliced for the merged image
        tokens: the key axis (and the query axis, where the mask has one) keeps the rows of the text, of the kept
        and destination tokens in merged order, and of the references. ``None`` (skipped with one warning) for a
        mask whose axes are not the sequence."""
        length = text_len + plan.num_tokens + trailing
        rows = plan.dst_idx.shape[0]
        device = plan.dst_idx.device
        index = torch.cat(
            [
                torch.arange(text_len, device=device).expand(rows, -1),
                text_len + kept_order(plan),
                torch.arange(text_len + plan.num_tokens, length, device=device).expand(rows, -1),
            ],
            dim=1,
        )
        if mask.ndim == 2:  # [Lq, Lk], as ComfyUI's attention reads a 2-D mask
            mask = mask.unsqueeze(0)
        axes = (mask.ndim - 1, mask.ndim - 2)  # [B, (H,) Lq, Lk]: keys, queries
        if (
            mask.shape[0] not in (1, rows)
            or mask.shape[axes[0]] != length
            or any(mask.shape[axis] not in (1, length) for axis in axes)
        ):
            self.planner.skip(
                "attn_mask", f"an attention mask of shape {list(mask.shape)} over {length} tokens is not merged"
            )
            return None
        for axis in axes:
            if mask.shape[axis] == length:
                mask = take_tokens(mask, axis, index)  # [B, ..., L, ...] -> [rows, ..., L', ...]
        return mask

    def _frame_order(self, args: dict, plan: MergePlan) -> torch.Tensor | None:
        """Wan 2.2 TI2V modulates each frame with its own timestep, spread over the frame's tokens by position
        (upstream ``repeat_e``: frame f owns tokens f x L/F to (f + 1) x L/F). The merged tokens are [kept of every
        frame, destinations of every frame]; this order [M] lays them out frame by frame ([kept, destinations] of
        frame 0, then of frame 1, ...), so each keeps its frame's modulation. ``None`` for one modulation per
        sample."""
        vec = args.get("vec")
        if self.family != "wan" or not (isinstance(vec, torch.Tensor) and vec.ndim == 4 and vec.shape[1] > 1):
            return None
        frames = vec.shape[1]  # checked against the grid in _unsupported
        kept, dst = plan.keep_idx.shape[1] // frames, plan.dst_idx.shape[1] // frames  # per frame: within frames
        frame = torch.arange(frames, device=plan.dst_idx.device).view(frames, 1)
        positions = torch.cat(
            [
                frame * kept + torch.arange(kept, device=frame.device),  # [F, U/F]
                plan.keep_idx.shape[1] + frame * dst + torch.arange(dst, device=frame.device),
            ],
            dim=1,
        )
        return positions.flatten()  # [F, (U + K)/F] -> [M]

    def _kept_input(self, img: torch.Tensor) -> torch.Tensor:
        """The image tokens entering an unmerged block call, as they are now: a copy where the block adds its
        update to its input in place (``IN_PLACE_FAMILIES``), since the SDTM cache needs the update."""
        return img.clone() if self.family in IN_PLACE_FAMILIES else img

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
        trailing = args["img"].shape[1] - start - self._image_tokens()
        references = options.get("reference_image_num_tokens")
        if (
            trailing < 0
            or (references is not None and trailing != sum(references))
            or (references is None and trailing and self.family not in REFERENCE_FAMILIES and not text_trails)
        ):
            self.planner.skip(
                "span",
                f"a {kind} holds {args['img'].shape[1]} tokens where the latent gives "
                f"{self._image_tokens()} image tokens after {start} text tokens",
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

    def _key_biases(
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
        self.state.count("biased_calls")
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
        biases = self._key_biases(planned, args["img"], text_len, image_len, trailing, order)
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

    def _gather_positions(self, pe: torch.Tensor, plan: MergePlan, trailing: int) -> torch.Tensor:
        """The RoPE table with the image rows gathered for the kept tokens; text and ``trailing`` reference rows
        stay as they are."""
        order = kept_order(plan)
        if self.family == "wan":  # freqs [1, L, 1, D/2, 2, 2]: image tokens only
            return splice(pe, 0, plan.num_tokens, take_tokens(pe[:, : plan.num_tokens], 1, order))
        # Flux / QwenImage pe [B, 1, L_txt + L_img + L_ref, D/2, 2, 2], text first: tokens on dim 2
        start = pe.shape[2] - plan.num_tokens - trailing
        image = take_tokens(pe[:, :, start : start + plan.num_tokens], 2, order)
        return splice(pe.transpose(1, 2), start, start + plan.num_tokens, image.transpose(1, 2)).transpose(1, 2)

    # ---------------------------------------------------------------- PixArt / Lumina 2 object patches
    def block_forward(self, previous: Callable[..., torch.Tensor], key: tuple[str, int]) -> Callable[..., Any]:
        """``blocks.<i>.forward`` (PixArt) or ``layers.<i>.forward`` (Lumina 2) replacement, chained to
        ``previous``. PixArt's block runs unchanged: its plan goes to the sub-layer patches (attention,
        cross-attention, MLP), each merged and unmerged on its own."""
        if self.family == "lumina":
            return self._lumina_forward(previous, key)

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self._protected():
                call = self._refresh(key, x.shape[0])[0]
                self.state.count("protected_calls")
                return self._with_sublayers(key, call, previous, x, *args, **kwargs)
            planned = self._plan(x, key)
            if planned is None:
                return previous(x, *args, **kwargs)
            call = SublayerCall(planned, self._merged_sublayers(planned), fuse=self.config.method is Method.SDTM)
            return self._with_sublayers(key, call, previous, x, *args, **kwargs)

        return forward

    def _lumina_forward(self, previous: Callable[..., torch.Tensor], key: tuple[str, int]) -> Callable[..., Any]:
        """A Lumina 2 / Z-Image layer sees ``x`` = cat(caption, image, pad) [B, T + n + p, C] and ``freqs_cis``
        [B, L, 1, D/2, 2, 2]: the image span of both is merged/gathered, caption and pad tokens pass untouched.
        Z-Image pads the image to a multiple of ``pad_multiple`` tokens; with reference images (Z-Image Omni) the
        references and their captions come before the image, and the layer modulates by token ranges
        (``timestep_zero_index``, passed through): the image and its pads stay the tail, whose range still covers
        exactly them. Its MLP runs on the whole sequence, so the SDTM detail stage (MLP only) leaves it unmerged."""

        def forward(
            x: torch.Tensor, x_mask: torch.Tensor | None, freqs_cis: torch.Tensor, *args: Any, **kwargs: Any
        ) -> torch.Tensor:
            def run(tokens: torch.Tensor, freqs: torch.Tensor, planned: Planned | None = None) -> torch.Tensor:
                """The layer on ``tokens`` (image span of ``len(tokens) - start - pads`` tokens), with the key biases
                of ``planned`` if any."""
                options = kwargs
                biases = (
                    None
                    if planned is None
                    else self._key_biases(planned, img, start, tokens.shape[1] - start - pads, trailing=pads)
                )
                if biases is not None:
                    options = {
                        **kwargs,
                        "transformer_options": with_key_bias(kwargs.get("transformer_options") or {}, biases),
                    }
                return previous(tokens, x_mask, freqs, *args, **options)

            if self.state.call is None or x_mask is not None:
                if x_mask is not None:
                    self.planner.skip("attn_mask", "blocks with an attention mask are not merged yet")
                return previous(x, x_mask, freqs_cis, *args, **kwargs)
            n = self._image_tokens()
            pads = (-n) % self.pad_multiple if self.pad_multiple else 0
            start = x.shape[1] - n - pads
            img = x[:, start : start + n]
            if self._protected():
                before = self._kept_input(img) if self._refresh(key, img.shape[0])[1] else None
                out = run(x, freqs_cis)
                self._store_block(key, before, out[:, start : start + n])
                return out
            planned = self._plan(img, key)
            if planned is None or planned.mlp_only:  # MLP only: attention in full, with the stage's prompt scale
                return run(x, freqs_cis, planned)
            plan, M = planned.plan, planned.plan.num_out
            merged_img = merge(img, plan, planned.mode)
            merged = splice(x, start, start + n, merged_img)
            freqs = splice(
                freqs_cis, start, start + n, take_tokens(freqs_cis[:, start : start + n], 1, kept_order(plan))
            )
            out = run(merged, freqs, planned)
            update = self._blended("block", key, unmerge(out[:, start : start + M] - merged_img, plan), plan)
            return splice(out, start, start + M, img + update)

        return forward

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


def splice(t: torch.Tensor, start: int, end: int, middle: torch.Tensor) -> torch.Tensor:
    """``t`` [B or 1, L, ...] with tokens ``start:end`` replaced by ``middle`` [B, M, ...] -> [B, L - (end - start)
    + M, ...]; a batch of 1 is broadcast."""
    outer = t.expand(middle.shape[0], *t.shape[1:])
    return torch.cat([outer[:, :start], middle, outer[:, end:]], dim=1)


def merged_sublayer_names(family: str, config: MergeConfig) -> frozenset[str]:
    """The sub-layers a patch on ``family`` can merge on their own (the rest of its blocks merge as a whole)."""
    if family == "pixart":
        return (
            PIXART_SUBLAYERS if config.method is Method.SDTM or config.merge_ff else frozenset({"attn", "cross_attn"})
        )
    return frozenset({"mlp"}) if config.method is Method.SDTM and config.detail_mlp_only else frozenset()

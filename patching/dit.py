"""Diffusion-transformer adapters (SD3/3.5, Flux, Chroma, QwenImage, PixArt alpha/sigma, Lumina 2, Wan 2.1): merge
only the image tokens that enter a block, run the block on fewer tokens, unmerge its image output.

* SD3, Flux (and Chroma, which runs Flux's blocks with its own modulations), QwenImage and Wan:
  ``patches_replace["dit"]`` block replaces that call the block they replaced (the ``original_block`` ComfyUI
  hands in, which is any earlier pack's replace, or the block itself).
* PixArt and Lumina 2 have no replace point: an object patch on ``blocks.<i>.forward`` / ``layers.<i>.forward``,
  chained to the current one. Lumina 2 layers see ``cat(caption, image, pad)``; only the image span is merged.

Text tokens are never merged. Positions stay right: RoPE tables (Flux/QwenImage ``pe``, Wan ``freqs``, Lumina
``freqs_cis``) are
gathered for the kept tokens, which keep their own position (a destination keeps its own); SD3 and
PixArt add absolute embeddings before the blocks. Modulation is per sample and broadcasts over any
token count. Wan merges within frames, so every frame keeps the same number of tokens.

Attention over merged tokens (proportional attention, SDTM prompt reweighting; ``merging/attention_bias.py``)
reaches the upstream attention as a per-key logit bias through the block's ``transformer_options``
(``attention_override.py``); PixArt's attention takes no options, so there the options are ignored.

The latent shape and the sampler's step information of the current call come from an APPLY_MODEL
wrapper (``state.call``); blocks only see tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..merging.attention_bias import key_bias, multiplicity
from ..merging.plan import MergePlan, kept_order, merge, take_tokens, unmerge
from .attention_override import with_key_bias
from .config import Method
from .planner import Planned, TokenPlanner, merged_forward
from .steps import step_position

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
}
JOINT_FAMILIES = {"sd3", "flux", "qwen", "lumina"}  # text and image tokens share one attention (text first)
BLOCK_MODULES = {"pixart": "blocks", "lumina": "layers"}  # families without a replace point: object-patched blocks
IN_PLACE_FAMILIES = {"flux"}  # blocks add their update to the input tensor in place (Flux layers: img += ...)


def ignored_attention_options(config: MergeConfig, family: str) -> list[str]:
    """The attention options ``config`` sets that ``family`` cannot take: PixArt's attention gets no
    ``transformer_options`` (UNets are not covered yet), and a prompt factor cancels in cross-attention
    (Wan, PixArt: the prompt is the only thing such a softmax sees)."""
    names = []
    if config.proportional_attention and family in ("unet", "pixart"):
        names.append("proportional_attention")
    names += [name for name in ("prompt_scale_structure", "prompt_scale_detail")
              if getattr(config, name) != 1.0 and family not in JOINT_FAMILIES]
    return names


def dit_family(diffusion_model: torch.nn.Module) -> str | None:
    """Which adapter handles this diffusion model, by its class."""
    cls = type(diffusion_model)
    return DIT_CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")


def block_keys(diffusion_model: torch.nn.Module, family: str) -> list[tuple[str, int]]:
    """Every block of the model in forward order, as ``patches_replace`` keys (PixArt: ("block", i))."""
    if family == "flux":
        return ([("double_block", i) for i in range(len(diffusion_model.double_blocks))]
                + [("single_block", i) for i in range(len(diffusion_model.single_blocks))])
    if family == "sd3":
        return [("double_block", i) for i in range(len(diffusion_model.joint_blocks))]
    if family == "wan":
        return [("double_block", i) for i in range(len(diffusion_model.blocks))]
    if family == "qwen":
        return [("double_block", i) for i in range(len(diffusion_model.transformer_blocks))]
    return [("block", i) for i in range(len(getattr(diffusion_model, BLOCK_MODULES[family])))]


def selected_blocks(keys: list[tuple[str, int]], block_range: tuple[float, float]) -> list[tuple[str, int]]:
    """The blocks whose position i (of n) satisfies start <= i / n < end (IBTM merges PixArt's middle half)."""
    start, end = block_range
    return [key for i, key in enumerate(keys) if start <= i / len(keys) < end]


class DiTMerger:
    """Block patches of one patched DiT; shares its :class:`MergeState` with the capture and the wrapper."""

    def __init__(self, config: MergeConfig, state: MergeState, family: str, patch: tuple[int, int, int],
                 switch_sigma: float | None = None, pad_multiple: int | None = None) -> None:
        self.config = config
        self.state = state
        self.family = family
        self.patch = patch
        self.pad_multiple = pad_multiple  # Lumina 2 / Z-Image: the image part is padded to a multiple of this
        self.planner = TokenPlanner(config, state, switch_sigma)
        self.mlp_keys: set[tuple[str, int]] = set()  # blocks whose MLP carries an SDTM detail-stage patch

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

    def _plan(self, img: torch.Tensor, key: object) -> Planned | None:
        call = self.state.call
        if call is None:
            return None
        frames, h, w = self._grid()
        return self.planner.plan(img, h, w, call, call["latent_shape"][-2:], key, frames=frames)

    # ------------------------------------------------------------- SDTM protected steps and cache
    def _cache_key(self, key: object, rows: int) -> tuple:
        return key, rows, tuple(self.state.call.get("cond_or_uncond") or ())

    def _protected(self) -> bool:
        """SDTM: every ``protect_every``-th step runs in full and refreshes the cache."""
        every = self.config.protect_every
        if self.config.method is not Method.SDTM or not every or self.state.call is None:
            return False
        return step_position(self.state.call)[0] % every == 0

    def _store(self, key: object, img_in: torch.Tensor, img_out: torch.Tensor) -> None:
        state = self.state
        state.counters["protected_calls"] += 1
        cache_key = self._cache_key(key, img_in.shape[0])
        update = (img_out - img_in).detach()
        state.block_cache.pop(cache_key, None)
        limit = self.config.cache_limit_mb * 2**20
        if state.cache_bytes + update.numel() * update.element_size() > limit:
            state.warn_once("cache_limit", f"tokenmerge: the SDTM cache reached cache_limit_mb="
                            f"{self.config.cache_limit_mb}; further blocks run without cache fusion")
            return
        state.block_cache[cache_key] = update
        state.counters["cache_peak_bytes"] = max(state.counters["cache_peak_bytes"], state.cache_bytes)

    def _fuse(self, key: object, img_in: torch.Tensor, img_out: torch.Tensor, plan: MergePlan) -> torch.Tensor:
        """Merged tokens take cache_weight x computed + (1 - cache_weight) x cached block update."""
        cached = self.state.block_cache.get(self._cache_key(key, img_in.shape[0]))
        if self.config.method is not Method.SDTM or cached is None or cached.shape != img_in.shape:
            return img_out
        weight = self.config.cache_weight
        merged = torch.cat([plan.src_idx, plan.dst_idx], dim=1).unsqueeze(-1).expand(-1, -1, img_in.shape[-1])
        fused = img_in.gather(1, merged) + weight * (img_out - img_in).gather(1, merged) \
            + (1 - weight) * cached.gather(1, merged)
        self.state.counters["fused_calls"] += 1
        return img_out.scatter(1, merged, fused)

    def _stage_mlp(self, key: tuple[str, int], planned: Planned) -> bool:
        """Hand the plan to the block's MLP patch (SDTM detail stage); ``False`` if the block has none."""
        if key not in self.mlp_keys:
            return False
        self.state.ff_plans[key] = planned
        return True

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
            if self._protected():
                before = self._kept_input(img)
                out = original(args)
                self._store(key, before, out["img"][:, txt_len:])
                return out
            planned = self._plan(img, key)
            if planned is None:
                return original(args)
            plan = planned.plan
            text_len = txt_len if kind == "single_block" else self._text_keys(args)
            if planned.mlp_only:  # attention runs on all tokens; the prompt reweighting of the stage still applies
                unmerged_args = self._with_key_bias(args, planned, text_len, img.shape[1])
                if not self._stage_mlp(key, planned):
                    return original(unmerged_args)
                before = self._kept_input(img)
                out = dict(original(unmerged_args))
                out["img"] = self._with_image(out["img"], txt_len,
                                              self._fuse(key, before, out["img"][:, txt_len:], plan))
                return out
            new_args = dict(args)
            new_args["img"] = self._with_image(args["img"], txt_len, merge(img, plan, planned.mode))
            if args.get("pe") is not None:
                new_args["pe"] = self._gather_positions(args["pe"], plan)
            out = dict(original(self._with_key_bias(new_args, planned, text_len, plan.num_out)))
            img_out = unmerge(out["img"][:, txt_len:], plan)
            out["img"] = self._with_image(out["img"], txt_len, self._fuse(key, img, img_out, plan))
            return out

        return replace

    def _kept_input(self, img: torch.Tensor) -> torch.Tensor:
        """The image tokens entering an unmerged block call, as they are now: a copy where the block adds its
        update to its input in place (``IN_PLACE_FAMILIES``), since the SDTM cache needs the update."""
        return img.clone() if self.family in IN_PLACE_FAMILIES else img

    def _text_keys(self, args: dict) -> int:
        """Text tokens among the keys of a block's joint attention (0 where text comes in by cross-attention)."""
        return args["txt"].shape[1] if self.family in JOINT_FAMILIES and args.get("txt") is not None else 0

    def _key_biases(self, planned: Planned, image: torch.Tensor, text_len: int, image_len: int,
                    trailing: int = 0) -> dict[int, torch.Tensor] | None:
        """Key biases by key length (``attention_override.py``) for a block's attention over ``text_len`` text,
        ``image_len`` image and ``trailing`` pad tokens; ``None`` when no bias applies (the defaults: nothing
        changes, bit for bit). ``image`` is the block's image input, for rows and device."""
        proportional = self.config.proportional_attention and not planned.mlp_only
        text_scale = planned.text_scale if text_len else 1.0
        if not proportional and text_scale == 1.0:
            return None
        counts = multiplicity(planned.plan) if proportional \
            else torch.ones(image.shape[0], image_len, device=image.device)
        joint = torch.nn.functional.pad(key_bias(counts, text_len, text_scale), (0, trailing))  # pads: bias 0
        biases = {joint.shape[1]: joint}
        if proportional and text_len:
            biases[image_len] = key_bias(counts)  # an image-only self-attention in the block (SD3.5 MMDiT-X)
        self.state.counters["biased_calls"] += 1
        return biases

    def _with_key_bias(self, args: dict, planned: Planned, text_len: int, image_len: int) -> dict:
        """``args`` whose attention adds the key biases, or ``args`` itself when none applies."""
        biases = self._key_biases(planned, args["img"], text_len, image_len)
        if biases is None:
            return args
        return {**args, "transformer_options": with_key_bias(args.get("transformer_options") or {}, biases)}

    @staticmethod
    def _with_image(tokens: torch.Tensor, txt_len: int, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens[:, :txt_len], image], dim=1) if txt_len else image

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
        # Flux / QwenImage pe [B, 1, L_txt + L_img, D/2, 2, 2], text first
        txt_len = pe.shape[2] - plan.num_tokens
        image = take_tokens(pe[:, :, txt_len:], 2, order)
        text = pe[:, :, :txt_len].expand(image.shape[0], *pe.shape[1:2], txt_len, *pe.shape[3:])
        return torch.cat([text, image], dim=2)

    # ---------------------------------------------------------------- PixArt / Lumina 2 object patches
    def block_forward(self, previous: Callable[..., torch.Tensor], key: tuple[str, int]) -> Callable[..., Any]:
        """``blocks.<i>.forward`` (PixArt) or ``layers.<i>.forward`` (Lumina 2) replacement, chained to
        ``previous``."""
        if self.family == "lumina":
            return self._lumina_forward(previous, key)

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self._protected():
                out = previous(x, *args, **kwargs)
                self._store(key, x, out)
                return out
            planned = self._plan(x, key)
            if planned is None:
                return previous(x, *args, **kwargs)
            if planned.mlp_only:
                if not self._stage_mlp(key, planned):
                    return previous(x, *args, **kwargs)
                return self._fuse(key, x, previous(x, *args, **kwargs), planned.plan)
            out = unmerge(previous(merge(x, planned.plan, planned.mode), *args, **kwargs), planned.plan)
            return self._fuse(key, x, out, planned.plan)

        return forward

    def _lumina_forward(self, previous: Callable[..., torch.Tensor], key: tuple[str, int]) -> Callable[..., Any]:
        """A Lumina 2 layer sees ``x`` = cat(caption, image, pad) [B, T + n + p, C] and ``freqs_cis``
        [B, L, 1, D/2, 2, 2]: the image span of both is merged/gathered, caption and pad tokens pass untouched.
        Its MLP runs on the whole sequence, so the SDTM detail stage (MLP only) leaves it unmerged."""

        def forward(x: torch.Tensor, x_mask: torch.Tensor | None, freqs_cis: torch.Tensor, *args: Any,
                    **kwargs: Any) -> torch.Tensor:
            def run(tokens: torch.Tensor, freqs: torch.Tensor, planned: Planned | None = None) -> torch.Tensor:
                """The layer on ``tokens`` (image span of ``len(tokens) - start - pads`` tokens), with the key biases
                of ``planned`` if any."""
                options = kwargs
                biases = None if planned is None else self._key_biases(
                    planned, img, start, tokens.shape[1] - start - pads, trailing=pads)
                if biases is not None:
                    options = {**kwargs, "transformer_options": with_key_bias(kwargs.get("transformer_options") or {},
                                                                              biases)}
                return previous(tokens, x_mask, freqs, *args, **options)

            if self.state.call is None or x_mask is not None:
                if x_mask is not None:
                    self.planner.skip("attn_mask", "blocks with an attention mask are not merged yet")
                return previous(x, x_mask, freqs_cis, *args, **kwargs)
            n = self._image_tokens()
            pads = (-n) % self.pad_multiple if self.pad_multiple else 0
            start = x.shape[1] - n - pads
            img = x[:, start:start + n]
            if self._protected():
                out = run(x, freqs_cis)
                self._store(key, img, out[:, start:start + n])
                return out
            planned = self._plan(img, key)
            if planned is None or planned.mlp_only:  # MLP only: attention in full, with the stage's prompt scale
                return run(x, freqs_cis, planned)
            plan, M = planned.plan, planned.plan.num_out
            merged = splice(x, start, start + n, merge(img, plan, planned.mode))
            freqs = splice(freqs_cis, start, start + n, take_tokens(freqs_cis[:, start:start + n], 1, kept_order(plan)))
            out = run(merged, freqs, planned)
            img_out = self._fuse(key, img, unmerge(out[:, start:start + M], plan), plan)
            return splice(out, start, start + M, img_out)

        return forward

    def mlp_forward(self, previous: Callable[[torch.Tensor], torch.Tensor], key: tuple[str, int],
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """MLP ``forward`` replacement (SDTM detail stage), chained to ``previous``."""
        return merged_forward(self.state, key, previous, "mlp_calls")


def splice(t: torch.Tensor, start: int, end: int, middle: torch.Tensor) -> torch.Tensor:
    """``t`` [B or 1, L, ...] with tokens ``start:end`` replaced by ``middle`` [B, M, ...] -> [B, L - (end - start)
    + M, ...]; a batch of 1 is broadcast."""
    outer = t.expand(middle.shape[0], *t.shape[1:])
    return torch.cat([outer[:, :start], middle, outer[:, end:]], dim=1)


# The image-token MLP of each family's block, for the SDTM detail stage (Flux single blocks fuse the MLP
# with attention in one linear layer and have none).
MLP_PATHS = {"sd3": "joint_blocks.{i}.x_block.mlp", "flux": "double_blocks.{i}.img_mlp",
             "qwen": "transformer_blocks.{i}.img_mlp",
             "pixart": "blocks.{i}.mlp", "wan": "blocks.{i}.ffn"}


def mlp_path(family: str, key: tuple[str, int]) -> str | None:
    if (family == "flux" and key[0] != "double_block") or family not in MLP_PATHS:
        return None
    return MLP_PATHS[family].format(i=key[1])

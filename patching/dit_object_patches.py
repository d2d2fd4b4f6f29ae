"""The DiT families without a block replace point, patched through object patches on their blocks' ``forward``
(chained to the patch found there): PixArt's blocks hand a plan to their sub-layer patches (``sublayers.py``),
Lumina 2 / Z-Image layers merge the image span of their sequence. Both keep every token's own input plus its
group's update, like the replace families in ``dit.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..merging.plan import kept_order, merge, splice, take_tokens, unmerge
from .attention_override import with_key_bias
from .state import Count
from .sublayers import SublayerCall

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from .dit import DiTMerger
    from .planner import Planned


def pixart_block_forward(
    merger: DiTMerger, previous: Callable[..., torch.Tensor], key: tuple[str, int]
) -> Callable[..., Any]:
    """``blocks.<i>.forward`` replacement of PixArt, chained to ``previous``. The block runs unchanged: its plan goes
    to the sub-layer patches (attention, cross-attention, MLP), each merged and unmerged on its own."""

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if merger.protected.active():
            call = merger.protected.refresh(key, x.shape[0])[0]
            merger.state.count(Count.PROTECTED_CALLS)
            return merger.with_sublayers(key, call, previous, x, *args, **kwargs)
        planned = merger.plan_block(x, key)
        if planned is None:
            return previous(x, *args, **kwargs)
        call = SublayerCall(planned, merger.merged_sublayers(planned), fuse=merger.planner.strategy.blends_cache)
        return merger.with_sublayers(key, call, previous, x, *args, **kwargs)

    return forward


def lumina_layer_forward(
    merger: DiTMerger, previous: Callable[..., torch.Tensor], key: tuple[str, int]
) -> Callable[..., Any]:
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
                else merger.key_biases(planned, img, start, tokens.shape[1] - start - pads, trailing=pads)
            )
            if biases is not None:
                options = {
                    **kwargs,
                    "transformer_options": with_key_bias(kwargs.get("transformer_options") or {}, biases),
                }
            return previous(tokens, x_mask, freqs, *args, **options)

        if merger.state.call is None or x_mask is not None:
            if x_mask is not None:
                merger.planner.skip("attn_mask", "blocks with an attention mask are not merged yet")
            return previous(x, x_mask, freqs_cis, *args, **kwargs)
        n = merger.image_tokens()
        pads = (-n) % merger.pad_multiple if merger.pad_multiple else 0
        start = x.shape[1] - n - pads
        img = x[:, start : start + n]
        if merger.protected.active():
            before = merger.protected.kept_input(img) if merger.protected.refresh(key, img.shape[0])[1] else None
            out = run(x, freqs_cis)
            merger.protected.store_block(key, before, out[:, start : start + n])
            return out
        planned = merger.plan_block(img, key)
        if planned is None or planned.mlp_only:  # MLP only: attention in full, with the stage's prompt scale
            return run(x, freqs_cis, planned)
        plan, M = planned.plan, planned.plan.num_out
        merged_img = merge(img, plan, planned.mode)
        merged = splice(x, start, start + n, merged_img)
        freqs = splice(freqs_cis, start, start + n, take_tokens(freqs_cis[:, start : start + n], 1, kept_order(plan)))
        out = run(merged, freqs, planned)
        update = merger.protected.blended("block", key, unmerge(out[:, start : start + M] - merged_img, plan), plan)
        return splice(out, start, start + M, img + update)

    return forward

"""Hand a per-key logit bias to the attention inside an upstream block, without copying its forward.

ComfyUI's attention functions (``comfy/ldm/modules/attention.py``, decorated with ``wrap_attn``) call
``transformer_options["optimized_attention_override"](func, *args, **kwargs)`` when the options a block passes
down hold one. A block replace gives its block a shallow copy of ``transformer_options`` holding a
:class:`KeyBiasOverride`: it adds the bias to the call's attention mask (:func:`add_key_bias`) and then calls
the override that was there before (another pack's), or the attention function itself. Nothing global is
patched, and the override lives for one block call.

Which attention calls of the block get a bias: those whose queries and keys are the block's merged token
sequence, recognised by length: ``text + image (+ pad)`` (joint attention; text first, Lumina 2's pad tokens
last) or ``image`` alone (image self-attention: Wan, the extra self-attention of SD3.5's MMDiT-X). Each
length is biased once per block call, in the order the block runs its attentions, so Wan's cross-attention
(after its self-attention) is never biased even when the prompt has as many tokens as the merged image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..merging.attention_bias import add_key_bias

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

OVERRIDE_KEY = "optimized_attention_override"


class KeyBiasOverride:
    """``optimized_attention_override`` that adds ``biases[L]`` [B, L] to the first attention over L keys."""

    def __init__(self, biases: dict[int, torch.Tensor], previous: Callable[..., torch.Tensor] | None) -> None:
        self.pending = dict(biases)  # key length -> bias, each used once
        self.previous = previous

    def __call__(self, func: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        q, k = args[0], args[1]
        # skip_reshape: [B, H, L, D]; otherwise [B, L, H * D]
        q_len, k_len = (q.shape[2], k.shape[2]) if kwargs.get("skip_reshape", False) else (q.shape[1], k.shape[1])
        bias = self.pending.get(k_len)
        if bias is not None and q_len == k_len and k.shape[0] == bias.shape[0]:
            del self.pending[k_len]
            if len(args) > 4:  # (q, k, v, heads, mask, ...)
                args = (*args[:4], add_key_bias(args[4], bias, q.dtype), *args[5:])
            else:
                kwargs["mask"] = add_key_bias(kwargs.get("mask"), bias, q.dtype)
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)


def with_key_bias(transformer_options: dict, biases: dict[int, torch.Tensor]) -> dict:
    """A copy of a block's ``transformer_options`` whose attention adds ``biases`` (chained to any override)."""
    options = dict(transformer_options)
    options[OVERRIDE_KEY] = KeyBiasOverride(biases, transformer_options.get(OVERRIDE_KEY))
    return options

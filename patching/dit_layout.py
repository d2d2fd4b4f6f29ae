"""What a DiT block's other inputs become when its image tokens are merged (``dit.py``): the RoPE table gathered
for the kept tokens, the attention mask sliced on its key and query axes, and, for Wan 2.2's per-frame modulation,
the frame-by-frame order of the merged tokens. Text and reference rows stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..merging.plan import kept_order, splice, take_tokens

if TYPE_CHECKING:
    from ..merging.plan import MergePlan


def gather_positions(family: str, pe: torch.Tensor, plan: MergePlan, trailing: int) -> torch.Tensor:
    """The RoPE table with the image rows gathered for the kept tokens; text and ``trailing`` reference rows
    stay as they are."""
    order = kept_order(plan)
    if family == "wan":  # freqs [1, L, 1, D/2, 2, 2]: image tokens only
        return splice(pe, 0, plan.num_tokens, take_tokens(pe[:, : plan.num_tokens], 1, order))
    # Flux / QwenImage pe [B, 1, L_txt + L_img + L_ref, D/2, 2, 2], text first: tokens on dim 2
    start = pe.shape[2] - plan.num_tokens - trailing
    image = take_tokens(pe[:, :, start : start + plan.num_tokens], 2, order)
    return splice(pe.transpose(1, 2), start, start + plan.num_tokens, image.transpose(1, 2)).transpose(1, 2)


def merged_mask(mask: torch.Tensor, plan: MergePlan, text_len: int, trailing: int) -> torch.Tensor | None:
    """The attention mask of a block's joint sequence [text, image, references] sliced for the merged image
    tokens: the key axis (and the query axis, where the mask has one) keeps the rows of the text, of the kept
    and destination tokens in merged order, and of the references. ``None`` for a
    mask whose axes are not the sequence (the caller skips the call)."""
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
        return None
    for axis in axes:
        if mask.shape[axis] == length:
            mask = take_tokens(mask, axis, index)  # [B, ..., L, ...] -> [rows, ..., L', ...]
    return mask


def frame_order(family: str, args: dict, plan: MergePlan) -> torch.Tensor | None:
    """Wan 2.2 TI2V modulates each frame with its own timestep, spread over the frame's tokens by position
    (upstream ``repeat_e``: frame f owns tokens f x L/F to (f + 1) x L/F). The merged tokens are [kept of every
    frame, destinations of every frame]; this order [M] lays them out frame by frame ([kept, destinations] of
    frame 0, then of frame 1, ...), so each keeps its frame's modulation. ``None`` for one modulation per
    sample."""
    vec = args.get("vec")
    if family != "wan" or not (isinstance(vec, torch.Tensor) and vec.ndim == 4 and vec.shape[1] > 1):
        return None
    frames = vec.shape[1]  # checked against the grid by the adapter (``DiTMerger._unsupported``)
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

"""Importance merging and spatial ToMe on the tiny DiTs (SD3, Flux, Chroma, QwenImage, PixArt-alpha, Lumina 2, Wan 2.1)
through the real ComfyUI."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import enter_call, sample, state_of

from devkit import tiny_models

DIT_FAMILIES = ["sd3", "flux", "chroma", "qwen_image", "pixart_alpha", "lumina2", "wan21"]


@pytest.fixture(scope="module")
def dits():
    return {name: tiny_models.build_patcher(name, seed=0) for name in DIT_FAMILIES}


@pytest.fixture(scope="module")
def nodes(pack):
    from tokenmerge.nodes import importance

    return importance


def sizes(family):
    side = max(family.min_side, 64)
    return side, side + 48  # non-square, and 80 px = 10 latent = 5 patches: not divisible by the 2x2 window


@pytest.mark.parametrize("name", DIT_FAMILIES)
@pytest.mark.parametrize("batch", [1, 2])
def test_importance_merging_runs_on_each_dit(nodes, dits, name, batch):
    family = tiny_models.FAMILIES[name]
    height, width = sizes(family)
    patched = nodes.TokenMergeImportance.execute(dits[name], 0.5)[0]
    first = sample(patched, family, steps=4, height=height, width=width, batch=batch, frames=9)
    counters = state_of(patched).counters.copy()
    again = sample(patched, family, steps=4, height=height, width=width, batch=batch, frames=9)
    plain = sample(dits[name], family, steps=4, height=height, width=width, batch=batch, frames=9)
    assert first.shape == family.empty_latent(height, width, batch, frames=9).shape
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, plain)
    assert counters["merged_calls"] > 0
    assert counters["importance_calls"] > 0
    assert counters["skipped"] == 0


@pytest.mark.parametrize("name", DIT_FAMILIES)
def test_spatial_tome_runs_on_each_dit(nodes, dits, name):
    family = tiny_models.FAMILIES[name]
    height, width = sizes(family)
    patched = nodes.TokenMergeSpatialToMe.execute(dits[name], 0.5, "auto", 2, 2, merge_cross_attention=False,
                                                  merge_feed_forward=False, seed=0)[0]
    out = sample(patched, family, steps=3, height=height, width=width)
    counters = state_of(patched).counters
    assert torch.isfinite(out).all()
    assert counters["tome_calls"] == counters["merged_calls"] > 0
    assert counters["tokens_out"] < counters["tokens_in"]


def test_flux_at_cfg_one_uses_the_x0_change_importance(nodes, dits, caplog):
    family = tiny_models.FAMILIES["flux"]
    patched = nodes.TokenMergeImportance.execute(dits["flux"], 0.5)[0]
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        out = sample(patched, family, steps=5, cfg=1.0)
    counters = state_of(patched).counters
    assert torch.isfinite(out).all()
    assert counters["fallback_maps"] == 4  # every step but the first compares with the previous x0
    assert counters["maps_captured"] == 0
    assert counters["importance_calls"] > 0
    assert len([r for r in caplog.records if "change of the x0 prediction" in r.getMessage()]) == 1


def test_wan_merges_within_frames_with_rope_gathered(pack, dits):
    """Twin tokens (same features, same RoPE entry) merged pairwise: the block output is unchanged, because
    self-attention is invariant to giving every key the same multiplicity."""
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    wan = dits["wan21"].model.diffusion_model
    block = wan.blocks[0]
    g = torch.Generator().manual_seed(0)
    frames, h, w, dim = 2, 2, 4, wan.dim
    unique = torch.randn(1, frames * h * w // 2, dim, generator=g)
    x = unique.repeat_interleave(2, dim=1)  # tokens (i, 2j) and (i, 2j+1) are twins, frame-major
    freqs = wan.rope_encode(frames, h * 2, w * 2, device=x.device, dtype=x.dtype)  # [1, L, 1, D/2, 2, 2]
    freqs = freqs[:, 0::2].repeat_interleave(2, dim=1)  # twins share their position entry
    e0 = torch.randn(1, 6, dim, generator=g) * 0.1
    context = torch.randn(1, 8, dim, generator=g)

    def run(args):
        return {"img": block(args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"], context_img_len=0)}

    args = {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": {}}
    state = MergeState()
    config = MergeConfig(Method.TOME, ratio=0.5, max_downsample=1, window=(1, 2), prune_until=0.0)
    merger = DiTMerger(config, state, "wan", (1, 2, 2))
    enter_call(merger, [1, 16, frames, h * 2, w * 2])
    merged = merger.block_replace(("double_block", 0))(args, {"original_block": run})["img"]
    assert state.counters["merged_calls"] == 1
    assert state.counters["tokens_out"] == frames * h * w // 2
    assert torch.allclose(merged, run(args)["img"], atol=1e-5)


def test_flux_positions_of_kept_tokens_are_gathered_after_the_text(pack):
    from tokenmerge.merging.plan import MergePlan, kept_order
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    txt, img = 3, 6
    pe = torch.arange(2 * (txt + img), dtype=torch.float32).view(2, 1, txt + img, 1, 1, 1)
    plan = MergePlan(keep_idx=torch.tensor([[5, 1], [0, 2]]), dst_idx=torch.tensor([[0, 3], [4, 5]]),
                     src_idx=torch.tensor([[2, 4], [1, 3]]), src_to_dst=torch.tensor([[0, 1], [0, 0]]), num_tokens=img)
    merger = DiTMerger(MergeConfig(Method.TOME, ratio=0.5, max_downsample=1), MergeState(), "flux", (1, 2, 2))
    gathered = merger._gather_positions(pe, plan).flatten(1)
    expected = torch.cat([pe[:, 0, :txt, 0, 0, 0], torch.stack([pe[b, 0, txt + kept_order(plan)[b], 0, 0, 0]
                                                                for b in range(2)])], dim=1)
    assert torch.equal(gathered, expected)


def test_a_foreign_block_replace_is_chained_not_clobbered(nodes, dits):
    family = tiny_models.FAMILIES["sd3"]
    base = dits["sd3"].clone()
    calls = []

    def foreign(args, extra):
        calls.append(args["img"].shape[1])
        return extra["original_block"](args)

    base.set_model_patch_replace(foreign, "dit", "double_block", 1)
    patched = nodes.TokenMergeImportance.execute(base, 0.5)[0]
    sample(patched, family, steps=2, height=64, width=64)
    assert calls  # the foreign replace still runs, and sees the merged token count
    assert min(calls) < 64
    assert state_of(patched).counters["merged_calls"] > 0


def test_text_tokens_are_never_merged(nodes, dits):
    """A hook on every SD3 joint block: the text stream keeps its token count in every merged block, and the
    first block sees exactly the text the unpatched model gives it, while its image stream is merged."""
    family = tiny_models.FAMILIES["sd3"]
    blocks = dits["sd3"].model.diffusion_model.joint_blocks
    seen: dict[str, list] = {"plain": [], "merged": []}
    run = "plain"

    def hook(module, args, kwargs):
        seen[run].append((args[0].clone(), args[1].shape[1]))  # (txt, image token count)

    handles = [block.register_forward_pre_hook(hook, with_kwargs=True) for block in blocks]
    try:
        sample(dits["sd3"], family, steps=1, height=64, width=64)
        run = "merged"
        patched = nodes.TokenMergeSpatialToMe.execute(dits["sd3"], 0.5, "auto", 2, 2, merge_cross_attention=False,
                                                      merge_feed_forward=False, seed=0, block_start=0.0)[0]
        sample(patched, family, steps=1, height=64, width=64)
    finally:
        for handle in handles:
            handle.remove()
    assert [img for _, img in seen["plain"]] == [16, 16]
    assert [img for _, img in seen["merged"]] == [8, 8]  # both blocks merged: 16 -> 8 image tokens
    assert all(txt.shape == seen["plain"][0][0].shape for txt, _ in seen["merged"])
    assert torch.equal(seen["merged"][0][0], seen["plain"][0][0])


def test_a_single_frame_video_latent_merges_by_importance(nodes, dits):
    """Regression: a [B, C, 1, H, W] latent gives [S, 1, H, W] maps, which were taken for a mismatched latent, so
    Wan image generation (one frame) merged by spatial ToMe only."""
    family = tiny_models.FAMILIES["wan21"]
    patched = nodes.TokenMergeImportance.execute(dits["wan21"], 0.5)[0]
    sample(patched, family, steps=4, frames=1)
    counters = state_of(patched).counters
    assert counters["importance_calls"] > 0
    assert counters["skipped"] == 0


def test_lumina_twin_tokens_between_caption_and_pads_give_the_unmerged_layer_output(pack, dits):
    """A Lumina 2 layer sees cat(caption, image, pad): twin image tokens (same features, same RoPE ids) merged
    with proportional attention leave every output token, caption and pads included, as the unmerged layer gives."""
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    model = dits["lumina2"].model.diffusion_model
    layer = model.layers[0]
    g = torch.Generator().manual_seed(0)
    caption, h, w, pads, dim = 5, 2, 4, 2, model.dim  # 8 image tokens padded to a multiple of 5
    img = torch.randn(1, h * w // 2, dim, generator=g).repeat_interleave(2, dim=1)  # twins side by side
    x = torch.cat([torch.randn(1, caption, dim, generator=g), img, torch.randn(1, pads, dim, generator=g)], dim=1)
    ids = torch.zeros(1, caption + h * w + pads, 3)
    ids[0, :caption, 0] = torch.arange(caption) + 1.0
    image_ids = ids[0, caption:caption + h * w].view(h, w, 3)  # pads keep ids 0, as Lumina's padding does
    image_ids[..., 0] = caption + 1.0
    image_ids[..., 1] = torch.arange(h).view(h, 1)
    image_ids[..., 2] = (torch.arange(w) // 2).view(1, w)  # twins share their column id
    freqs = model.rope_embedder(ids).movedim(1, 2)  # [1, L, 1, D/2, 2, 2]
    adaln = torch.randn(1, min(dim, 1024), generator=g)
    state = MergeState()
    config = MergeConfig(Method.TOME, ratio=0.5, max_downsample=1, window=(1, 2), prune_until=0.0,
                         proportional_attention=True)
    merger = DiTMerger(config, state, "lumina", (1, 2, 2), pad_multiple=5)
    enter_call(merger, [1, 16, h * 2, w * 2])
    forward = merger.block_forward(layer.forward, ("block", 0))
    merged = forward(x, None, freqs, adaln, transformer_options={})
    assert state.counters["merged_calls"] == 1
    assert state.counters["biased_calls"] == 1
    assert torch.allclose(merged, layer(x, None, freqs, adaln, transformer_options={}), atol=1e-5)

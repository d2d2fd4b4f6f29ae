"""Importance merging and spatial ToMe on the tiny DiTs (SD3, Flux, Chroma, Flux 2, QwenImage, PixArt-alpha, Lumina 2,
Z-Image, Wan 2.1) through the real ComfyUI."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from conftest import enter_call, sample, state_of

from devkit import tiny_models

DIT_FAMILIES = [
    "sd3",
    "flux",
    "chroma",
    "flux2",
    "qwen_image",
    "pixart_alpha",
    "lumina2",
    "zimage",
    "wan21",
    "hunyuan_video",
]


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
    patched = nodes.TokenMergeSpatialToMe.execute(
        dits[name], 0.5, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]
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


@pytest.mark.parametrize(("per_frame", "ratio"), [(False, 0.5), (True, 0.5), (False, 0.25), (True, 0.25)])
def test_wan_merges_within_frames_with_rope_gathered(pack, dits, per_frame, ratio):
    """Twin tokens (same features, same RoPE entry) merged pairwise: the block output is unchanged, because
    self-attention is invariant to giving every key the same multiplicity (proportional attention where only some
    pairs merge). With one modulation per frame (Wan 2.2 TI2V), each merged token keeps its own frame's
    modulation, kept and merged tokens alike."""
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
    e0 = torch.randn(1, *((frames,) if per_frame else ()), 6, dim, generator=g) * 0.1  # [1, (F,) 6, C]
    context = torch.randn(1, 8, dim, generator=g)

    def run(args):
        return {
            "img": block(
                args["img"],
                context=args["txt"],
                e=args["vec"],
                freqs=args["pe"],
                context_img_len=0,
                transformer_options=args["transformer_options"],
            )
        }

    args = {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": {}}
    state = MergeState()
    config = MergeConfig(
        Method.TOME, ratio=ratio, max_downsample=1, window=(1, 2), prune_until=0.0, proportional_attention=ratio < 0.5
    )
    merger = DiTMerger(config, state, "wan", (1, 2, 2))
    enter_call(merger, [1, 16, frames, h * 2, w * 2])
    merged = merger.block_replace(("double_block", 0))(args, {"original_block": run})["img"]
    assert state.counters["merged_calls"] == 1
    assert state.counters["tokens_out"] == frames * h * w - int(h * w * ratio) * frames
    assert torch.allclose(merged, run(args)["img"], atol=1e-5)


@pytest.mark.parametrize("references", [0, 2])
def test_flux_positions_of_kept_tokens_are_gathered_after_the_text(pack, references):
    """pe rows are [text, image, reference images]: the image rows are gathered for the kept tokens, the text and
    reference rows stay where they are."""
    from tokenmerge.merging.plan import MergePlan, kept_order
    from tokenmerge.patching.dit_layout import gather_positions

    txt, img = 3, 6
    total = txt + img + references
    pe = torch.arange(2 * total, dtype=torch.float32).view(2, 1, total, 1, 1, 1)
    plan = MergePlan(
        keep_idx=torch.tensor([[5, 1], [0, 2]]),
        dst_idx=torch.tensor([[0, 3], [4, 5]]),
        src_idx=torch.tensor([[2, 4], [1, 3]]),
        src_to_dst=torch.tensor([[0, 1], [0, 0]]),
        num_tokens=img,
    )
    gathered = gather_positions("flux", pe, plan, references).flatten(1)
    expected = torch.cat(
        [
            pe[:, 0, :txt, 0, 0, 0],
            torch.stack([pe[b, 0, txt + kept_order(plan)[b], 0, 0, 0] for b in range(2)]),
            pe[:, 0, txt + img :, 0, 0, 0],
        ],
        dim=1,
    )
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


def text_and_image_inputs(name: str, model) -> list[tuple[torch.nn.Module, Callable]]:
    """(module, reader) pairs: the module sees a block's input, and the reader returns its (text tokens, image token
    count) from the hook's (args, kwargs). SD3 joint blocks and Flux 2 double blocks take the streams apart; Flux 2
    single blocks see cat(text, image); a Z-Image layer's first norm sees cat(caption, image, pad)."""
    if name == "sd3":
        return [(block, lambda args, _kwargs: (args[0], args[1].shape[1])) for block in model.joint_blocks]
    if name == "flux2":
        text = 512  # model_base.Flux2 pads the prompt to 512 tokens
        double = [
            (block, lambda _args, kwargs: (kwargs["txt"], kwargs["img"].shape[1])) for block in model.double_blocks
        ]
        single = [
            (block, lambda args, _kwargs: (args[0][:, :text], args[0].shape[1] - text)) for block in model.single_blocks
        ]
        return double + single
    caption = 16 + (-16) % model.pad_tokens_multiple  # the prompt's 16 tokens and their pads
    pads = (-16) % model.pad_tokens_multiple  # 4 x 4 image tokens padded, as unmerged
    return [
        (layer.attention_norm1, lambda args, _kwargs: (args[0][:, :caption], args[0].shape[1] - caption - pads))
        for layer in model.layers
    ]


@pytest.mark.parametrize("name", ["sd3", "flux2", "zimage"])
def test_text_tokens_are_never_merged(nodes, dits, name):
    """A hook on every block: the text keeps its token count in every merged block, and the first block sees
    exactly the text the unpatched model gives it, while the image is merged (16 -> 8 tokens in both blocks)."""
    family = tiny_models.FAMILIES[name]
    seen: dict[str, list] = {"plain": [], "merged": []}
    run = "plain"

    def hook(read):
        def record(_module, args, kwargs):
            text, image = read(args, kwargs)
            seen[run].append((text.clone(), image))

        return record

    handles = [
        module.register_forward_pre_hook(hook(read), with_kwargs=True)
        for module, read in text_and_image_inputs(name, dits[name].model.diffusion_model)
    ]
    try:
        sample(dits[name], family, steps=1, height=64, width=64)
        run = "merged"
        patched = nodes.TokenMergeSpatialToMe.execute(
            dits[name],
            0.5,
            "auto",
            2,
            2,
            merge_cross_attention=False,
            merge_feed_forward=False,
            seed=0,
            block_start=0.0,
        )[0]
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


@pytest.mark.parametrize("name", ["lumina2", "zimage"])
def test_lumina_twin_tokens_between_caption_and_pads_give_the_unmerged_layer_output(pack, dits, name):
    """A Lumina 2 / Z-Image layer sees cat(caption, image, pad): twin image tokens (same features, same RoPE ids)
    merged with proportional attention leave every output token, caption and pads included, as the unmerged layer
    gives (Z-Image: its own modulation, and the image padded to its model's multiple of 32 tokens)."""
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    model = dits[name].model.diffusion_model
    layer = model.layers[0]
    g = torch.Generator().manual_seed(0)
    multiple = model.pad_tokens_multiple or 5  # Lumina 2 pads nothing: pad 8 image tokens to a multiple of 5
    caption, h, w, dim = 5, 2, 4, model.dim
    pads = (-h * w) % multiple
    img = torch.randn(1, h * w // 2, dim, generator=g).repeat_interleave(2, dim=1)  # twins side by side
    x = torch.cat([torch.randn(1, caption, dim, generator=g), img, torch.randn(1, pads, dim, generator=g)], dim=1)
    ids = torch.zeros(1, caption + h * w + pads, 3)
    ids[0, :caption, 0] = torch.arange(caption) + 1.0
    image_ids = ids[0, caption : caption + h * w].view(h, w, 3)  # pads keep ids 0, as Lumina's padding does
    image_ids[..., 0] = caption + 1.0
    image_ids[..., 1] = torch.arange(h).view(h, 1)
    image_ids[..., 2] = (torch.arange(w) // 2).view(1, w)  # twins share their column id
    freqs = model.rope_embedder(ids).movedim(1, 2)  # [1, L, 1, D/2, 2, 2]
    adaln = torch.randn(1, layer.adaLN_modulation[-1].in_features, generator=g)  # Z-Image: 256 wide
    state = MergeState()
    config = MergeConfig(
        Method.TOME, ratio=0.5, max_downsample=1, window=(1, 2), prune_until=0.0, proportional_attention=True
    )
    merger = DiTMerger(config, state, "lumina", (1, 2, 2), pad_multiple=multiple)
    enter_call(merger, [1, 16, h * 2, w * 2])
    forward = merger.block_forward(layer.forward, ("block", 0))
    merged = forward(x, None, freqs, adaln, transformer_options={})
    assert state.counters["merged_calls"] == 1
    assert state.counters["biased_calls"] == 1
    assert merged.shape == x.shape
    assert torch.allclose(merged, layer(x, None, freqs, adaln, transformer_options={}), atol=1e-5)


def test_wan22_two_experts_each_patched_in_a_two_sampler_run(nodes, caplog):
    """Wan 2.2 14B runs as two experts: the high-noise model samples the first steps (KSamplerAdvanced returning
    its leftover noise), the low-noise model the rest. Each expert has its own merging node and its own state:
    both merge in their own steps, without warnings, and the second sampler's state starts from its own run."""
    family = tiny_models.FAMILIES["wan21"]
    high = nodes.TokenMergeImportance.execute(tiny_models.build_patcher("wan21", seed=1), 0.5)[0]
    low = nodes.TokenMergeImportance.execute(tiny_models.build_patcher("wan21", seed=2), 0.5)[0]
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        first = sample(high, family, steps=4, start_step=0, last_step=2, force_full_denoise=False, frames=9)
        second = sample(
            low, family, steps=4, start_step=2, last_step=4, latent=first, disable_noise=True, force_full_denoise=True
        )
    assert torch.isfinite(second).all()
    assert not [r for r in caplog.records if r.name.startswith("tokenmerge")]
    for expert in (high, low):
        counters = state_of(expert).counters
        assert counters["merged_calls"] > 0
        assert counters["skipped"] == 0
    assert state_of(high) is not state_of(low)


def test_zimage_twin_tokens_after_a_reference_image_keep_their_modulation(pack, dits):
    """Z-Image with reference images (Omni) lays a layer's tokens out as cat(captions, reference image, image, pad)
    and modulates them by token range (``timestep_zero_index``): the reference with the zero timestep's row of
    ``adaln``, captions and image with the real one. The image and its pads are the tail, so the ranges still hold
    after merging: twins merged with proportional attention give the unmerged layer output."""
    from devkit import EXPECTED_COMFYUI, ZIMAGE_REFERENCE_RELEASES
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    if EXPECTED_COMFYUI not in ZIMAGE_REFERENCE_RELEASES:
        pytest.skip(f"ComfyUI {EXPECTED_COMFYUI}'s Z-Image takes no reference images (Z-Image Omni came later)")
    model = dits["zimage"].model.diffusion_model
    layer = model.layers[0]
    g = torch.Generator().manual_seed(1)
    caption, reference, h, w, dim = 5, 6, 2, 4, model.dim
    pads = (-h * w) % model.pad_tokens_multiple
    start = caption + reference
    img = torch.randn(1, h * w // 2, dim, generator=g).repeat_interleave(2, dim=1)  # twins side by side
    x = torch.cat([torch.randn(1, start, dim, generator=g), img, torch.randn(1, pads, dim, generator=g)], dim=1)
    ids = torch.zeros(1, x.shape[1], 3)
    ids[0, :caption, 0] = torch.arange(caption) + 1.0
    ids[0, caption:start, 0] = caption + 1.0
    ids[0, caption:start, 1] = torch.arange(reference) // 3
    ids[0, caption:start, 2] = torch.arange(reference) % 3
    image_ids = ids[0, start : start + h * w].view(h, w, 3)  # pads keep ids 0
    image_ids[..., 0] = caption + 2.0
    image_ids[..., 1] = torch.arange(h).view(h, 1)
    image_ids[..., 2] = (torch.arange(w) // 2).view(1, w)  # twins share their column id
    freqs = model.rope_embedder(ids).movedim(1, 2)
    adaln = torch.randn(2, layer.adaLN_modulation[-1].in_features, generator=g)  # [zero timestep, real timestep]
    ranges = [(start, x.shape[1]), (0, caption)]  # what patchify_and_embed hands the layers
    state = MergeState()
    config = MergeConfig(
        Method.TOME, ratio=0.5, max_downsample=1, window=(1, 2), prune_until=0.0, proportional_attention=True
    )
    merger = DiTMerger(config, state, "lumina", (1, 2, 2), pad_multiple=model.pad_tokens_multiple)
    enter_call(merger, [1, 16, h * 2, w * 2])
    forward = merger.block_forward(layer.forward, ("block", 0))
    merged = forward(x.clone(), None, freqs, adaln, timestep_zero_index=ranges, transformer_options={})
    plain = layer(x.clone(), None, freqs, adaln, timestep_zero_index=ranges, transformer_options={})
    assert state.counters["merged_calls"] == 1
    assert state.counters["tokens_out"] == h * w // 2
    assert torch.allclose(merged, plain, atol=1e-5)
    assert not torch.allclose(plain, layer(x.clone(), None, freqs, adaln[1:], transformer_options={}), atol=1e-3)


def with_reference(conditioning: list, reference: torch.Tensor, method: str | None = None) -> list:
    """``conditioning`` carrying a reference latent, as ReferenceLatent (Flux Kontext, Flux 2, QwenImage-Edit)
    and FluxKontextMultiReferenceLatentMethod set it."""
    extras = {**conditioning[0][1], "reference_latents": [reference]}
    if method is not None:
        extras["reference_latents_method"] = method
    return [[conditioning[0][0], extras]]


@pytest.mark.parametrize(
    ("name", "method"),
    [("flux", "importance"), ("flux", "sdtm"), ("flux2", "sdtm"), ("qwen_image", "importance"), ("qwen_image", "sdtm")],
)
def test_reference_latents_merge_the_image_and_pass_the_references_through(nodes, dits, name, method, caplog):
    """Image editing with a reference latent (another size than the generated image): every selected block of
    every call merges the generated image tokens or, on SDTM's protected steps, runs in full (none is skipped),
    with no warning; the SDTM detail stage merges the MLP with the references trailing; deterministic and finite.
    That the reference tokens pass through untouched is checked by hand in test_dit_residual.py."""
    from tokenmerge.nodes import sdtm
    from tokenmerge.patching.dit_families import block_keys, dit_family, selected_blocks

    family = tiny_models.FAMILIES[name]
    height, width = sizes(family)
    reference = torch.randn(family.empty_latent(64, 96).shape, generator=torch.Generator().manual_seed(5))
    run = {
        "height": height,
        "width": width,
        "positive": with_reference(family.conditioning(1), reference),
        "negative": with_reference(family.conditioning(2), reference),
    }
    base = dits[name]
    node, ratio, steps = (sdtm.TokenMergeSDTM, 0.4, 6) if method == "sdtm" else (nodes.TokenMergeImportance, 0.5, 3)
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        patched = node.execute(base, ratio)[0]
        merged = sample(patched, family, steps=steps, **run)
        counters = state_of(patched).counters
        again = sample(node.execute(base, ratio)[0], family, steps=steps, **run)
    diffusion_model = base.model.diffusion_model
    blocks = selected_blocks(
        block_keys(diffusion_model, dit_family(diffusion_model)), (0.0, 1.0) if method == "sdtm" else (0.25, 0.75)
    )
    assert not [r for r in caplog.records if r.name.startswith("tokenmerge")], caplog.records
    assert counters["skipped"] == 0
    assert counters["merged_calls"] + counters["protected_calls"] == steps * len(blocks)
    if method == "sdtm":
        assert counters["protected_calls"] > 0
        assert counters["detail_calls"] > 0
        assert counters["mlp_calls"] > 0  # the image MLP merged with the reference tokens after the image
    assert torch.equal(merged, again)
    assert merged.shape == family.empty_latent(height, width).shape
    assert torch.isfinite(merged).all()


def test_references_with_their_own_timestep_run_unmerged_with_one_warning(nodes, dits, caplog):
    """QwenImage-Edit 2511's index_timestep_zero (on Flux with a guidance embedding ComfyUI 0.33 itself cannot run
    it): the pack skips by the method's name, on 0.3.75 too, whose QwenImage predates the method."""
    family = tiny_models.FAMILIES["qwen_image"]
    reference = torch.randn(family.empty_latent(64, 64).shape, generator=torch.Generator().manual_seed(5))
    run = {
        "positive": with_reference(family.conditioning(1), reference, "index_timestep_zero"),
        "negative": with_reference(family.conditioning(2), reference, "index_timestep_zero"),
    }
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        patched = nodes.TokenMergeImportance.execute(dits["qwen_image"], 0.5)[0]
        merged = sample(patched, family, **run)
    assert torch.equal(merged, sample(dits["qwen_image"], family, **run))
    warnings = [r.getMessage() for r in caplog.records if "index_timestep_zero" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("extras", "reason"),
    [
        ({"ref_latent": torch.zeros(1, 16, 1, 8, 8)}, "reference latents placed before the image"),
        ({"guiding_frame_index": 0}, "per-token modulation ranges"),
    ],
    ids=["reference latent (custom)", "guiding frame (v2 replace)"],
)
def test_hunyuan_video_image_to_video_conditionings_run_unmerged_with_one_warning(nodes, dits, caplog, extras, reason):
    """HunyuanImageToVideo's "custom" guidance puts a reference latent before the image tokens, and its "v2
    (replace)" guidance modulates the first frame's tokens by range: neither is merged yet. The node sets it on the
    positive only (the negative's calls still merge); at cfg 1 every call carries it, and the run is the unpatched
    run bit for bit, with one warning that says why."""
    family = tiny_models.FAMILIES["hunyuan_video"]
    [[context, cond]] = family.conditioning(1)
    positive = [[context, {**cond, **extras}]]
    patched = nodes.TokenMergeImportance.execute(dits["hunyuan_video"], 0.5)[0]
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        merged = sample(patched, family, steps=3, cfg=1.0, positive=positive, frames=5)
    plain = sample(dits["hunyuan_video"], family, steps=3, cfg=1.0, positive=positive, frames=5)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("tokenmerge")]
    assert len(warnings) == 1
    assert reason in warnings[0]
    counters = state_of(patched).counters
    assert counters["skipped"] > 0
    assert torch.equal(merged, plain)

"""Proportional attention and SDTM prompt reweighting: the pure bias, its way into the upstream attention, and
their effect on the tiny joint-attention DiTs (Flux, Flux 2, SD3, ...) sampled through the real ComfyUI."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import enter_call, sample, sdtm_advanced, state_of

from devkit import tiny_models


@pytest.fixture(scope="module")
def flux():
    return tiny_models.build_patcher("flux", seed=0)


def test_the_override_biases_each_token_sequence_once_and_chains(pack):
    """Wan-like block: self-attention over the merged image, then cross-attention over as many text tokens.
    Only the first is biased; a foreign override already in the options still runs for both."""
    from comfy.ldm.modules import attention

    from tokenmerge.patching.attention_override import with_key_bias

    g = torch.Generator().manual_seed(0)
    q, k, v, context = (torch.randn(1, 4, 8, generator=g) for _ in range(4))
    seen = []

    def foreign(func, *args, **kwargs):
        seen.append(kwargs.get("mask"))
        return func(*args, **kwargs)

    bias = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])
    options = with_key_bias({"optimized_attention_override": foreign}, {4: bias})
    biased = attention.attention_basic(q, k, v, heads=2, transformer_options=options)
    cross = attention.attention_basic(q, context, context, heads=2, transformer_options=options)
    assert seen[0] is not None
    assert seen[1] is None  # the cross-attention of the same block is left alone
    assert torch.equal(cross, attention.attention_basic(q, context, context, heads=2))
    # the biased attention equals an unbiased one where key 1 appears three times
    k3, v3 = (torch.cat([t, t[:, 1:2], t[:, 1:2]], dim=1) for t in (k, v))
    assert torch.allclose(biased, attention.attention_basic(q, k3, v3, heads=2), atol=1e-6)


def flux_twins(patcher):
    """Flux / Flux 2 inputs whose image tokens come in exact twins: tokens (i, 2j) and (i, 2j + 1) have the same
    features and the same position ids, so the same RoPE rows. Grid 2 x 4, 5 text tokens; Flux 2 numbers the text
    tokens on its fourth RoPE axis (as its forward does) and hands every block the model's global modulation."""
    model = patcher.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    h, w, txt_len, dim, axes = 2, 4, 5, model.hidden_size, len(model.params.axes_dim)
    img = torch.randn(1, h * w // 2, dim, generator=g).repeat_interleave(2, dim=1)  # [1, 8, C], twins side by side
    txt = torch.randn(1, txt_len, dim, generator=g)
    img_ids = torch.zeros(h, w, axes)
    img_ids[..., 1] = torch.arange(h).view(h, 1)
    img_ids[..., 2] = (torch.arange(w) // 2).view(1, w)  # twins share their column id
    txt_ids = torch.zeros(1, txt_len, axes)
    if axes == 4:
        txt_ids[..., 3] = torch.arange(txt_len)
    pe = model.pe_embedder(torch.cat([txt_ids, img_ids.view(1, h * w, axes)], dim=1))  # [1, 1, txt + img, D/2, 2, 2]
    vec = torch.randn(1, dim, generator=g) * 0.5
    if model.params.global_modulation:
        return (
            model,
            img,
            txt,
            (model.double_stream_modulation_img(vec), model.double_stream_modulation_txt(vec)),
            model.single_stream_modulation(vec)[0],
            pe,
        )
    return model, img, txt, vec, vec, pe


def twin_merger(proportional, patch_size, family="flux", frames=(), **merger_options):
    """A ToMe merger of ``family`` that pairs the twins of a 2 x 4 token grid (one latent frame if ``frames``)."""
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    state = MergeState()
    config = MergeConfig(
        Method.TOME, ratio=0.5, max_downsample=1, window=(1, 2), prune_until=0.0, proportional_attention=proportional
    )
    merger = DiTMerger(config, state, family, (1, patch_size, patch_size), **merger_options)
    enter_call(merger, [1, 16, *frames, 2 * patch_size, 4 * patch_size])  # a 2 x 4 token grid
    return merger, state


def assert_twins_merge_exactly(merger, state, proportional, double_args, run_double, single_args, run_single):
    """A double and a single block call of twin tokens, merged: each pair becomes one token, and the outputs (image
    and text streams) equal the unmerged ones with proportional attention and differ without it."""
    merged_double = merger.block_replace(("double_block", 0))(double_args, {"original_block": run_double})
    merged_single = merger.block_replace(("single_block", 0))(single_args, {"original_block": run_single})
    plain_double, plain_single = run_double(double_args), run_single(single_args)
    assert state.counters["merged_calls"] == 2
    assert state.counters["tokens_out"] == 2 * 4  # every twin pair became one token
    assert state.counters["biased_calls"] == (2 if proportional else 0)
    same = [
        torch.allclose(merged_double["img"], plain_double["img"], atol=1e-5),
        torch.allclose(merged_double["txt"], plain_double["txt"], atol=1e-5),
        torch.allclose(merged_single["img"], plain_single["img"], atol=1e-5),
    ]
    assert same == ([True] * 3 if proportional else [False] * 3)


def regional_mask(txt_len: int, img_len: int) -> torch.Tensor:
    """An additive [L, L] attention mask over [text, image], as regional prompting builds one: image queries do not
    see the last text token, text queries do not see the first image row (twins share their row)."""
    mask = torch.zeros(txt_len + img_len, txt_len + img_len)
    mask[txt_len:, txt_len - 1] = float("-inf")
    mask[:txt_len, txt_len : txt_len + img_len // 2] = float("-inf")
    return mask


@pytest.mark.parametrize("name", ["flux", "flux2"])
@pytest.mark.parametrize("proportional", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_flux_duplicate_tokens_merged_with_proportional_attention_give_the_unmerged_output(
    pack, name, proportional, masked
):
    """Merging exact twins (features and RoPE rows) is exact with proportional attention, for the double block
    (text and image streams) and the single block, also under an attention mask (sliced for the kept tokens on both
    axes); without proportional attention the text side gets too much attention mass."""
    patcher = tiny_models.build_patcher(name, seed=0)
    model, img, txt, double_vec, single_vec, pe = flux_twins(patcher)
    mask = regional_mask(txt.shape[1], img.shape[1]) if masked else None
    double, single = model.double_blocks[0], model.single_blocks[0]

    def run_double(args):
        out_img, out_txt = double(
            img=args["img"].clone(),
            txt=args["txt"].clone(),
            vec=args["vec"],
            pe=args["pe"],
            attn_mask=args.get("attn_mask"),
            transformer_options=args["transformer_options"],
        )
        return {"img": out_img, "txt": out_txt}

    def run_single(args):
        return {
            "img": single(
                args["img"].clone(),
                vec=args["vec"],
                pe=args["pe"],
                attn_mask=args.get("attn_mask"),
                transformer_options=args["transformer_options"],
            )
        }

    double_args = {"img": img, "txt": txt, "vec": double_vec, "pe": pe, "attn_mask": mask, "transformer_options": {}}
    # the single block's text length, as ComfyUI's Flux forward tells it (``img_slice``)
    single_args = {
        "img": torch.cat([txt, img], dim=1),
        "vec": single_vec,
        "pe": pe,
        "attn_mask": mask,
        "transformer_options": {"img_slice": [txt.shape[1], txt.shape[1] + img.shape[1]]},
    }
    merger, state = twin_merger(proportional, model.patch_size)
    assert_twins_merge_exactly(merger, state, proportional, double_args, run_double, single_args, run_single)


def sdtm(model, prompt_scale_structure=1.0, prompt_scale_detail=1.0, **overrides):
    return sdtm_advanced(
        model, prompt_scale_structure=prompt_scale_structure, prompt_scale_detail=prompt_scale_detail, **overrides
    )


@pytest.mark.parametrize("name", ["flux", "chroma", "flux2", "qwen_image", "lumina2", "zimage", "sd3", "hunyuan_video"])
def test_prompt_reweighting_changes_the_output_and_is_bitwise_neutral_at_one(pack, name):
    family = tiny_models.FAMILIES[name]
    base = tiny_models.build_patcher(name, seed=0)
    plain = sample(sdtm(base), family, steps=6, height=64, width=96)
    neutral = sdtm(base, 1.0, 1.0, proportional_attention=False)
    assert torch.equal(sample(neutral, family, steps=6, height=64, width=96), plain)
    assert state_of(neutral).counters["biased_calls"] == 0
    for scales in ((2.0, 1.0), (1.0, 0.5)):  # each stage on its own
        reweighted = sdtm(base, *scales)
        out = sample(reweighted, family, steps=6, height=64, width=96)
        assert torch.isfinite(out).all()
        assert not torch.equal(out, plain)
        assert state_of(reweighted).counters["biased_calls"] > 0


def test_proportional_attention_on_each_family_keeps_sampling_deterministic(pack):
    from tokenmerge.nodes.importance import TokenMergeImportanceAdvanced

    for name in ("sd3", "flux", "chroma", "flux2", "qwen_image", "lumina2", "zimage", "wan21", "hunyuan_video"):
        family = tiny_models.FAMILIES[name]
        base = tiny_models.build_patcher(name, seed=0)
        settings = {
            "max_downsample": "auto",
            "dst_fraction": 0.25,
            "pool_factor": 1.4,
            "dst_mode": "random",
            "merge_cross_attention": False,
            "merge_feed_forward": False,
            "prune_until": 0.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
            "seed": 0,
            "block_start": 0.0,
            "block_end": 1.0,
        }
        off = TokenMergeImportanceAdvanced.execute(base, 0.5, **settings)[0]
        on = TokenMergeImportanceAdvanced.execute(base, 0.5, proportional_attention=True, **settings)[0]
        first = sample(on, family, steps=3, frames=5)
        assert torch.equal(first, sample(on, family, steps=3, frames=5))
        assert torch.isfinite(first).all()
        assert not torch.equal(first, sample(off, family, steps=3, frames=5))
        assert state_of(on).counters["biased_calls"] == state_of(on).counters["merged_calls"] > 0


def test_a_foreign_attention_override_is_chained(pack, flux):
    family = tiny_models.FAMILIES["flux"]
    base = flux.clone()
    masks = []

    def foreign(func, *args, **kwargs):
        masks.append(kwargs.get("mask"))
        return func(*args, **kwargs)

    base.model_options["transformer_options"]["optimized_attention_override"] = foreign
    patched = sdtm(base, 2.0, 2.0)
    sample(patched, family, steps=4, height=64, width=64)
    assert masks
    assert any(mask is not None for mask in masks)  # it saw the prompt bias of the merged calls
    assert any(mask is None for mask in masks)  # and the plain attention of the protected step


@pytest.mark.parametrize(
    ("name", "settings", "ignored"),
    [
        ("pixart_alpha", {"proportional_attention": True}, "proportional_attention"),
        ("wan21", {"prompt_scale_structure": 2.0}, "prompt_scale_structure"),
        ("sd15", {"proportional_attention": True}, "proportional_attention"),
    ],
)
def test_options_a_family_cannot_take_are_ignored_with_one_warning(pack, caplog, name, settings, ignored):
    from tokenmerge.patching.apply import apply_token_merge
    from tokenmerge.patching.config import MergeConfig, Method

    method = Method.IMPORTANCE if name == "sd15" else Method.SDTM
    config = MergeConfig(method, ratio=0.4, max_downsample=1, deviation=0.2, **settings)
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        patched = apply_token_merge(tiny_models.build_patcher(name), config)
    assert patched is not None
    messages = [r.getMessage() for r in caplog.records if "is ignored" in r.getMessage()]
    assert len(messages) == 1
    assert ignored in messages[0]


@pytest.mark.parametrize(("name", "value"), [("prompt_scale_structure", 0.0), ("prompt_scale_detail", 11.0)])
def test_out_of_range_prompt_scales_are_refused(pack, name, value):
    from tokenmerge.patching.config import MergeConfig, Method

    with pytest.raises(ValueError, match=rf"{name}={value} is out of range: allowed 0.1 to 10.0"):
        MergeConfig(Method.SDTM, ratio=0.4, max_downsample=1, **{name: value})


@pytest.mark.parametrize("proportional", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_hunyuan_video_duplicate_tokens_merged_with_proportional_attention_give_the_unmerged_output(
    pack, proportional, masked
):
    """HunyuanVideo's blocks in the layout this ComfyUI gives them: text first (newer releases; the single block told
    the text length by ``img_slice``) or image first (0.3.x, whose blocks are ``flipped_img_txt``: attention, RoPE
    table and mask over [image, text], single blocks over cat(image, text)). Exact twins (features and RoPE rows)
    merged with proportional attention give the unmerged double and single block outputs, also under the key mask a
    text attention mask becomes ([1, 1, L], one padded text token masked out); without it the text gets too much
    attention mass."""
    from tokenmerge.patching.dit_families import image_first

    model = tiny_models.build_patcher("hunyuan_video", seed=0).model.diffusion_model
    flipped = image_first(model)
    g = torch.Generator().manual_seed(0)
    h, w, txt_len, dim = 2, 4, 5, model.hidden_size
    img = torch.randn(1, h * w // 2, dim, generator=g).repeat_interleave(2, dim=1)  # [1, 8, C], twins side by side
    txt = torch.randn(1, txt_len, dim, generator=g)
    img_ids = torch.zeros(1, h, w, 3)
    img_ids[..., 1] = torch.arange(h).view(h, 1)
    img_ids[..., 2] = (torch.arange(w) // 2).view(1, w)  # twins share their column id
    img_ids, txt_ids = img_ids.view(1, h * w, 3), torch.zeros(1, txt_len, 3)
    pe = model.pe_embedder(torch.cat([img_ids, txt_ids] if flipped else [txt_ids, img_ids], dim=1))
    vec = torch.randn(1, dim, generator=g) * 0.5
    mask = None
    if masked:  # the last text token is padding: a key mask over the joint sequence
        mask = torch.zeros(1, 1, txt_len + h * w)
        mask[..., h * w + txt_len - 1 if flipped else txt_len - 1] = -torch.finfo(torch.float32).max
    double, single = model.double_blocks[0], model.single_blocks[0]

    def run_double(args):
        out_img, out_txt = double(
            img=args["img"].clone(),
            txt=args["txt"].clone(),
            vec=args["vec"],
            pe=args["pe"],
            attn_mask=args["attention_mask"],
            transformer_options=args["transformer_options"],
        )
        return {"img": out_img, "txt": out_txt}

    def run_single(args):
        return {
            "img": single(
                args["img"].clone(),
                vec=args["vec"],
                pe=args["pe"],
                attn_mask=args["attention_mask"],
                transformer_options=args["transformer_options"],
            )
        }

    double_args = {
        "img": img,
        "txt": txt,
        "vec": vec,
        "pe": pe,
        "attention_mask": mask,
        "modulation_dims_img": None,
        "modulation_dims_txt": None,
        "transformer_options": {},
    }
    joint = torch.cat([img, txt] if flipped else [txt, img], dim=1)
    single_args = {
        "img": joint,
        "vec": vec,
        "pe": pe,
        "attention_mask": mask,
        "modulation_dims": None,
        "transformer_options": {} if flipped else {"img_slice": [txt_len, txt_len + h * w]},
    }
    merger, state = twin_merger(proportional, 2, "hunyuan", frames=(1,), image_first=flipped)
    assert_twins_merge_exactly(merger, state, proportional, double_args, run_double, single_args, run_single)

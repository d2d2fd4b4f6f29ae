"""Every token leaves a merged DiT block as its own input plus its group's update, never its destination's hidden
state, on every DiT family and with every method (through the real ComfyUI)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import enter_call, merge_with, sample, sdtm_advanced, state_of

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
# patches_replace["dit"]; the rest: object patches
REPLACE_FAMILIES = {"sd3", "flux", "chroma", "flux2", "qwen_image", "wan21", "hunyuan_video"}

# (label, node, settings): IBTM, spatial ToMe, SDTM structure stage (protected steps on and off), SDTM detail stage
# (MLP only and whole block). Every block merged; six steps, so IBTM merges by importance from step 1 on.
METHODS = [
    ("ibtm", "TokenMergeImportanceAdvanced", {"prune_until": 0.0}),
    ("ibtm pruning", "TokenMergeImportanceAdvanced", {"prune_until": 0.5}),
    ("tome", "TokenMergeSpatialToMe", {}),
    ("sdtm structure", "TokenMergeSDTMAdvanced", {"switch_percent": 1.0}),
    ("sdtm structure unprotected", "TokenMergeSDTMAdvanced", {"switch_percent": 1.0, "protect_every": 0}),
    ("sdtm detail", "TokenMergeSDTMAdvanced", {"switch_percent": 0.0}),
    ("sdtm detail whole block", "TokenMergeSDTMAdvanced", {"switch_percent": 0.0, "detail_mlp_only": False}),
]


def merging_node(name: str, model, settings: dict):
    if name == "TokenMergeImportanceAdvanced":
        return merge_with(model, "importance", 0.5, block_start=0.0, block_end=1.0, **settings)
    if name == "TokenMergeSpatialToMe":
        from tokenmerge.nodes import importance

        return importance.TokenMergeSpatialToMe.execute(
            model, 0.5, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0, block_start=0.0
        )[0]
    return sdtm_advanced(model, 0.4, **{"protect_every": 2, **settings})


def with_zero_updates(name: str, model):
    """A clone of ``model`` whose blocks change no token (patched the ComfyUI way, below the merging node): replace
    families get a block replace that returns its input, Lumina 2 / Z-Image layers an identity forward, and PixArt
    (merged per sub-layer) attention, cross-attention and MLP patches that return zeros."""
    from tokenmerge.patching.dit_families import block_keys, dit_family

    base = model.clone()
    diffusion_model = base.model.diffusion_model
    family = dit_family(diffusion_model)
    for key in block_keys(diffusion_model, family):
        if name in REPLACE_FAMILIES:
            base.set_model_patch_replace(lambda args, _extra: {"img": args["img"], "txt": args.get("txt")}, "dit", *key)
        elif family == "lumina":
            base.add_object_patch(f"diffusion_model.layers.{key[1]}.forward", lambda x, *_args, **_kwargs: x)
        else:
            for sublayer in ("attn", "cross_attn", "mlp"):
                base.add_object_patch(
                    f"diffusion_model.blocks.{key[1]}.{sublayer}.forward",
                    lambda x, *_args, **_kwargs: torch.zeros_like(x),
                )
    return base


def with_zero_mlps(model):
    """A clone of ``model`` whose image MLPs return zeros (its attention still updates every token)."""
    from tokenmerge.patching.dit_families import block_keys, dit_family
    from tokenmerge.patching.sublayers import sublayer_paths

    base = model.clone()
    family = dit_family(base.model.diffusion_model)
    for key in block_keys(base.model.diffusion_model, family):
        for sublayer, path in sublayer_paths(family, key).items():
            if sublayer == "mlp":
                base.add_object_patch(f"diffusion_model.{path}.forward", torch.zeros_like)
    return base


@pytest.fixture(scope="module")
def dits(pack):
    return {name: tiny_models.build_patcher(name, seed=0) for name in DIT_FAMILIES}


@pytest.mark.parametrize("name", DIT_FAMILIES)
@pytest.mark.parametrize(("label", "node", "settings"), METHODS, ids=[m[0] for m in METHODS])
def test_a_block_that_changes_nothing_leaves_every_token_bitwise_unchanged(dits, name, label, node, settings):
    family = tiny_models.FAMILIES[name]
    side = max(family.min_side, 64)
    base = with_zero_updates(name, dits[name])
    patched = merging_node(node, base, settings)
    merged = sample(patched, family, steps=6, height=side, width=side + 48, batch=2, frames=5)
    counters = state_of(patched).counters
    assert counters["merged_calls"] > 0
    assert counters["tokens_out"] < counters["tokens_in"]
    assert counters["skipped"] == 0
    assert torch.equal(merged, sample(base, family, steps=6, height=side, width=side + 48, batch=2, frames=5))


@pytest.mark.parametrize("name", ["sd3", "flux", "flux2", "qwen_image", "wan21", "pixart_alpha", "hunyuan_video"])
@pytest.mark.parametrize("protect_every", [0, 2])
def test_the_detail_stage_changes_only_what_its_merged_mlp_adds(dits, name, protect_every):
    """SDTM's detail stage merges only the MLP: with MLPs that add nothing, the merged run is the unmerged one bit
    for bit, cache fusion included (attention keeps its fresh update on every token)."""
    family = tiny_models.FAMILIES[name]
    side = max(family.min_side, 64)
    base = with_zero_mlps(dits[name])
    patched = merging_node("TokenMergeSDTMAdvanced", base, {"switch_percent": 0.0, "protect_every": protect_every})
    merged = sample(patched, family, steps=6, height=side, width=side + 48, frames=5)
    counters = state_of(patched).counters
    assert counters["detail_calls"] > 0
    assert counters["mlp_calls"] > 0
    assert counters["fused_calls"] == (counters["mlp_calls"] if protect_every else 0)
    assert torch.equal(merged, sample(base, family, steps=6, height=side, width=side + 48, frames=5))


# ------------------------------------------------------------------------------------ a hand-computed block call
# Four tokens of two channels; token 0 stays independent, 2 and 3 merge into destination 1 (their mean, MEAN mode).
X = torch.tensor([[[1.0, -2.0], [0.5, 0.0], [2.0, 1.0], [-1.0, 2.0]]])
MEAN = torch.tensor([0.5, 1.0])  # (token 1 + token 2 + token 3) / 3


def update(t: torch.Tensor) -> torch.Tensor:
    """A per-token block update: tanh of the token."""
    return torch.tanh(t)


EXPECTED = torch.stack(
    [X[0, 0] + update(X[0, 0]), X[0, 1] + update(MEAN), X[0, 2] + update(MEAN), X[0, 3] + update(MEAN)]
).unsqueeze(0)


def hand_planned():
    from tokenmerge.merging.plan import MergeMode, MergePlan
    from tokenmerge.patching.planner import Planned

    plan = MergePlan(
        keep_idx=torch.tensor([[0]]),
        dst_idx=torch.tensor([[1]]),
        src_idx=torch.tensor([[2, 3]]),
        src_to_dst=torch.tensor([[0, 0]]),
        num_tokens=4,
    )
    return Planned(plan, MergeMode.MEAN)


def hand_merger(family: str, method: str = "tome", **call_info):
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    state = MergeState()
    merger = DiTMerger(MergeConfig(Method(method), ratio=0.5, max_downsample=1), state, family, (1, 2, 2))
    enter_call(merger, [1, 16, 4, 4], **call_info)
    merger.plan_block = lambda _img, _key: hand_planned()  # the hand-made partition instead of a planned one
    return merger


def test_merged_tokens_get_their_own_input_plus_the_group_update(pack):
    assert torch.allclose(EXPECTED[0, 2], torch.tensor([2.0 + math.tanh(0.5), 1.0 + math.tanh(1.0)]))
    merger = hand_merger("sd3")
    block = merger.block_replace(("double_block", 0))
    out = block(
        {"img": X.clone(), "txt": torch.zeros(1, 3, 2)},
        {"original_block": lambda a: {"img": a["img"] + update(a["img"]), "txt": a["txt"]}},
    )
    assert torch.allclose(out["img"], EXPECTED)


def test_in_place_flux_blocks_keep_the_residual(pack):
    """Flux blocks add to their input in place (``img += ...``); single blocks see cat(txt, img)."""
    txt = torch.full((1, 3, 2), 7.0)

    def in_place(args):
        args["img"] += update(args["img"])
        return {"img": args["img"], "txt": args.get("txt")}

    double = hand_merger("flux").block_replace(("double_block", 0))
    assert torch.allclose(double({"img": X.clone(), "txt": txt}, {"original_block": in_place})["img"], EXPECTED)
    single = hand_merger("flux", text_tokens=3).block_replace(("single_block", 0))
    out = single({"img": torch.cat([txt, X], dim=1)}, {"original_block": in_place})["img"]
    assert torch.allclose(out[:, 3:], EXPECTED)
    assert torch.allclose(out[:, :3], txt + update(txt))  # text tokens: the block's own output, unmerged


REFERENCES = torch.tensor([[[0.25, -0.5], [1.5, 0.75]]])  # two reference-image tokens after the image


@pytest.mark.parametrize("told", ["img_slice", "context"])
def test_reference_image_tokens_pass_through_flux_blocks_untouched(pack, caplog, told):
    """Flux Kontext / Flux 2 editing: the image stream is [image, references] in double blocks and [text, image,
    references] in single blocks. Only the image tokens merge; the references and the text see the block unmerged
    and keep their own output, in place or not. The text length comes from ``img_slice`` (newer ComfyUI) or from
    the call's text context."""
    txt = torch.full((1, 3, 2), 7.0)
    seen = []

    def in_place(args):
        seen.append(args["img"].shape[1])
        args["img"] += update(args["img"])
        return {"img": args["img"], "txt": args.get("txt")}

    options = {"reference_image_num_tokens": [2]}
    if told == "img_slice":
        options["img_slice"] = [3, 9]
    call_info = {"text_tokens": 3} if told == "context" else {}
    image_and_references = torch.cat([X, REFERENCES], dim=1)
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        double = hand_merger("flux", **call_info).block_replace(("double_block", 0))
        out = double(
            {"img": image_and_references.clone(), "txt": txt, "transformer_options": options},
            {"original_block": in_place},
        )["img"]
        assert torch.allclose(out, torch.cat([EXPECTED, REFERENCES + update(REFERENCES)], dim=1))
        single = hand_merger("flux", **call_info).block_replace(("single_block", 0))
        out = single(
            {"img": torch.cat([txt, image_and_references], dim=1), "transformer_options": options},
            {"original_block": in_place},
        )["img"]
    assert torch.allclose(out, torch.cat([txt + update(txt), EXPECTED, REFERENCES + update(REFERENCES)], dim=1))
    assert seen == [2 + 2, 3 + 2 + 2]  # the blocks ran on the merged image: kept + destination tokens
    assert not caplog.records


@pytest.mark.parametrize(
    ("options", "call_info", "reason"),
    [
        ({"reference_image_num_tokens": [3]}, {"text_tokens": 3}, "tokens where the latent gives"),
        ({}, {}, "text length of a single block is unknown"),
        (
            {"reference_image_num_tokens": [2]},
            {"text_tokens": 3, "reference_method": "index_timestep_zero"},
            "index_timestep_zero",
        ),
    ],
)
def test_a_reference_span_that_cannot_be_known_runs_unmerged_with_one_warning(pack, caplog, options, call_info, reason):
    txt = torch.full((1, 3, 2), 7.0)
    tokens = torch.cat([txt, X, REFERENCES], dim=1)

    def block(args):
        return {"img": args["img"] + update(args["img"])}

    merger = hand_merger("flux", **call_info)
    single = merger.block_replace(("single_block", 0))
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        for _ in range(2):
            out = single({"img": tokens, "transformer_options": options}, {"original_block": block})["img"]
            assert torch.equal(out, tokens + update(tokens))  # the block ran on every token
    assert len(caplog.records) == 1
    assert reason in caplog.records[0].getMessage()


def test_pixart_merges_attention_queries_per_sub_layer(pack):
    """PixArt: the block runs unchanged and each merged sub-layer returns its output unmerged, which the block adds
    to every token's own residual; the MLP (not merged by IBTM on PixArt) sees every token."""
    merger = hand_merger("pixart", "importance")
    seen = {}

    def sublayer(name):
        def forward(x, *args, **kwargs):
            seen[name] = x.shape[1]
            return update(x)

        return merger.sublayer_forward(forward, ("block", 0), name)

    attn, cross_attn, mlp = sublayer("attn"), sublayer("cross_attn"), sublayer("mlp")

    def block(x, y):
        x = x + attn(x)
        x = x + cross_attn(x, y)
        return x + mlp(x)

    out = merger.block_forward(block, ("block", 0))(X.clone(), torch.zeros(1, 3, 2))
    step1 = EXPECTED  # x + unmerge(update(merge(x)))
    merged = torch.stack([step1[0, 0], step1[0, 1:].mean(0)])  # the second sub-layer merges its own input again
    step2 = step1 + update(torch.stack([merged[0], merged[1], merged[1], merged[1]])).unsqueeze(0)
    assert seen == {"attn": 2, "cross_attn": 2, "mlp": 4}
    assert torch.allclose(out, step2 + update(step2))


def test_pixart_merges_the_attention_queries_but_not_the_mlp(dits):
    """IBTM on PixArt as its authors run it: self-attention and cross-attention queries merged, the MLP sees every
    token (``merge_feed_forward`` adds it)."""
    from tokenmerge.nodes.importance import TokenMergeImportance

    family = tiny_models.FAMILIES["pixart_alpha"]
    patched = TokenMergeImportance.execute(dits["pixart_alpha"], 0.5)[0]
    side = max(family.min_side, 64)
    sample(patched, family, steps=3, height=side, width=side + 48)
    counters = state_of(patched).counters
    assert counters["attn_calls"] == counters["cross_attn_calls"] == counters["merged_calls"] > 0
    assert counters["mlp_calls"] == 0
    full = merging_node(
        "TokenMergeImportanceAdvanced", dits["pixart_alpha"], {"merge_feed_forward": True, "match": "position"}
    )
    sample(full, family, steps=3, height=side, width=side + 48)
    counters = state_of(full).counters
    assert counters["mlp_calls"] == counters["attn_calls"] == counters["merged_calls"] > 0


@pytest.mark.parametrize("switch_sigma", [0.5, 10.0], ids=["structure stage", "whole-block detail stage"])
def test_sdtm_blends_the_cached_update_into_the_merged_tokens_only(pack, switch_sigma):
    """A protected step caches the block update; the next merged step gives the merged tokens (sources and
    destination) cache_weight x their fresh group update + (1 - cache_weight) x the cached one, and the independent
    token its fresh update (the detail stage with ``detail_mlp_only`` off merges and caches the whole block too)."""
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.dit import DiTMerger
    from tokenmerge.patching.state import MergeState

    state = MergeState()
    config = MergeConfig(
        Method.SDTM, ratio=0.4, max_downsample=1, protect_every=2, cache_weight=0.25, detail_mlp_only=False
    )
    merger = DiTMerger(config, state, "sd3", (1, 2, 2), switch_sigma=switch_sigma)
    merger.plan_block = lambda _img, _key: hand_planned()
    block = merger.block_replace(("double_block", 0))
    cached = torch.tensor([[[0.1, 0.2], [0.3, -0.4], [0.5, 0.6], [-0.7, 0.8]]])

    def call(sigma, original):
        enter_call(merger, [1, 16, 4, 4], sigma, [3.0, 2.0, 1.0, 0.0])
        return block({"img": X.clone(), "txt": torch.zeros(1, 3, 2)}, {"original_block": original})["img"]

    assert torch.equal(call(3.0, lambda a: {"img": a["img"] + cached, "txt": a["txt"]}), X + cached)  # protected
    out = call(2.0, lambda a: {"img": a["img"] + update(a["img"]), "txt": a["txt"]})
    fresh = EXPECTED - X
    expected = X + torch.cat([fresh[:, :1], 0.25 * fresh[:, 1:] + 0.75 * cached[:, 1:]], dim=1)
    assert torch.allclose(out, expected)
    assert state.counters["fused_calls"] == 1

"""Stacking with other model patches, in both orders: a LoRA-style weight patch, FreeU, EasyCache/LazyCache,
Perturbed-Attention Guidance, foreign attn1/output patches and foreign block replaces; and two tokenmerge nodes on
one model, where the last one wins. Everything is ComfyUI's own node code, sampled through ``comfy.sample``."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import sample, state_of

from devkit import tiny_models

SD15 = tiny_models.FAMILIES["sd15"]
SD3 = tiny_models.FAMILIES["sd3"]
WINS = "the last tokenmerge node wins"


@pytest.fixture(scope="module")
def models() -> dict:
    return {
        "sd15": tiny_models.build_patcher("sd15", seed=0, scale=0.5),
        "sd3": tiny_models.build_patcher("sd3"),
        "pixart_alpha": tiny_models.build_patcher("pixart_alpha"),
    }


@pytest.fixture(scope="module")
def nodes(pack):
    from tokenmerge.nodes import importance, sdtm

    return importance, sdtm


def merge(nodes, model, ratio: float = 0.5):
    return nodes[0].TokenMergeImportance.execute(model, ratio)[0]


def tome(nodes, model, ratio: float = 0.3):
    return nodes[0].TokenMergeSpatialToMe.execute(
        model, ratio, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]


def lora(model):
    """A LoRA-style weight patch (``add_patches`` with a diff) on the first 2-D attention weight."""
    key, weight = next(
        (k, v) for k, v in model.model.state_dict().items() if "attn" in k and k.endswith(".weight") and v.ndim == 2
    )
    patched = model.clone()
    delta = 0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1))
    assert patched.add_patches({key: (delta,)}, 1.0) == [key]
    return patched


def run(model, name: str, **kwargs) -> torch.Tensor:
    family = tiny_models.FAMILIES[name]
    out = sample(model, family, steps=kwargs.pop("steps", 3), **kwargs)
    assert torch.isfinite(out).all()
    return out


def assert_merged(model) -> None:
    counters = state_of(model).counters
    assert counters["merged_calls"] > 0
    assert counters["skipped"] == 0


@pytest.mark.parametrize("name", ["sd15", "sd3"])
def test_lora_weight_patch_and_merging_commute(nodes, models, name):
    base = models[name]
    lora_first = merge(nodes, lora(base))
    merge_first = lora(merge(nodes, base))
    first = run(lora_first, name)
    assert_merged(lora_first)
    second = run(merge_first, name)
    assert_merged(merge_first)
    assert torch.equal(first, second)
    assert not torch.equal(first, run(merge(nodes, base), name))  # the weight patch is applied


def test_freeu_stacks_in_both_orders(nodes, models):
    from comfy_extras.nodes_freelunch import FreeU

    base = models["sd15"]
    freeu_first = merge(nodes, FreeU().patch(base, 1.1, 1.2, 0.9, 0.2)[0])
    merge_first = FreeU().patch(merge(nodes, base), 1.1, 1.2, 0.9, 0.2)[0]
    first = run(freeu_first, "sd15")
    assert_merged(freeu_first)
    assert torch.equal(first, run(merge_first, "sd15"))
    assert_merged(merge_first)
    assert not torch.equal(first, run(merge(nodes, base), "sd15"))  # FreeU is applied


@pytest.mark.parametrize("name", ["sd15", "sd3"])
@pytest.mark.parametrize("cache", ["EasyCacheNode", "LazyCacheNode"])
def test_easycache_and_lazycache_stack_in_both_orders(nodes, models, name, cache, caplog):
    from comfy_extras import nodes_easycache

    node = getattr(nodes_easycache, cache)

    def cached(model):
        return node.execute(model, reuse_threshold=3.0, start_percent=0.15, end_percent=0.95, verbose=False)[0]

    base = models[name]
    outputs = []
    for model in (merge(nodes, cached(base)), cached(merge(nodes, base))):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            outputs.append(run(model, name, steps=8))
        assert_merged(model)
        skipped = [r.getMessage() for r in caplog.records if "Cache - skipped" in r.getMessage()]
        assert len(skipped) == 1  # the cache ran
        if name == "sd15":  # on the tiny SD3 EasyCache never skips a step, patched or not
            assert not skipped[0].split("skipped ", 1)[1].startswith("0/")
    assert torch.equal(*outputs)


def test_perturbed_attention_guidance_stacks_in_both_orders(nodes, models):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as Pag

    base = models["sd15"]
    pag_first = merge(nodes, Pag.execute(base, 3.0)[0])
    merge_first = Pag.execute(merge(nodes, base), 3.0)[0]
    first = run(pag_first, "sd15")
    second = run(merge_first, "sd15")
    merged_alone = merge(nodes, base)
    alone = run(merged_alone, "sd15")
    assert not torch.equal(first, alone)  # PAG is applied
    # PAG's extra model call of a step runs after (or, with PAG applied first, before) our capture of that step's
    # map, so the two orders merge it by a fresher or an older map: close, not identical
    assert (first - second).abs().mean() < 0.25 * (first - alone).abs().mean()  # far less than PAG itself
    for model in (pag_first, merge_first):
        # PAG's extra model call per step (cond only, perturbed middle block) is merged as well: twice the calls
        assert state_of(model).counters["merged_calls"] == 2 * state_of(merged_alone).counters["merged_calls"]
        assert state_of(model).counters["maps_captured"] == 3


@pytest.mark.parametrize("foreign_first", [True, False])
def test_foreign_attn1_and_output_patches_stack(nodes, models, foreign_first):
    base = models["sd15"]
    seen: dict[str, list[int]] = {"attn1": [], "output": []}

    def attn1(n, context, value, extra_options):
        if extra_options["block"] == ("input", 1):
            seen["attn1"].append(n.shape[1])
        return n, context, value

    def output(n, extra_options):
        if extra_options["block"] == ("input", 1):
            seen["output"].append(n.shape[1])
        return n

    def foreign(model):
        patched = model.clone()
        patched.set_model_attn1_patch(attn1)
        patched.set_model_attn1_output_patch(output)
        return patched

    model = merge(nodes, foreign(base)) if foreign_first else foreign(merge(nodes, base))
    run(model, "sd15", height=64, width=64)  # 8x8 latent: 64 tokens at the merged level
    assert_merged(model)
    # the patch lists run in the order applied: before ours a patch sees all tokens, after ours the merged ones
    assert set(seen["attn1"]) == ({64} if foreign_first else {32})
    assert set(seen["output"]) == ({32} if foreign_first else {64})


def test_a_foreign_attn1_replace_runs_on_the_merged_tokens(nodes, models):
    from comfy.ldm.modules.attention import optimized_attention

    tokens = []

    def replace(q, k, v, extra_options):
        tokens.append((q.shape[1], k.shape[1]))
        return optimized_attention(q, k, v, extra_options["n_heads"])

    for foreign_first in (True, False):
        tokens.clear()
        base = models["sd15"]
        if foreign_first:
            base = base.clone()
            base.set_model_attn1_replace(replace, "input", 1, 0)
            model = merge(nodes, base)
        else:
            model = merge(nodes, base).clone()
            model.set_model_attn1_replace(replace, "input", 1, 0)
        run(model, "sd15", height=64, width=64)
        assert_merged(model)
        assert set(tokens) == {(32, 32)}  # q, k and v merged before the replace computes attention


def chaining_replace(model, key: tuple[str, int], calls: list[int]):
    """A foreign node that sets a DiT block replace the way a good pack does: chained to the one already there."""
    patched = model.clone()
    previous = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {}).get(key)

    def replace(args, extra):
        calls.append(args["img"].shape[1])
        return previous(args, extra) if previous is not None else extra["original_block"](args)

    patched.set_model_patch_replace(replace, "dit", *key)
    return patched


@pytest.mark.parametrize("foreign_first", [True, False])
def test_foreign_dit_block_replace_and_ours_chain_to_each_other(nodes, models, foreign_first):
    base, key, calls = models["sd3"], ("double_block", 1), []
    if foreign_first:
        model = merge(nodes, chaining_replace(base, key, calls))
    else:
        model = chaining_replace(merge(nodes, base), key, calls)
    run(model, "sd3", height=64, width=64)  # 4x4 = 16 image tokens
    assert_merged(model)
    assert calls
    assert set(calls) == ({8} if foreign_first else {16})  # ours runs outside (merged) or inside the foreign one


# ----------------------------------------------------------------------- two tokenmerge nodes on one model
def test_the_last_tokenmerge_node_wins_on_a_unet(nodes, models, caplog):
    base = models["sd15"]
    everything = nodes[0].TokenMergeImportanceAdvanced.execute(
        base,
        0.5,
        "auto",
        0.25,
        1.4,
        "random",
        merge_cross_attention=True,
        merge_feed_forward=True,
        prune_until=0.1,
        start_percent=0.0,
        end_percent=1.0,
        seed=0,
    )[0]
    assert any(name.endswith("ff.forward") for name in everything.object_patches)
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        stacked = tome(nodes, everything)
    assert len([r for r in caplog.records if WINS in r.getMessage()]) == 1
    assert stacked.object_patches == {}
    alone = tome(nodes, base)
    assert torch.equal(run(stacked, "sd15"), run(alone, "sd15"))
    counters = state_of(stacked).counters
    assert counters["merged_calls"] == counters["tome_calls"] > 0
    assert counters["ff_calls"] == 0
    assert counters["tokens_out"] == pytest.approx(0.7 * counters["tokens_in"], rel=0.05)  # merged once, not twice
    assert state_of(everything).counters["merged_calls"] == 0  # the earlier node's patches never ran


def test_ratio_zero_after_a_tokenmerge_node_restores_the_unpatched_model(nodes, models):
    base = models["sd15"]
    off = merge(nodes, merge(nodes, base), 0.0)
    assert state_of(off) is None
    assert torch.equal(run(off, "sd15"), run(base, "sd15"))


def test_the_last_tokenmerge_node_wins_on_dits_keeping_foreign_replaces(nodes, models):
    base, key, calls = models["sd3"], ("double_block", 1), []
    foreign = chaining_replace(base, key, calls)
    stacked = nodes[1].TokenMergeSDTM.execute(merge(nodes, foreign), 0.4)[0]
    alone = nodes[1].TokenMergeSDTM.execute(foreign, 0.4)[0]
    first = run(stacked, "sd3", steps=4)
    calls_stacked = list(calls)
    assert torch.equal(first, run(alone, "sd3", steps=4))
    assert calls_stacked == calls[len(calls_stacked) :]  # the foreign replace still runs, on the same tokens
    assert state_of(stacked).counters["importance_calls"] == 0
    # PixArt: object patches on every block's forward and MLP, chained to the model's own
    pixart = models["pixart_alpha"]
    stacked = merge(nodes, nodes[1].TokenMergeSDTM.execute(pixart, 0.4)[0])
    alone = merge(nodes, pixart)
    assert set(stacked.object_patches) == set(alone.object_patches)
    assert torch.equal(
        run(stacked, "pixart_alpha", height=256, width=304), run(alone, "pixart_alpha", height=256, width=304)
    )
    assert state_of(stacked).counters["structure_calls"] == 0


def test_a_lora_between_two_tokenmerge_nodes_is_kept(nodes, models):
    base = models["sd15"]
    stacked = tome(nodes, lora(merge(nodes, base)))
    assert torch.equal(run(stacked, "sd15"), run(tome(nodes, lora(base)), "sd15"))

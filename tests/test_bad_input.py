"""Bad input and surprises: every node input outside its range is refused before sampling (naming the input, the
value and the range), unsupported families pass through with one warning, a foreign patch that changes the token
count mid-run skips merging with one warning and never raises, and no importance map outlives its run."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from conftest import sample, state_of

from devkit import tiny_models

SD15 = tiny_models.FAMILIES["sd15"]
SD3 = tiny_models.FAMILIES["sd3"]


def node_classes():
    from tokenmerge.nodes import importance, sdtm

    return [*importance.NODES, *sdtm.NODES]


def ranged_inputs(pack) -> list[tuple[str, str, float, float, float]]:
    """(node id, input, min, max, step) of every numeric input of every node."""
    return [
        (node.GET_SCHEMA().node_id, inp.id, inp.min, inp.max, inp.step or 1)
        for node in node_classes()
        for inp in node.GET_SCHEMA().inputs
        if getattr(inp, "min", None) is not None and getattr(inp, "max", None) is not None
    ]


def defaults(node) -> dict:
    return {inp.id: inp.default for inp in node.GET_SCHEMA().inputs if inp.id != "model"}


@pytest.fixture(scope="module")
def models() -> dict:
    return {"sd15": tiny_models.build_patcher("sd15", seed=0, scale=0.5), "sd3": tiny_models.build_patcher("sd3")}


def test_every_numeric_input_of_every_node_is_refused_outside_its_range(pack, models):
    nodes = {node.GET_SCHEMA().node_id: node for node in node_classes()}
    checked = 0
    for node_id, name, low, high, step in ranged_inputs(pack):
        node = nodes[node_id]
        for value in (round(low - step, 6), round(high + step, 6)):
            kwargs = defaults(node) | {name: value}
            model = models["sd3"]
            with pytest.raises(ValueError, match=re.escape(f"{name}={value}")) as refused:
                node.execute(model, **kwargs)
            message = str(refused.value)
            assert re.search(r"allowed -?[\d.]+ to [\w.=]+|must be below", message), message
            assert not model.model_options["transformer_options"].get("patches_replace")  # refused before patching
            checked += 1
    assert checked == 2 * len(ranged_inputs(pack)) >= 2 * 30


@pytest.mark.parametrize("index", range(5))
def test_an_unsupported_family_passes_through_every_node_with_one_warning(pack, index, caplog):
    node = node_classes()[index]
    unsupported = tiny_models.build_patcher(tiny_models.UNSUPPORTED_FAMILY)
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        assert node.execute(unsupported, **defaults(node))[0] is unsupported
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert tiny_models.UNSUPPORTED_FAMILY.model_config in warnings[0]


def test_a_foreign_patch_that_adds_tokens_skips_merging_with_one_warning_on_a_unet(pack, models, caplog):
    """A foreign attn1 patch that appends register tokens (and an output patch that drops them), applied first."""
    base = models["sd15"].clone()
    extra_tokens = 3

    def add_registers(n, context, value, extra_options):
        n = torch.cat([n, n[:, :extra_tokens]], dim=1)
        return n, n, n

    def drop_registers(n, extra_options):
        return n[:, :-extra_tokens]

    base.set_model_attn1_patch(add_registers)
    base.set_model_attn1_output_patch(drop_registers)
    from tokenmerge.nodes import importance

    patched = importance.TokenMergeImportance.execute(base, 0.5)[0]
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        out = sample(patched, SD15, steps=3, batch=2)
    assert torch.isfinite(out).all()
    assert torch.equal(out, sample(base, SD15, steps=3, batch=2))  # every call ran unmerged
    counters = state_of(patched).counters
    assert counters["merged_calls"] == 0
    assert counters["skipped"] > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "fit no grid" in warnings[0]


def test_a_foreign_replace_that_adds_tokens_skips_merging_with_one_warning_on_a_dit(pack, models, caplog):
    from tokenmerge.nodes import importance

    patched = importance.TokenMergeSpatialToMe.execute(
        models["sd3"], 0.5, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0].clone()
    key = ("double_block", 1)
    ours = patched.model_options["transformer_options"]["patches_replace"]["dit"][key]

    def add_registers(args, extra):  # chains to ours with 3 extra image tokens, drops them again afterwards
        img = args["img"]
        out = ours({**args, "img": torch.cat([img, img[:, :3]], dim=1)}, extra)
        return {**out, "img": out["img"][:, :-3]}

    patched.set_model_patch_replace(add_registers, "dit", *key)
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        out = sample(patched, SD3, steps=3)
    assert torch.isfinite(out).all()
    counters = state_of(patched).counters
    assert counters["merged_calls"] == 0
    assert counters["skipped"] > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "19 tokens where the latent gives 16 image tokens" in warnings[0]


@pytest.mark.parametrize("name", ["sd15", "sd3"])
def test_no_importance_map_outlives_its_run_or_resolution(pack, models, name, caplog):
    """Two resolutions back to back on one patched model: the second run is exactly a fresh model's run."""
    from tokenmerge.nodes import importance

    family = tiny_models.FAMILIES[name]
    patched = importance.TokenMergeImportance.execute(models[name], 0.5)[0]
    sample(patched, family, steps=3, height=64, width=64, batch=2)
    assert state_of(patched).importance.shape[-2:] == (8, 8)
    with caplog.at_level(logging.INFO, logger="tokenmerge"):
        second = sample(patched, family, steps=3, height=96, width=128, batch=1)
    counters = state_of(patched).counters.copy()
    fresh = importance.TokenMergeImportance.execute(models[name], 0.5)[0]
    assert torch.equal(second, sample(fresh, family, steps=3, height=96, width=128, batch=1))
    assert counters == state_of(fresh).counters
    assert not [r for r in caplog.records if "does not match" in r.getMessage()]
    assert counters["importance_calls"] > 0

"""Token merging under ComfyUI's TorchCompileModel (inductor, on this CPU): it plans without errors, merges in
every call it merges without compile, recompiles a bounded number of times that does not grow with the
steps (24 steps build no graph that 12 did not), and gives the same latent on every rerun. In process on the tiny
models, and on the real server.

The call wrapper decides everything per step outside the compiled diffusion model (``patching/model_call.py``);
what the blocks trace is tensor work and a few decisions, so the counts below stay small.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo
from conftest import merge_with, sample, state_of
from test_server import sd3_prompt

from devkit import tiny_models

# (family, merging node, compile after the node?, guards filtered as ComfyUI 0.33's TorchCompileModel does?) cells;
# each compiles a tiny model once (10-60 s here)
CELLS = [
    ("sd15", "importance", True, False),
    ("sd3", "sdtm", True, False),
    ("flux", "tome", True, False),
    ("sd15", "tome", False, False),
    ("sd15", "importance", True, True),
    ("sd3", "sdtm", True, True),
]


def without_transformer_options_guards(guard_entries) -> list[bool]:
    """The guard filter ComfyUI 0.33's TorchCompileModel passes to torch.compile: it keeps no guard whose source
    passes through ``transformer_options``, where every patch a node installs lives."""
    return ["transformer_options" not in entry.name for entry in guard_entries]


def compiled(model, filtered: bool = False):
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    patched = model.clone()
    options = {"guard_filter_fn": without_transformer_options_guards} if filtered else None
    set_torch_compile_wrapper(patched, backend="inductor", options=options)
    return patched


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.mark.parametrize(
    ("name", "method", "after", "filtered"),
    CELLS,
    ids=[f"{n}-{m}-compile-{'after' if a else 'before'}{'-guards-filtered' if f else ''}" for n, m, a, f in CELLS],
)
def test_compiled_merging_plans_without_errors_and_recompiles_a_bounded_number_of_times(
    pack, caplog, name, method, after, filtered
):
    """With ComfyUI 0.33's guard filter too: the per-step decisions must still reach the graph (a frozen first call
    would run SDTM's protected path, or IBTM's step-0 spatial ToMe, for the whole run)."""
    family = tiny_models.FAMILIES[name]
    base = tiny_models.build_patcher(name, seed=0, scale=0.5)
    eager = merge_with(base, method)
    model = compiled(eager, filtered) if after else merge_with(compiled(base, filtered), method)
    torch._dynamo.reset()
    shape = {"height": 128, "width": 96}
    with caplog.at_level(logging.WARNING, logger="tokenmerge"):
        first = sample(model, family, steps=6, **shape)
        counters = state_of(model).counters
        sample(model, family, steps=12, **shape)
        after_twelve = graphs()
        longer = sample(model, family, steps=24, **shape)
        after_twice_as_many = graphs()
        again = sample(model, family, steps=6, **shape)
    reference = sample(eager, family, steps=6, **shape)
    assert not [r for r in caplog.records if r.name.startswith("tokenmerge")], [r.message for r in caplog.records]
    assert counters == state_of(eager).counters  # merged in the same calls, the same way
    assert counters["merged_calls"] > 0
    assert torch.isfinite(longer).all()
    assert torch.equal(first, again)  # deterministic for a seed
    # bounded: from 12 to 24 steps nothing recompiles (ComfyUI's own graphs grow from 6 to 12 steps, unpatched too)
    assert after_twice_as_many == after_twelve
    assert (first - reference).abs().max() < 0.05 * reference.abs().max()  # the same image as without compile


@pytest.mark.server
@pytest.mark.parametrize(
    ("node", "inputs", "after"),
    [
        ("TokenMergeImportance", {"ratio": 0.5}, True),
        (
            "TokenMergeSpatialToMe",
            {
                "ratio": 0.5,
                "max_downsample": "auto",
                "window_y": 2,
                "window_x": 2,
                "merge_cross_attention": False,
                "merge_feed_forward": False,
                "seed": 0,
            },
            True,
        ),
        ("TokenMergeSDTM", {"ratio": 0.5}, True),
        ("TokenMergeImportance", {"ratio": 0.5}, False),
    ],
    ids=["importance", "tome", "sdtm", "importance-compiled-first"],
)
def test_torch_compile_model_with_each_merging_node_on_the_server(comfy_server, node, inputs, after):
    prompt = sd3_prompt(node, inputs, cfg=4.0, steps=6, width=128, height=128, batch=1)
    if after:  # loader -> merging node -> TorchCompileModel -> KSampler
        prompt["11"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["2", 0], "backend": "inductor"}}
        prompt["7"]["inputs"]["model"] = ["11", 0]
    else:  # loader -> TorchCompileModel -> merging node -> KSampler
        prompt["11"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["1", 0], "backend": "inductor"}}
        prompt["2"]["inputs"]["model"] = ["11", 0]
    start = len(comfy_server.log())
    entry = comfy_server.run(prompt, timeout=600.0)
    log = comfy_server.log()[start:]
    assert len(entry["outputs"]["10"]["images"]) == 1
    assert "tokenmerge: merged" in log, log[-3000:]
    assert "plan failed" not in log
    assert "merging skipped" not in log

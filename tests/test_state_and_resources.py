"""State and resources: a 30-run soak (flat memory, bitwise reruns), interrupted runs, isolation of patched clones
and samplers, and both ComfyUI clone semantics (0.3.75 deep copies, the newest version's shared leaves)."""

from __future__ import annotations

import copy
import threading

import psutil
import pytest
import torch
from conftest import sample, state_of

from devkit import tiny_models

SD15 = tiny_models.FAMILIES["sd15"]
SD3 = tiny_models.FAMILIES["sd3"]


@pytest.fixture(scope="module")
def models() -> dict:
    return {"sd15": tiny_models.build_patcher("sd15", seed=0, scale=0.5), "sd3": tiny_models.build_patcher("sd3")}


@pytest.fixture(scope="module")
def importance(pack):
    from tokenmerge.nodes import importance

    return importance


def test_soak_of_30_runs_keeps_memory_flat_and_reruns_bitwise(importance, models):
    patched = importance.TokenMergeImportance.execute(models["sd15"], 0.5)[0]
    sizes, batches = [(64, 64), (72, 128), (104, 88)], [1, 2, 3]
    samplers = ["euler", "heun", "dpmpp_2m", "uni_pc", "lcm"]
    # every size x batch pair in each cycle of 9 runs, the sampler changing too: runs 10-30 repeat what 1-9 did
    settings = [(sizes[i % 3], batches[i // 3 % 3], samplers[i % 5]) for i in range(30)]
    process = psutil.Process()
    first, rss = None, []
    for i, ((height, width), batch, sampler) in enumerate(settings):
        out = sample(patched, SD15, steps=3, height=height, width=width, batch=batch, sampler=sampler)
        assert torch.isfinite(out).all()
        assert state_of(patched).counters["merged_calls"] > 0
        first = out if i == 0 else first
        rss.append(process.memory_info().rss)
    growth = max(rss[10:]) - rss[9]  # after a warm-up cycle (allocator pools, lazy imports)
    assert growth < 24 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB over 20 runs"
    (height, width), batch, sampler = settings[0]
    assert torch.equal(sample(patched, SD15, steps=3, height=height, width=width, batch=batch, sampler=sampler), first)


class Interrupt(Exception):  # noqa: N818  raised on purpose through the sampler callback
    pass


@pytest.mark.parametrize("name", ["sd15", "sd3"])
def test_an_interrupted_run_leaves_no_trace(importance, models, name):
    family = tiny_models.FAMILIES[name]
    patched = importance.TokenMergeImportance.execute(models[name], 0.5)[0]
    clean = sample(patched, family, steps=4, batch=2)

    def interrupt(step, x0, x, total_steps):
        if step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        sample(patched, family, steps=4, batch=2, height=96, width=128, callback=interrupt)
    assert state_of(patched).call is None  # the per-call information was cleared on the way out
    assert torch.equal(sample(patched, family, steps=4, batch=2), clean)


def test_two_patched_clones_and_two_samplers_keep_separate_state(importance, models):
    base = models["sd15"]
    first = importance.TokenMergeImportance.execute(base, 0.5)[0]
    second = importance.TokenMergeSpatialToMe.execute(
        base, 0.3, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]
    a = sample(first, SD15, steps=3)
    counters = state_of(first).counters.copy()
    b = sample(second, SD15, steps=3, height=96, width=96)  # the second sampler of a workflow, another resolution
    assert state_of(first).counters == counters
    assert state_of(second).counters["importance_calls"] == 0
    assert torch.equal(sample(first, SD15, steps=3), a)
    hires = sample(first, SD15, steps=3, height=128, width=128)  # the same patched model in a second sampler
    assert torch.equal(sample(second, SD15, steps=3, height=96, width=96), b)
    assert torch.isfinite(hires).all()
    assert torch.equal(sample(first, SD15, steps=3), a)


def shared_leaf_clone(patcher):
    """The newest ComfyUI's clone: dicts and lists of ``model_options`` copied, every leaf shared
    (``comfy.utils.deepcopy_list_dict``), simulated on 0.3.75's clone."""

    def copy_lists_and_dicts(obj):
        if isinstance(obj, dict):
            return {key: copy_lists_and_dicts(value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [copy_lists_and_dicts(value) for value in obj]
        return obj

    clone = patcher.clone()
    clone.model_options = copy_lists_and_dicts(patcher.model_options)
    return clone


@pytest.mark.parametrize("name", ["sd15", "sd3"])
@pytest.mark.parametrize("clone", [copy.copy, shared_leaf_clone], ids=["deepcopy_0.3.75", "shared_leaves_newest"])
def test_both_clone_semantics_share_the_state_and_give_the_same_run(importance, models, name, clone):
    family = tiny_models.FAMILIES[name]
    patched = importance.TokenMergeImportance.execute(models[name], 0.5)[0]
    reference = sample(patched, family, steps=3, batch=2)
    cloned = patched.clone() if clone is copy.copy else clone(patched)  # copy.copy stands for ComfyUI's own clone
    assert state_of(cloned) is state_of(patched)
    assert torch.equal(sample(cloned, family, steps=3, batch=2), reference)
    assert state_of(patched).counters["merged_calls"] > 0
    # a later tokenmerge node on the clone replaces ours in either semantics
    tome = importance.TokenMergeSpatialToMe.execute(
        cloned, 0.3, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]
    alone = importance.TokenMergeSpatialToMe.execute(
        models[name], 0.3, "auto", 2, 2, merge_cross_attention=False, merge_feed_forward=False, seed=0
    )[0]
    assert torch.equal(sample(tome, family, steps=3, batch=2), sample(alone, family, steps=3, batch=2))
    assert torch.equal(sample(patched, family, steps=3, batch=2), reference)  # the original is untouched


def test_threads_in_one_model_call_keep_their_own_call_state(pack):
    """Newer ComfyUI releases run the chunks of one model call in parallel threads (one per GPU) on clones that
    share the pack's state: each thread must see its own call (latent shape, hand-offs), never another's."""
    from tokenmerge.patching.apply import _call_wrapper
    from tokenmerge.patching.config import MergeConfig, Method
    from tokenmerge.patching.state import MergeState
    from tokenmerge.patching.unet import UNetMerger

    state = MergeState()
    config = MergeConfig(Method.TOME, ratio=0.5, max_downsample=1)
    wrapper = _call_wrapper(state, config, UNetMerger(config, state))
    barrier = threading.Barrier(2, timeout=30)
    seen = {}

    def executor(x, *args, **kwargs):
        state.sublayer_calls[("block", 0)] = x.shape[0]
        barrier.wait()  # both threads have set their call
        seen[threading.current_thread().name] = (state.call.latent_shape, state.sublayer_calls[("block", 0)])
        barrier.wait()  # both have read theirs before either clears it
        return x

    def chunk(batch: int) -> None:
        wrapper(executor, torch.zeros(batch, 4, 8, 8), torch.zeros(batch), transformer_options={"cond_or_uncond": [0]})

    threads = [threading.Thread(target=chunk, args=(batch,), name=f"chunk{batch}") for batch in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"chunk1": ((1, 4, 8, 8), 1), "chunk2": ((2, 4, 8, 8), 2)}
    assert state.call is None

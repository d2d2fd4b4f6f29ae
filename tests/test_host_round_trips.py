"""The block-call path reads nothing back to the host and creates nothing off the tokens' device.

While the diffusion model runs (forward hooks on it), a ``TorchDispatchMode`` sees every ``aten._local_scalar_dense``
(what ``.item()``, ``float(t)``, ``bool(t)`` and ``.tolist()`` run) and a ``TorchFunctionMode`` sees every tensor
factory called without a ``device`` and every ``.to(device)``, ``.cpu()`` and ``.cuda()``. Each is charged to the
first Python frame outside torch; none may come from the pack's ``merging/`` or ``patching/``. On a CPU machine a
factory without a device would still work, so this is how the test catches the copies it would cost on a GPU.
What the call wrapper reads once per model call (the step and sigma) runs outside the diffusion model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.utils._device
from conftest import merge_with, sample, state_of
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from devkit import tiny_models

REPO = Path(__file__).resolve().parent.parent
PACK_DIRS = (str(REPO / "merging"), str(REPO / "patching"))
TORCH_DIR = str(Path(torch.__file__).parent)
FACTORIES = torch.utils._device._device_constructors()
DEVICE_MOVES = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda}


def caller() -> str | None:
    """``file:line`` of the first frame outside torch and this test, if it is in the pack."""
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith(TORCH_DIR) or frame.f_code.co_filename == __file__
    ):
        frame = frame.f_back
    if frame is None or not frame.f_code.co_filename.startswith(PACK_DIRS):
        return None
    return f"{Path(frame.f_code.co_filename).relative_to(REPO)}:{frame.f_lineno}"


class HostReads(TorchDispatchMode):
    def __init__(self, found: list[str]) -> None:
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and (where := caller()):
            self.found.append(f"host read at {where}")
        return func(*args, **(kwargs or {}))


class DevicePlacement(TorchFunctionMode):
    def __init__(self, found: list[str]) -> None:
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None and (where := caller()):
            self.found.append(f"{func.__name__} without a device at {where}")
        elif (
            func in DEVICE_MOVES
            and (func is not torch.Tensor.to or _moves_device(args, kwargs))
            and (where := caller())
        ):
            self.found.append(f"device copy at {where}")
        return func(*args, **kwargs)


def _moves_device(args: tuple, kwargs: dict) -> bool:
    targets = [*args[1:], kwargs.get("device")]
    return any(
        isinstance(t, (str, torch.device)) or (isinstance(t, torch.Tensor) and t is not args[0])
        for t in targets
        if t is not None
    )


def watch(patcher) -> tuple[list[str], list]:
    """Install the two modes around every forward of ``patcher``'s diffusion model; returns (findings, handles)."""
    found: list[str] = []
    modes: list = []

    def enter(_module, _args):
        modes.append((HostReads(found), DevicePlacement(found)))
        for mode in modes[-1]:
            mode.__enter__()

    def leave(_module, _args, _output):
        for mode in reversed(modes.pop()):
            mode.__exit__(None, None, None)

    model = patcher.model.diffusion_model
    return found, [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]


CASES = {
    "sd15-importance-ff-attn2": ("sd15", "importance", {"merge_feed_forward": True, "merge_cross_attention": True}),
    "sdxl-tome": ("sdxl", "tome", {}),
    "sd3-importance": ("sd3", "importance", {}),
    "sd3-sdtm": ("sd3", "sdtm", {}),
    "flux-sdtm": ("flux", "sdtm", {}),
    "flux-tome": ("flux", "tome", {}),
    "flux2-importance": ("flux2", "importance", {}),
    "qwen_image-importance": ("qwen_image", "importance", {}),
    "lumina2-sdtm": ("lumina2", "sdtm", {}),
    "zimage-importance": ("zimage", "importance", {}),
    "pixart_alpha-sdtm": ("pixart_alpha", "sdtm", {}),
    "pixart_alpha-importance": ("pixart_alpha", "importance", {}),
    "wan21-importance": ("wan21", "importance", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_block_calls_read_nothing_back_and_stay_on_the_device(pack, case):
    name, method, options = CASES[case]
    family = tiny_models.FAMILIES[name]
    patched = merge_with(tiny_models.build_patcher(name, seed=0, scale=0.5), method, **options)
    found, handles = watch(patched)
    try:
        side = max(family.min_side, 128)
        latent = sample(patched, family, steps=6, height=side, width=side + 48, frames=5)
    finally:
        for handle in handles:
            handle.remove()
    counters = state_of(patched).counters
    assert torch.isfinite(latent).all()
    assert counters["merged_calls"] > 0
    if method == "sdtm":
        assert counters["protected_calls"] > 0
    assert found == [], "\n".join(sorted(set(found)))


def test_the_watch_sees_a_host_read_and_a_factory_without_device_in_pack_code(pack):
    """The instrument itself: pack code that reads a value back or builds a CPU tensor is reported."""
    from tokenmerge.merging import draws, tome
    from tokenmerge.patching import steps

    found: list[str] = []
    with HostReads(found), DevicePlacement(found):
        tome.window_destinations(1, 4, 4, seed=None)  # passes device=None to its factories
        steps.current_sigma({"sigmas": torch.tensor([2.0])})  # float(tensor): what the call wrapper may do
        int(draws.random_bits(3, 4).sum())  # a read in this test, not in the pack: not charged
    assert any("zeros without a device at merging/tome.py" in f for f in found), found
    assert any("host read at patching/steps.py" in f for f in found), found
    assert len([f for f in found if "host read" in f]) == 1

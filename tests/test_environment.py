"""The dev/test environment is what scripts/setup_env.sh promises: a real ComfyUI (0.3.75, or 0.33.0 in
``.comfyui33``) on a CPU torch."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess

import torch


def _machine_has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


def test_torch_is_the_cpu_build_on_a_machine_without_gpu():
    if _machine_has_gpu():
        return  # a GPU machine may carry a CUDA build; the check below is for CPU machines only
    assert torch.version.cuda is None
    assert torch.__version__.endswith("+cpu")
    nvidia = sorted(
        d.metadata["Name"]
        for d in importlib.metadata.distributions()
        if d.metadata["Name"].lower().startswith("nvidia-")
    )
    assert nvidia == []


def test_comfyui_is_the_pinned_release_running_on_cpu():
    import comfy.model_management
    import comfyui_version

    from devkit import EXPECTED_COMFYUI

    assert comfyui_version.__version__ == EXPECTED_COMFYUI
    assert comfy.model_management.get_torch_device().type == "cpu"

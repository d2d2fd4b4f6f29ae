"""The unit tier needs torch alone: run by itself, it imports no ComfyUI module."""

from __future__ import annotations

import sys

import pytest


def test_a_unit_tier_run_imports_no_comfyui(pack):
    if getattr(pack, "__file__", None):  # the whole pack, from its __init__.py: ComfyUI is loaded in this run
        pytest.skip("this run includes the ComfyUI tiers; `make unit` runs the unit tier alone")
    assert not [name for name in sys.modules if name == "comfy" or name.startswith(("comfy.", "comfy_api"))]
    assert not [
        name
        for name in sys.modules
        if name.startswith("tokenmerge.") and "merging" not in name and "patching" not in name
    ]  # neither the nodes nor anything else that needs ComfyUI

"""Make the real ComfyUI (``.comfyui/ComfyUI``, made by ``scripts/setup_env.sh``) importable in-process.

Handles two ordering traps of importing ComfyUI as a library:

1. ``comfy.cli_args`` parses ``[]`` when imported as a library, so ``args.cpu = True`` must be set
   before anything imports ``comfy.model_management`` (which otherwise asserts CUDA).
2. ``nodes.py`` puts ``ComfyUI/comfy/`` first on ``sys.path``; a later bare ``import utils`` would then
   find ``comfy/utils.py`` and ``import server`` fails. Binding ``utils`` to ``ComfyUI/utils/`` first
   (as ``main.py`` does) avoids it.

It also loads this repository as the package ``tokenmerge``, exactly as ComfyUI loads a custom node
pack (a package whose name is not its folder's), so tests never import it by directory name.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import COMFYUI_DIR, REPO_ROOT

if TYPE_CHECKING:
    from types import ModuleType

PACK_MODULE_NAME = "tokenmerge"


def comfyui_dir() -> Path:
    """The ComfyUI checkout to use: ``$COMFYUI_DIR`` or the one ``scripts/setup_env.sh`` made."""
    path = Path(os.environ.get("COMFYUI_DIR", COMFYUI_DIR))
    if not (path / "comfy" / "model_management.py").is_file():
        raise RuntimeError(f"No ComfyUI at {path}: run `bash scripts/setup_env.sh` (or `make test`) first.")
    return path


def bootstrap_comfyui(threads: int = 2, *, pytorch_attention: bool = False, device: str = "cpu") -> Path:
    """Import the real ComfyUI in-process, forced onto the CPU (``device="cuda"``: on the GPU, for the GPU
    benchmarks). Idempotent; returns its directory.

    ``pytorch_attention`` selects PyTorch SDPA (``--use-pytorch-cross-attention``) instead of ComfyUI's CPU
    default (sub-quadratic attention); like the flag, it only takes effect on the first import.
    """
    path = comfyui_dir()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from comfy.cli_args import args

    if "comfy.model_management" not in sys.modules:
        args.cpu = device == "cpu"
        args.use_pytorch_cross_attention = pytorch_attention
    import comfy.model_management
    import utils.extra_config  # noqa: F401  binds 'utils' to ComfyUI/utils/ before nodes.py runs

    if comfy.model_management.get_torch_device().type != device:
        raise RuntimeError(f"ComfyUI was imported before bootstrap_comfyui() could choose the {device}")
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)
    return path


def comfyui_imported() -> bool:
    """Whether :func:`bootstrap_comfyui` (or anything else) imported ComfyUI into this process."""
    return "comfy.model_management" in sys.modules


def import_algorithms() -> ModuleType:
    """The package ``tokenmerge`` for its pure modules (``tokenmerge.merging.*``, ``tokenmerge.patching.config``,
    ``tokenmerge.shapes``, ...): the whole pack (:func:`import_pack`) where ComfyUI is imported, else the package
    without its ``__init__.py`` (which registers the nodes and needs ComfyUI), with torch alone: the unit tier of
    the tests, the training kit. A later :func:`import_pack` in the same process would find that bare package, so
    import ComfyUI first where both are needed."""
    if PACK_MODULE_NAME in sys.modules:
        return sys.modules[PACK_MODULE_NAME]
    if comfyui_imported():
        return import_pack()
    spec = importlib.util.spec_from_loader(PACK_MODULE_NAME, loader=None, is_package=True)
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(REPO_ROOT)]
    sys.modules[PACK_MODULE_NAME] = module
    return module


def import_pack() -> ModuleType:
    """Import this repository as the package ``tokenmerge`` (the way ComfyUI imports a node pack)."""
    if PACK_MODULE_NAME in sys.modules:
        return sys.modules[PACK_MODULE_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_MODULE_NAME]
        raise
    return module

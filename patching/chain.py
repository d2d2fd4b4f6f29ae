"""How this pack's patches stay removable: every block replace and object patch it installs is marked as ours and
keeps the patch it was chained to, so a later tokenmerge node on the same model can take ours out again and leave
every foreign patch in place (``apply.py``)."""

from __future__ import annotations

from typing import Any

import torch

PREVIOUS = "tokenmerge_previous"  # on our chained replaces and object patches: what they call (None: the block)


def chained(patch: Any, previous: Any) -> Any:
    """Mark ``patch`` as ours, chained to ``previous``, so a later tokenmerge node can take it out again."""
    setattr(patch, PREVIOUS, previous)
    return patch


def unchained(patch: Any) -> Any:
    """``patch`` without our links in its chain: the foreign patch below them, or ``None`` for the model's own."""
    while hasattr(patch, PREVIOUS):
        patch = getattr(patch, PREVIOUS)
    module = getattr(patch, "__self__", None)  # an nn.Module's own bound forward: no object patch at all
    if isinstance(module, torch.nn.Module) and getattr(patch, "__func__", None) is type(module).forward:
        return None
    return patch


def chain_object_patch(patched: Any, name: str, make: Any) -> None:
    """Object-patch ``name`` (``diffusion_model.<path>.forward``) of ``patched`` with ``make(previous)``, chained to
    the callable found there (a foreign pack's patch, or the module's own ``forward``)."""
    previous = patched.get_model_object(name)
    patched.add_object_patch(name, chained(make(previous), previous))

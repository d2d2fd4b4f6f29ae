"""The pack's V3 nodes: thin classes that validate inputs, build a frozen config and patch a clone.

Every node module exposes a ``NODES`` list; :func:`comfy_entrypoint` gathers them into one
extension. Node ids are prefixed ``TokenMerge`` and never change (saved workflows refer to them).
"""

from __future__ import annotations

from . import demo_prompt, importance, preview, sdtm
from ._comfy_api import ComfyExtension, io

NODE_MODULES = (importance, sdtm, preview, demo_prompt)


class TokenMergeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in NODE_MODULES for node in module.NODES]


async def comfy_entrypoint() -> TokenMergeExtension:
    return TokenMergeExtension()

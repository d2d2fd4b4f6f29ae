"""Import shim for ComfyUI's V3 node API: the stable numbered version first, then ``latest``.

``ComfyExtension`` always comes from ``comfy_api.latest``: ComfyUI's loader checks the entry point's result with
``isinstance(..., comfy_api.latest.ComfyExtension)``, whatever a numbered version re-exports.
"""

import inspect

from comfy_api.latest import ComfyExtension

try:
    from comfy_api.v0_0_2 import io, ui
except ImportError:  # a ComfyUI that dropped v0_0_2
    from comfy_api.latest import io, ui

# Inputs accept ``advanced=True`` (folded away in the node's expert section) only in ComfyUI releases
# newer than 0.3.75; older ones reject the keyword, so it is passed only where it is understood.
ADVANCED = {"advanced": True} if "advanced" in inspect.signature(io.Float.Input.__init__).parameters else {}

__all__ = ["ADVANCED", "ComfyExtension", "io", "ui"]

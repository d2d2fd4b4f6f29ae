"""Import shim for ComfyUI's V3 node API: the stable numbered version first, then ``latest``."""

import inspect

try:
    from comfy_api.v0_0_2 import ComfyExtension, io, ui
except ImportError:  # a ComfyUI that dropped v0_0_2
    from comfy_api.latest import ComfyExtension, io, ui

# Inputs accept ``advanced=True`` (folded away in the node's expert section) only in ComfyUI releases
# newer than 0.3.75; older ones reject the keyword, so it is passed only where it is understood.
ADVANCED = {"advanced": True} if "advanced" in inspect.signature(io.Float.Input.__init__).parameters else {}

__all__ = ["ADVANCED", "ComfyExtension", "io", "ui"]

"""Import shim for ComfyUI's V3 node API: the stable numbered version first, then ``latest``."""

try:
    from comfy_api.v0_0_2 import ComfyExtension, io, ui
except ImportError:  # a ComfyUI that dropped v0_0_2
    from comfy_api.latest import ComfyExtension, io, ui

__all__ = ["ComfyExtension", "io", "ui"]

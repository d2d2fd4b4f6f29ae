"""Token merging for ComfyUI: importance-based (IBTM), structure-then-detail (SDTM) and spatial ToMe.

ComfyUI loads this package as a custom node pack and calls :func:`comfy_entrypoint`. Outside
ComfyUI (pure tests, tools) the import succeeds and simply registers nothing.
"""

WEB_DIRECTORY = "./web"

try:
    from .nodes import comfy_entrypoint
except ModuleNotFoundError as exc:  # outside ComfyUI: comfy / comfy_api are not importable
    if (exc.name or "").split(".")[0] not in ("comfy", "comfy_api"):
        raise
    __all__ = ["WEB_DIRECTORY"]
else:
    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]

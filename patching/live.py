"""Live heatmap in the graph editor: each new importance map is sent to the previews that asked for it.

The event ``tokenmerge.heatmap`` carries ``{"node", "step", "steps", "sigma", "image"}`` where ``image`` is a
``data:image/png;base64,...`` URL of the colour-mapped map of the first sample (at most ``LIVE_SIDE`` pixels
per side). ``web/tokenmerge.js`` draws it on the preview node. Outside a server (scripts, tests
in-process) nothing is sent.
"""

from __future__ import annotations

import base64
import io
import sys
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..merging.heatmap import colorize, normalize, resize_rgb

if TYPE_CHECKING:
    from .recorder import StepRecord

EVENT = "tokenmerge.heatmap"
LIVE_SIDE = 256


def png_data_url(rgb: torch.Tensor) -> str:
    """[H, W, 3] float 0..1 -> ``data:image/png;base64,...``."""
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def live_frame(record: StepRecord, colormap: str) -> str:
    """The first sample's map of ``record``, colour-mapped and scaled up to ``LIVE_SIDE`` on its long side."""
    heat = colorize(normalize(record.importance[:1].float()), colormap)  # [1, h, w, 3]
    h, w = heat.shape[1:3]
    factor = LIVE_SIDE / max(h, w)
    return png_data_url(resize_rgb(heat, round(h * factor), round(w * factor))[0])


def publish(targets: dict[str, str], record: StepRecord) -> None:
    """Send ``record`` to every target preview node (id -> colormap), if a server is running."""
    module = sys.modules.get("server")  # ComfyUI's server module; never imported from here
    server = getattr(getattr(module, "PromptServer", None), "instance", None)
    if server is None or record.importance is None:
        return
    frames = {colormap: live_frame(record, colormap) for colormap in set(targets.values())}  # one PNG each
    for node, colormap in targets.items():
        payload = {
            "node": node,
            "step": record.step + 1,
            "steps": record.steps,
            "sigma": record.sigma,
            "image": frames[colormap],
        }
        server.send_sync(EVENT, payload, server.client_id)

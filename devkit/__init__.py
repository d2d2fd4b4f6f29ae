"""Developer kit: the real-ComfyUI environment, tiny random-weight models of the supported families,
a client for a real ComfyUI server, and UI-to-API workflow conversion.

Used by ``tests/`` and ``scripts/``; not shipped to users (see ``.comfyignore``).
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The environment scripts/setup_env.sh made: .comfyui (ComfyUI 0.3.75) or, with TOKENMERGE_ENV_DIR, another one
# (.comfyui33: ComfyUI 0.33.0).
ENV_DIR = REPO_ROOT / os.environ.get("TOKENMERGE_ENV_DIR", ".comfyui")
COMFYUI_DIR = ENV_DIR / "ComfyUI"
VENV_PYTHON = ENV_DIR / "venv" / "bin" / "python"

# Version-specific expectations, in one place. The environments and the ComfyUI release each holds; the committed
# example workflows are generated on the pinned one (newer releases add outputs to some nodes, e.g. SaveImage's
# IMAGE in 0.33, so their UI files differ from the committed ones while loading and running the same).
COMFYUI_RELEASES = {".comfyui": "0.3.75", ".comfyui33": "0.33.0"}
PINNED_COMFYUI = "0.3.75"
EXPECTED_COMFYUI = COMFYUI_RELEASES.get(ENV_DIR.name, PINNED_COMFYUI)
# Releases whose Z-Image (NextDiT) takes reference images (Z-Image Omni: reference latents in the layers' sequence,
# modulated by token range with the zero timestep); 0.3.75's takes none.
ZIMAGE_REFERENCE_RELEASES = {"0.33.0"}

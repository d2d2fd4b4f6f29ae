"""Developer kit: the real-ComfyUI environment, tiny random-weight models of the supported families,
a client for a real ComfyUI server, and UI-to-API workflow conversion.

Used by ``tests/`` and ``scripts/``; not shipped to users (see ``.comfyignore``).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = REPO_ROOT / ".comfyui"
COMFYUI_DIR = ENV_DIR / "ComfyUI"
VENV_PYTHON = ENV_DIR / "venv" / "bin" / "python"

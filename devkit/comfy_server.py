"""Start a real ComfyUI server (``main.py --cpu``) with this pack installed, and talk to it over HTTP.

Each server gets its own base directory (``--base-directory``): ``custom_nodes/tokenmerge`` links to
this repository, ``models`` links to a shared folder of stand-in model files, and input, output,
temp and user folders stay out of the ComfyUI checkout. The server is stopped by the PID it was
started with. Only the standard library is used, so the demo runs with no extra packages.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from . import ENV_DIR, REPO_ROOT, VENV_PYTHON
from .comfy_env import comfyui_dir

PACK_DIR_NAME = "tokenmerge"
STANDIN_MODELS_DIR = ENV_DIR / "standin_models"


class ComfyServerError(RuntimeError):
    """The server failed to start, or a prompt failed; the message carries the server's answer or log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """A real ComfyUI server process on a loopback port, plus a small client for its HTTP API."""

    def __init__(
        self,
        base_dir: Path,
        models_dir: Path = STANDIN_MODELS_DIR,
        extra_args: tuple[str, ...] = (),
        *,
        pytorch_attention: bool = True,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.models_dir = Path(models_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "server.log"
        self.extra_args = (*(("--use-pytorch-cross-attention",) if pytorch_attention else ()), *extra_args)
        self.client_id = uuid.uuid4().hex
        self.process: subprocess.Popen | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def _prepare_base_dir(self) -> None:
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        for link, target in (
            (self.base_dir / "custom_nodes" / PACK_DIR_NAME, REPO_ROOT),
            (self.base_dir / "models", self.models_dir),
        ):
            if not link.is_symlink():
                link.symlink_to(target, target_is_directory=True)
        # the image a fresh ComfyUI install has in input/ (the editing example loads it)
        example = comfyui_dir() / "input" / "example.png"
        if example.is_file() and not (self.base_dir / "input" / example.name).exists():
            shutil.copyfile(example, self.base_dir / "input" / example.name)

    def start(self, timeout: float = 120.0) -> ComfyServer:
        if self.process is not None and self.process.poll() is None:
            raise ComfyServerError("this server is already running (use either start() or a with block)")
        self._prepare_base_dir()
        cmd = [
            str(VENV_PYTHON),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(cmd, cwd=comfyui_dir(), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyServerError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get_json("/system_stats")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
            else:
                return self
        self.stop()
        raise ComfyServerError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def __enter__(self) -> ComfyServer:  # noqa: PYI034  the class is not meant to be subclassed
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------------------------ HTTP client
    def request(self, path: str, data: dict | None = None, timeout: float = 30.0) -> bytes:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(
            self.url + path,
            data=body,  # only our own loopback URL
            headers={"Content-Type": "application/json"} if body else {},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str) -> Any:
        return json.loads(self.request(path, timeout=5.0))

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{node_class}" if node_class else ""))

    def queue(self, prompt: dict) -> str:
        """POST an API-format graph to ``/prompt``; returns the prompt id (validation errors raise)."""
        try:
            answer = json.loads(self.request("/prompt", {"prompt": prompt, "client_id": self.client_id}))
        except urllib.error.HTTPError as err:
            raise ComfyServerError(f"/prompt refused the graph: {err.read().decode(errors='replace')}") from err
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll ``/history/<id>`` until the prompt finished; returns its history entry (failures raise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") != "success":
                    messages = json.dumps(entry["status"].get("messages", []), indent=1)[-4000:]
                    raise ComfyServerError(f"prompt {prompt_id} failed: {messages}")
                return entry
            if self.process is not None and self.process.poll() is not None:
                raise ComfyServerError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def view(self, image: dict) -> bytes:
        """Bytes of an output/temp image described by a history entry (``filename``, ``subfolder``, ``type``)."""
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return self.request(f"/view?{query}")

"""Shared pieces of the demo trainings: resumable checkpoints, a wall-time log, paths and seeds.

Every training runs in chunks: ``--steps`` is the total, a checkpoint (model, optimiser, step, elapsed
seconds) is written to ``.comfyui/shapes_checkpoints/`` every ``save_every`` steps, and a rerun continues
from it. The checkpoints are not committed (they are several times the weights' size), so a fresh clone
continues from the committed export instead (:meth:`Run.start_from`), with a fresh optimiser. The log
(``devkit/shapes_training/logs/<name>.log``, committed) records the loss and the accumulated wall time, so the training
budget is on record.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch

from devkit import REPO_ROOT
from devkit.shapes_training.scenes import SIDE

DEMO_MODELS = REPO_ROOT / "demo_models"
CHECKPOINTS = REPO_ROOT / ".comfyui" / "shapes_checkpoints"
LOGS = Path(__file__).resolve().parent / "logs"
# Held-out scene seeds: training draws from seeds below 1_000_000 only.
TRAIN_SEED = 1
EVAL_SEED = 1_000_003


class Run:
    """A resumable training run: owns the checkpoint and the log of ``name``."""

    def __init__(self, name: str, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> None:
        self.name, self.modules, self.optimizer = name, modules, optimizer
        self.path = CHECKPOINTS / f"{name}.pt"
        self.step, self.elapsed = 0, 0.0
        self.optimiser_from = 0  # the step this optimiser's state began at (its warm-up counts from there)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        if self.path.exists():
            state = torch.load(self.path, weights_only=True)
            for key, module in modules.items():
                module.load_state_dict(state[key])
            optimizer.load_state_dict(state["optimizer"])
            self.step, self.elapsed = state["step"], state["elapsed"]
            self.optimiser_from = state.get("optimiser_from", 0)
            self.log(f"resumed at step {self.step} ({self.elapsed / 60:.1f} min so far)")
        self._started = time.perf_counter()
        self._base = self.elapsed

    @property
    def resumed(self) -> bool:
        return self.step > 0

    def start_from(self, step: int, elapsed: float, source: str) -> None:
        """Count this run as continuing at ``step`` (``elapsed`` seconds so far), its weights loaded by the caller
        from ``source``; the optimiser state starts afresh."""
        self.step, self.elapsed, self.optimiser_from = step, elapsed, step
        self._base = elapsed
        self.log(f"started from {source} at step {step} ({elapsed / 60:.1f} min so far), fresh optimiser")

    def last_export(self) -> tuple[int, float]:
        """(step, elapsed seconds) of the last export this run's log records: what the committed file holds."""
        return logged_export(self.name)

    def wall(self) -> float:
        return self._base + time.perf_counter() - self._started

    def log(self, line: str) -> None:
        line = f"[{self.name}] {line}"
        print(line, flush=True)
        with self.log_path.open("a") as handle:
            handle.write(line + "\n")

    def set_lr(self, lr: float) -> None:
        """Every parameter group at ``lr`` (a resumed chunk may run at another rate than the checkpoint's)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def warm_up_lr(self, lr: float, steps: int = 100) -> None:
        """``lr``, ramped up linearly over the first ``steps`` of this optimiser (a fresh one after
        ``start_from``)."""
        self.set_lr(lr * min(1.0, (self.step - self.optimiser_from + 1) / steps))

    def optimise(self, loss: torch.Tensor, clip_norm: float | None = None) -> None:
        """One optimiser step on ``loss``, with the gradient norm clipped to ``clip_norm`` when given."""
        self.backward(loss)
        self.apply_gradients(clip_norm)

    def backward(self, loss: torch.Tensor) -> None:
        """The gradients of ``loss`` alone (the first half of :meth:`optimise`)."""
        self.optimizer.zero_grad()
        loss.backward()

    def apply_gradients(self, clip_norm: float | None = None) -> None:
        """The optimiser step on the gradients :meth:`backward` left (the second half of :meth:`optimise`)."""
        if clip_norm is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        self.optimizer.step()

    def advance(self, loss: torch.Tensor, steps: int, log_every: int, save_every: int) -> None:
        """Count the step; log the loss every ``log_every`` steps, checkpoint every ``save_every`` and at ``steps``."""
        self.step += 1
        if self.step % log_every == 0:
            self.log(f"step {self.step} loss {loss.item():.4f} wall {self.wall() / 60:.1f} min")
        if self.step % save_every == 0 or self.step == steps:
            self.save()

    def save(self) -> None:
        CHECKPOINTS.mkdir(parents=True, exist_ok=True)
        state = {key: module.state_dict() for key, module in self.modules.items()}
        state |= {
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.wall(),
            "optimiser_from": self.optimiser_from,
        }
        torch.save(state, str(self.path) + ".tmp")
        Path(str(self.path) + ".tmp").replace(self.path)


def logged_export(name: str) -> tuple[int, float]:
    """(step, elapsed seconds) of the last export the log of run ``name`` records. An export that was not kept is
    followed by a ``restored ... step N`` line, which names the step it went back to."""
    log_path = LOGS / f"{name}.log"
    text = log_path.read_text() if log_path.exists() else ""
    exports = re.findall(rf"\[{re.escape(name)}\] (?:exported|restored)\D*step (\d+)", text)
    if not exports:
        raise FileNotFoundError(f"{log_path} records no export to start from")
    step = int(exports[-1])
    walls = re.findall(rf"\[{re.escape(name)}\] step {step} loss \S+ wall ([\d.]+) min", text)
    return step, float(walls[-1]) * 60 if walls else 0.0


def denoiser_file_name(family: str, side: int = SIDE) -> str:
    """The UNETLoader file name of ``family``'s denoiser trained on ``side`` px scenes: the committed name at 128 px,
    a name of its own at another side, so that a run at one side never overwrites another side's file."""
    suffix = "" if side == SIDE else f"_{side}"
    return f"tokenmerge_shapes_{family}{suffix}.safetensors"


# The committed demo model files, by the ComfyUI models sub-folder they belong in.
DEMO_FILES = {
    "vae": ("tokenmerge_shapes_taesd.safetensors", "tokenmerge_shapes_taesd3.safetensors"),
    "diffusion_models": (
        "tokenmerge_shapes_sd15.safetensors",
        "tokenmerge_shapes_sd3.safetensors",
        denoiser_file_name("sd3", 256),
    ),
}


def link_demo_models(models_dir: Path) -> list[Path]:
    """Symlink the committed demo models into a ComfyUI models folder (``models_dir/vae``, ...)."""
    linked = []
    for sub, names in DEMO_FILES.items():
        for name in names:
            source = DEMO_MODELS / sub / name
            if not source.exists():
                raise FileNotFoundError(f"demo model {source} is missing (see devkit/shapes_training/README.md)")
            linked.append(_link(source, Path(models_dir) / sub / name))
    return linked


def _link(source: Path, link: Path) -> Path:
    """``link``, made a symlink to ``source`` unless it is one already."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(source)
    return link

"""Token Merge Heatmap Preview: shows where CFG put the important content and which tokens were merged.

Thin node: it reads the records of the patched model's :class:`HeatmapRecorder` and renders them with
``merging/heatmap.py``. Its presence in a queued prompt makes the merging node upstream record; while
sampling runs, ``web/tokenmerge.js`` draws the live map on it.
"""

from __future__ import annotations

import logging
import re

import torch

from ..merging.heatmap import COLORMAPS, render_steps
from ..patching.apply import STATE_ATTACHMENT
from ..patching.graph import DEFAULT_COLORMAP, PREVIEW_NODE_ID
from ._comfy_api import io, ui
from .common import CATEGORY, float_input, int_input

logger = logging.getLogger(__name__)

IMPORTANCE_VIEW = "importance"
ASSIGNMENT_VIEW = "merge assignment"
STEPS_PATTERN = re.compile(r"^\s*(last|all|\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*)\s*$", re.IGNORECASE)
STEPS_HELP = "use last, all, or 1-based step numbers and ranges such as 1,5,10-12"


def check_steps(text: str) -> str | None:
    """``None`` when ``text`` is a valid steps selection, else the error message naming the input."""
    if not STEPS_PATTERN.match(text):
        return f"steps={text!r} is not valid: {STEPS_HELP}"
    for low, high in re.findall(r"(\d+)\s*-\s*(\d+)", text):
        if int(low) < 1 or int(high) < int(low):
            return f"steps={text!r}: the range {low}-{high} is empty or starts below 1"
    if any(int(n) < 1 for n in re.findall(r"\d+", text)):
        return f"steps={text!r}: step numbers start at 1"
    return None


def select_steps(text: str, recorded: list[int]) -> list[int]:
    """Recorded 0-based steps chosen by a valid ``text``; a requested step that was not recorded (long runs keep
    a thinned set) maps to the nearest recorded one."""
    word = text.strip().lower()
    if word == "last":
        return recorded[-1:]
    if word == "all":
        return recorded
    wanted = []
    for part in word.split(","):
        low, _, high = part.partition("-")
        wanted.extend(range(int(low) - 1, int(high or low)))
    chosen = {min(recorded, key=lambda s: (abs(s - w), s)) for w in wanted}
    return sorted(chosen)


def step_label(step: int, steps: int, sigma: float) -> str:
    """The label under the tile of 0-based ``step`` of ``steps``, e.g. ``step 3/20 sigma 7.33``."""
    return f"step {step + 1}/{steps} sigma {sigma:.2f}"


def _shown(node: type[io.ComfyNode], images) -> io.NodeOutput:
    """``images`` as the node's output; the node itself shows the first sample's, so that its tiles and labels stay
    readable at the node's width (a batch of grids side by side would shrink each to a few dozen pixels)."""
    return io.NodeOutput(images, ui=ui.PreviewImage(images[:1], cls=node))


class TokenMergeHeatmapPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREVIEW_NODE_ID,
            display_name="Token Merge Heatmap Preview",
            category=CATEGORY,
            description="Shows the CFG importance maps that drive token merging (where the prompt-relevant content "
            "is), or which tokens a block kept, merged or used as destinations, step by step. Live "
            "during sampling; recording costs nothing when no preview is connected. The node shows the first "
            "sample; its IMAGE output holds a grid for every sample.",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The MODEL output of a Token Merge node (or a model patched from "
                    "it); its recorder holds the maps.",
                ),
                io.Image.Input(
                    "images",
                    tooltip="The decoded images: the heatmap is laid over them, and this "
                    "input makes the preview run after sampling.",
                ),
                io.String.Input(
                    "steps",
                    default="last",
                    tooltip=f"Which steps to show: {STEPS_HELP}. Long runs keep at most 32 steps "
                    "spread over the run; a step not kept shows its nearest kept one.",
                ),
                io.Combo.Input(
                    "colormap",
                    options=list(COLORMAPS),
                    default=DEFAULT_COLORMAP,
                    tooltip="Colours from low to high importance.",
                ),
                float_input(
                    "overlay_alpha",
                    "Weight of the heatmap over the image: 0 shows the image, 1 only the map.",
                    advanced=False,
                ),
                io.Combo.Input(
                    "view",
                    options=[IMPORTANCE_VIEW, ASSIGNMENT_VIEW],
                    default=IMPORTANCE_VIEW,
                    tooltip="importance: |cond - uncond| of each step. merge assignment: the tokens "
                    "of one block, kept (grey), merged away (blue) or destination (orange).",
                ),
                int_input(
                    "block",
                    "Merge assignment view: which merged block to show, in the order the blocks first merged "
                    "(0 = the first).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    tooltip="The heatmap grid, one image per sample: a labelled tile per step, and a legend of "
                    "the colours. The node shows the first sample's; connect a Preview Image to see them all."
                )
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, steps: str | None = None) -> bool | str:
        # A linked steps input is not known yet here; check_steps then runs when the node does.
        return True if steps is None else (check_steps(steps) or True)

    @classmethod
    def execute(
        cls, model, images, steps: str, colormap: str, overlay_alpha: float, view: str, block: int = 0
    ) -> io.NodeOutput:
        state = model.get_attachment(STATE_ATTACHMENT)
        if state is None:
            logger.warning(
                "tokenmerge: the preview's model is not patched by a Token Merge node (or its ratio "
                "is 0): nothing to show, the images pass through"
            )
            return _shown(cls, images)
        recorder = state.recorder
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        recorder.request({str(node_id): colormap} if node_id is not None else None)  # and for later runs
        records = recorder.take()
        if view == IMPORTANCE_VIEW:
            records = {s: r for s, r in records.items() if r.importance is not None}
        else:
            records = {s: r for s, r in records.items() if r.assignments}
        if not records:
            logger.warning(
                "tokenmerge: nothing was recorded for this preview: the sampler's result came from the "
                "cache (queue again with another seed) or no step merged; the images pass through"
            )
            return _shown(cls, images)
        problem = check_steps(steps)
        if problem:
            raise ValueError(problem)
        chosen = [records[s] for s in select_steps(steps, list(records))]
        if view == IMPORTANCE_VIEW:
            maps = [r.importance for r in chosen]
        else:
            if block >= len(recorder.block_order):
                raise ValueError(
                    f"block={block} is out of range: allowed 0 to {len(recorder.block_order) - 1} "
                    f"(this run merged {len(recorder.block_order)} blocks)"
                )
            key = recorder.block_order[block]
            shape = next(r.assignments[key].shape for r in records.values() if key in r.assignments)
            # A step where this block did not merge shows all its tokens kept (category 0).
            maps = [
                r.assignments[key] if key in r.assignments else torch.zeros(shape, dtype=torch.uint8) for r in chosen
            ]
        labels = [step_label(r.step, r.steps, r.sigma) for r in chosen]
        grid = render_steps(
            maps, labels, images=images, alpha=overlay_alpha, colormap=colormap if view == IMPORTANCE_VIEW else None
        )
        return _shown(cls, grid)


NODES = [TokenMergeHeatmapPreview]

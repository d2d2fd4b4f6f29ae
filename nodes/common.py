"""What every merging node shares: its category and hidden inputs, inputs built from the settings table, the
queue-time check of the inputs that constrain each other, and the patched output.

Ranges and defaults come from :data:`~..patching.settings.SETTINGS`, the table :class:`MergeConfig` checks against,
so every value a slider offers is one the node accepts, and an input that constrains another is refused when the
prompt is queued (``validate_inputs``), before any node of the workflow samples.
"""

from __future__ import annotations

from ..patching.apply import apply_token_merge
from ..patching.config import MergeConfig, Method, cross_field_problems
from ..patching.graph import preview_consumers
from ..patching.settings import SETTINGS, Setting
from ._comfy_api import ADVANCED, io

CATEGORY = "tokenmerge"

# Every merging node sees the queued prompt, to record heatmaps when a preview downstream reads its model.
# Its schema is not_idempotent, so another node with the same inputs (in another workflow) never hands over a
# patched clone recording for other previews.
HIDDEN = [io.Hidden.prompt, io.Hidden.unique_id]

SEED_TOOLTIP = (
    "Seed of the merge's own draws (which tokens become destinations); not the sampler's seed, whose "
    "RNG is untouched. Fixed after each run unless you set its control to randomize."
)


def float_input(
    name: str, tooltip: str, *, setting: Setting | None = None, optional: bool = False, advanced: bool = True
) -> io.Float.Input:
    """A FLOAT slider with the range and default of ``SETTINGS[name]`` (or of ``setting``, a node's variant)."""
    spec = setting or SETTINGS[name]
    return io.Float.Input(
        name,
        default=spec.default,
        min=spec.low,
        max=spec.high,
        step=spec.step,
        optional=optional,
        tooltip=tooltip,
        **(ADVANCED if advanced else {}),
    )


def int_input(
    name: str, tooltip: str, *, optional: bool = False, advanced: bool = True, **extra: object
) -> io.Int.Input:
    spec = SETTINGS[name]
    return io.Int.Input(
        name,
        default=spec.default,
        min=spec.low,
        max=spec.high,
        optional=optional,
        tooltip=tooltip,
        **extra,
        **(ADVANCED if advanced else {}),
    )


def seed_input() -> io.Int.Input:
    # The control widget stays (saved workflows hold its value after the seed's); web/tokenmerge.js sets it to
    # "fixed" on every new node, so a Run never draws other destinations unless the user asks for it.
    return int_input("seed", SEED_TOOLTIP, control_after_generate=True)


def block_range_inputs(start: float | None = None, end: float | None = None) -> list[io.Float.Input]:
    # Inputs added after a node's first release are optional, so saved API prompts without them still validate.
    return [
        float_input(
            "block_start",
            "DiTs: merge the blocks from this fraction of the depth on (IBTM on PixArt: the "
            "middle half). Must be below block_end. UNets ignore it.",
            setting=SETTINGS["block_start"].with_(default=start) if start is not None else None,
            optional=True,
        ),
        float_input(
            "block_end",
            "DiTs: merge the blocks before this fraction of the depth.",
            setting=SETTINGS["block_end"].with_(default=end) if end is not None else None,
            optional=True,
        ),
    ]


def run_window_inputs() -> list[io.Float.Input]:
    return [
        float_input("start_percent", "Merging starts at this fraction of the sampling run (below end_percent)."),
        float_input("end_percent", "Merging stops after this fraction of the sampling run."),
    ]


def window_inputs(tooltip_y: str) -> list[io.Int.Input]:
    return [int_input("window_y", tooltip_y), int_input("window_x", "Window width in tokens.")]


def proportional_attention_input() -> io.Boolean.Input:
    return io.Boolean.Input(
        "proportional_attention",
        default=False,
        optional=True,
        **ADVANCED,
        tooltip="DiTs: add log(number of tokens a merged token stands for) to its attention logit (ToMe's "
        "proportional attention), so merged regions keep their share of the attention. Off until the "
        "quality benchmark settles it. PixArt and UNets ignore it (one warning).",
    )


def model_schema(
    node_id: str, display_name: str, description: str, ratio: Setting, ratio_tooltip: str, options: list
) -> io.Schema:
    """Every merging node: a MODEL and a ratio in, the patched clone out, then its own options."""
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=CATEGORY,
        description=description,
        inputs=[
            io.Model.Input("model", tooltip="The model to accelerate; a patched clone is returned."),
            float_input("ratio", ratio_tooltip, setting=ratio, advanced=False),
            *options,
        ],
        outputs=[io.Model.Output(tooltip="The patched clone (or the input model when ratio is 0).")],
        hidden=HIDDEN,
        not_idempotent=True,
    )


def queue_time_check(method: Method, ratio_slider: Setting, **values: float | None) -> bool | str:
    """``validate_inputs`` of a node whose inputs constrain each other: each value within the node's own range
    (ComfyUI skips its range check for inputs a ``validate_inputs`` takes), then the constraints between them that
    :class:`MergeConfig` checks. ``ratio_slider`` is the node's own ratio slider. A linked input, or an optional one
    that an older saved prompt lacks, arrives as ``None``: constraints involving it are checked when the node runs."""
    shown = {**SETTINGS, "ratio": ratio_slider}
    known = {name: value for name, value in values.items() if value is not None}
    problems = [p for p in (shown[name].problem(name, value) for name, value in known.items()) if p]
    if not problems:
        filled = {name: setting.default for name, setting in SETTINGS.items()} | known
        problems = [message for involved, message in cross_field_problems(method, filled) if involved <= known.keys()]
    return "; ".join(problems) or True


def patched_output(node: type[io.ComfyNode], model, config: MergeConfig) -> io.NodeOutput:
    """The node's output: ``model`` patched as ``config`` says, recording for the previews that read it."""
    hidden = getattr(node, "hidden", None)
    previews = preview_consumers(getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None))
    return io.NodeOutput(apply_token_merge(model, config, previews))

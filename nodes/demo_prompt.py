"""Token Merge Demo Prompt: conditioning for the pack's small trained shapes models (the demo and benchmarks).

The shapes models read a closed vocabulary through fixed vectors instead of a text encoder (why: see
``shapes/prompt.py``), so this node stands where CLIPTextEncode would. It works for the SD1.x demo UNet and the
SD3 demo DiT (it also emits SD3's pooled vector); any other model would get meaningless conditioning.
"""

from __future__ import annotations

from ..shapes import prompt as shapes_prompt
from ._comfy_api import io
from .common import CATEGORY

TEXT_TOOLTIP = (
    "A scene in the demo grammar: 'a [small|large] <colour> <shape> at <position>', up to three joined "
    "by ' and ', optionally ending 'on a <background> background'. Colours: "
    + ", ".join(shapes_prompt.COLOURS)
    + "; shapes: "
    + ", ".join(shapes_prompt.SHAPES)
    + "; positions: "
    + ", ".join(shapes_prompt.POSITIONS)
    + "; backgrounds: "
    + ", ".join(shapes_prompt.BACKGROUNDS)
    + ". Empty text is the unconditional "
    "prompt (use it as the negative)."
)


# Shown in an empty text box (the negative prompt of the demo): the grammar and every word it knows.
PLACEHOLDER = (
    "Empty: the unconditional prompt. Otherwise e.g. 'a large red circle at top left and a small blue "
    "square at center on a striped background'. Words: " + shapes_prompt.vocabulary_help() + "."
)


class TokenMergeDemoPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TokenMergeDemoPrompt",
            display_name="Token Merge Demo Prompt (shapes models)",
            category=f"{CATEGORY}/demo",
            description="Conditioning for the pack's small trained shapes models (tokenmerge_shapes_sd15 / _sd3): "
            "maps a prompt in their small grammar to the fixed vectors they were trained on.",
            inputs=[
                io.String.Input(
                    "text",
                    multiline=True,
                    default="a large red circle at center",
                    placeholder=PLACEHOLDER,
                    tooltip=TEXT_TOOLTIP,
                )
            ],
            outputs=[io.Conditioning.Output(tooltip="Conditioning for the shapes demo models (context and pooled).")],
        )

    @classmethod
    def validate_inputs(cls, text: str | None = None) -> bool | str:
        if text is None:  # linked: checked when the node runs
            return True
        try:
            shapes_prompt.parse(text)
        except ValueError as error:
            return str(error)  # ComfyUI shows it as "text - <message>"
        return True

    @classmethod
    def execute(cls, text: str) -> io.NodeOutput:
        try:
            scene = shapes_prompt.parse(text)
        except ValueError as error:  # a linked text, not seen at queue time
            raise ValueError(f"text: {error}") from None
        context, pooled = shapes_prompt.encode(scene)
        # CONDITIONING: [[context [1, tokens, 768], {"pooled_output": [1, 768]}]]
        return io.NodeOutput([[context.unsqueeze(0), {"pooled_output": pooled.unsqueeze(0)}]])


NODES = [TokenMergeDemoPrompt]

"""Which heatmap previews of a queued prompt read the model of a merging node.

A prompt (API format) maps node ids to ``{"class_type", "inputs"}``; a linked input is ``[source_id, slot]``.
A preview consumes a merging node when the merging node is upstream of the preview's ``model`` input,
directly or through other model nodes (a LoRA loader, another patch).
"""

from __future__ import annotations

PREVIEW_NODE_ID = "TokenMergeHeatmapPreview"
DEFAULT_COLORMAP = "inferno"


def _link(value: object) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0])
    return None


def upstream(prompt: dict, start: str) -> set[str]:
    """Ids of every node that ``start`` depends on (``start`` included)."""
    seen, stack = set(), [start]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        stack.extend(s for s in map(_link, prompt[node_id].get("inputs", {}).values()) if s is not None)
    return seen


def preview_consumers(prompt: dict | None, node_id: str | None) -> dict[str, str]:
    """Preview node ids whose ``model`` input comes from ``node_id``, each with the colormap it asks for
    (the default when the colormap input is itself linked)."""
    if not prompt or node_id is None:
        return {}
    consumers = {}
    for preview_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != PREVIEW_NODE_ID:
            continue
        inputs = node.get("inputs", {})
        source = _link(inputs.get("model"))
        if source is not None and str(node_id) in upstream(prompt, source):
            colormap = inputs.get("colormap")
            consumers[str(preview_id)] = colormap if isinstance(colormap, str) else DEFAULT_COLORMAP
    return consumers

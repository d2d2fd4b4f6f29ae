"""Convert a UI-format workflow (what the graph editor saves, and what ``example_workflows/`` holds)
into the API format that ``/prompt`` accepts, using the server's ``/object_info``.

The rules follow how the frontend serialises a graph:

* each widget input, in ``input_order``, consumes one entry of ``widgets_values``; an INT input with
  ``control_after_generate`` (seeds) is followed by one extra entry ("fixed", "randomize", ...);
* an input with a link takes the upstream ``[node_id, slot]`` instead (a widget converted to an input
  still consumes its ``widgets_values`` slot);
* frontend-only nodes (notes) are dropped, reroutes are followed to their source, and muted or
  bypassed nodes are refused rather than guessed at.
"""

from __future__ import annotations

from typing import Any

FRONTEND_ONLY_NODES = frozenset({"Note", "MarkdownNote"})
REROUTE_NODES = frozenset({"Reroute"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MODE_ALWAYS = 0


class WorkflowConversionError(ValueError):
    """The workflow uses something this converter does not handle; the message names the node."""


def _is_widget(spec: list) -> bool:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 else {}
    return spec[0] == "INT" and bool(options.get("control_after_generate", name in ("seed", "noise_seed")))


def ui_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """API-format prompt ``{node_id: {"class_type", "inputs"}}`` for a UI-format ``workflow``."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}  # [id, origin_id, origin_slot, target_id, target_slot, type]

    def source(link_id: int) -> list:
        _, origin_id, origin_slot, *_ = links[link_id]
        origin = nodes[origin_id]
        if origin["type"] in REROUTE_NODES:
            return source(origin["inputs"][0]["link"])
        return [str(origin_id), origin_slot]

    prompt: dict[str, dict[str, Any]] = {}
    for node_id, node in nodes.items():
        kind = node["type"]
        if kind in FRONTEND_ONLY_NODES or kind in REROUTE_NODES:
            continue
        if node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
            raise WorkflowConversionError(f"node {node_id} ({kind}) is muted or bypassed; not supported")
        if kind not in object_info:
            raise WorkflowConversionError(f"node {node_id}: type {kind!r} is not installed on the server")
        info = object_info[kind]
        linked = {inp["name"]: inp["link"] for inp in node.get("inputs", []) if inp.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        for section in ("required", "optional"):
            specs = info["input"].get(section, {})
            for name in info.get("input_order", {}).get(section, list(specs)):
                spec = specs[name]
                if _is_widget(spec):
                    if not values:
                        raise WorkflowConversionError(f"node {node_id} ({kind}): no widget value for {name!r}")
                    inputs[name] = values.pop(0)
                    if _has_control_widget(name, spec):
                        values.pop(0)
                if name in linked:
                    inputs[name] = source(linked[name])
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs}
    return prompt

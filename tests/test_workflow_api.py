"""UI-format -> API-format conversion (devkit.workflow_api), on hand-written graphs with known answers."""

from __future__ import annotations

import pytest

from devkit.workflow_api import WorkflowConversionError, ui_to_api

OBJECT_INFO = {
    "Loader": {
        "input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}},
        "input_order": {"required": ["name"]},
    },
    "Sampler": {
        "input": {
            "required": {
                "model": ["MODEL"],
                "seed": ["INT", {"control_after_generate": True}],
                "steps": ["INT", {}],
                "cfg": ["FLOAT", {}],
            },
            "optional": {"label": ["STRING", {"forceInput": True}]},
        },
        "input_order": {"required": ["model", "seed", "steps", "cfg"], "optional": ["label"]},
    },
}


def _node(node_id, kind, widgets=(), inputs=(), mode=0):
    return {
        "id": node_id,
        "type": kind,
        "mode": mode,
        "widgets_values": list(widgets),
        "inputs": [{"name": name, "link": link} for name, link in inputs],
    }


def test_widgets_links_seed_control_and_reroutes():
    workflow = {
        "nodes": [
            _node(1, "Loader", ["b.safetensors"]),
            _node(2, "Reroute", inputs=[("", 1)]),
            _node(3, "Sampler", [123, "randomize", 20, 7.5], inputs=[("model", 2)]),
            _node(4, "Note", ["just a note"]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"]],
    }
    assert ui_to_api(workflow, OBJECT_INFO) == {
        "1": {"class_type": "Loader", "inputs": {"name": "b.safetensors"}},
        "3": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 123, "steps": 20, "cfg": 7.5}},
    }


def test_widget_converted_to_input_takes_the_link():
    workflow = {
        "nodes": [
            _node(1, "Loader", ["a.safetensors"]),
            _node(5, "Sampler", [1, "fixed", 4, 2.0], inputs=[("model", 1), ("steps", 2)]),
            _node(6, "Sampler", [9, "fixed", 8, 1.0], inputs=[("model", 3)]),
        ],
        "links": [[1, 1, 0, 5, 0, "MODEL"], [2, 6, 0, 5, 2, "INT"], [3, 1, 0, 6, 0, "MODEL"]],
    }
    assert ui_to_api(workflow, OBJECT_INFO)["5"]["inputs"] == {
        "model": ["1", 0],
        "seed": 1,
        "steps": ["6", 0],
        "cfg": 2.0,
    }


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (_node(1, "Loader", ["a.safetensors"], mode=4), "muted or bypassed"),
        (_node(1, "Missing"), "not installed"),
        (_node(1, "Loader", []), "no widget value for 'name'"),
    ],
)
def test_unsupported_graphs_are_refused_with_the_node_named(node, message):
    with pytest.raises(WorkflowConversionError, match=message):
        ui_to_api({"nodes": [node], "links": []}, OBJECT_INFO)

"""What the editor offers is what the nodes accept: every value a merging node refuses is refused when the prompt
is queued (``/prompt`` answers 400 before anything samples), naming only inputs the node shows, the value and the
allowed range; every value a Simple node's slider offers runs."""

from __future__ import annotations

import json
import re
import urllib.error

import pytest
from conftest import sample, sd3_prompt, state_of

from devkit import tiny_models

MERGE_NODE = "2"  # the merging node's id in sd3_prompt


def merging_nodes():
    from tokenmerge.nodes import importance, sdtm

    return {node.GET_SCHEMA().node_id: node for node in (*importance.NODES, *sdtm.NODES)}


def widget_defaults(node) -> dict:
    return {inp.id: inp.default for inp in node.GET_SCHEMA().inputs if inp.id != "model"}


def ranged(node) -> list:
    return [
        inp
        for inp in node.GET_SCHEMA().inputs
        if getattr(inp, "min", None) is not None and getattr(inp, "max", None) is not None
    ]


def queue_errors(server, node_id: str, inputs: dict) -> list[dict] | None:
    """The errors ``/prompt`` reports for the merging node of an SD3 stand-in prompt, or ``None`` when it is
    accepted (then the prompt runs: 1 step at 64 x 64)."""
    prompt = sd3_prompt(node_id, inputs, cfg=4.0, steps=1, width=64, height=64, batch=1)
    try:
        server.request("/prompt", {"prompt": prompt, "client_id": server.client_id})
    except urllib.error.HTTPError as refused:
        status, answer = refused.code, json.loads(refused.read())
    else:
        return None
    assert status == 400
    assert set(answer["node_errors"]) == {MERGE_NODE}, answer  # nothing else in the prompt is wrong
    return answer["node_errors"][MERGE_NODE]["errors"]


def named_inputs(error: dict) -> set[str]:
    """Every ``name=`` an error's text mentions, and the input ComfyUI marks."""
    text = f"{error['message']} {error['details']}"
    return {*re.findall(r"\b([a-z_]+)=", text), error["extra_info"]["input_name"]}


@pytest.mark.server
@pytest.mark.parametrize(
    "node_id",
    [
        "TokenMergeImportance",
        "TokenMergeImportanceAdvanced",
        "TokenMergeSpatialToMe",
        "TokenMergeSDTM",
        "TokenMergeSDTMAdvanced",
    ],
)
def test_each_slider_end_is_refused_at_queue_time_naming_the_input(comfy_server, pack, node_id):
    node = merging_nodes()[node_id]
    shown = {inp.id for inp in node.GET_SCHEMA().inputs}
    checked = 0
    for inp in ranged(node):
        step = inp.step or 1
        for value in (round(inp.min - step, 6), round(inp.max + step, 6)):
            errors = queue_errors(comfy_server, node_id, widget_defaults(node) | {inp.id: value})
            assert errors, f"{node_id}: {inp.id}={value} was accepted"
            assert inp.id in {e["extra_info"]["input_name"] for e in errors}
            bound = inp.max if value > inp.max else inp.min
            for error in errors:
                assert named_inputs(error) <= shown, error
                text = f"{error['message']} {error['details']}"
                assert re.search(
                    rf"{inp.id}={value} is out of range: allowed {inp.min} to {inp.max}"
                    rf"|Value {value} (bigger|smaller) than (max|min) of {bound}",
                    text,
                ), text
            checked += 1
    assert checked == 2 * len(ranged(node)) >= 2


# Values each within its own slider that the node cannot take together, the inputs that are marked, the message.
CROSS_FIELD = [
    (
        "TokenMergeImportanceAdvanced",
        {"ratio": 0.8, "dst_fraction": 0.5},
        {"ratio", "dst_fraction"},
        r"ratio=0.8 is out of range: allowed 0.0 to 0.5 \(at most 1 - dst_fraction with dst_fraction=0.5\)",
    ),
    (
        "TokenMergeImportanceAdvanced",
        {"start_percent": 0.6, "end_percent": 0.4},
        {"start_percent", "end_percent"},
        r"start_percent=0.6 must be below end_percent=0.4",
    ),
    (
        "TokenMergeImportanceAdvanced",
        {"block_start": 0.8, "block_end": 0.2},
        {"block_start", "block_end"},
        r"block_start=0.8 must be below block_end=0.2",
    ),
    (
        "TokenMergeSpatialToMe",
        {"ratio": 0.6, "window_y": 1, "window_x": 2},
        {"ratio", "window_y", "window_x"},
        (
            r"ratio=0.6 is out of range: allowed 0.0 to 0.5 \(at most 1 - 1/\(window_y\*window_x\) with window_y=1, "
            r"window_x=2\)"
        ),
    ),
    (
        "TokenMergeSDTMAdvanced",
        {"ratio": 0.6},
        {"ratio", "deviation", "window_y", "window_x"},
        (
            r"ratio=0.6 is out of range: allowed 0.0 to 0.55 \(at most 1 - 1/\(window_y\*window_x\) with window_y=2, "
            r"window_x=2, minus deviation=0.2\)"
        ),
    ),
    (
        "TokenMergeSDTMAdvanced",
        {"ratio": 0.2, "deviation": 0.3},
        {"ratio", "deviation"},
        r"deviation=0.3 is out of range: allowed 0.0 to ratio=0.2",
    ),
    (
        "TokenMergeSDTMAdvanced",
        {"start_percent": 0.5, "end_percent": 0.5},
        {"start_percent", "end_percent"},
        r"start_percent=0.5 must be below end_percent=0.5",
    ),
    (
        "TokenMergeSDTMAdvanced",
        {"block_start": 0.6, "block_end": 0.4},
        {"block_start", "block_end"},
        r"block_start=0.6 must be below block_end=0.4",
    ),
    (
        "TokenMergeSpatialToMe",
        {"block_start": 0.75, "block_end": 0.25},
        {"block_start", "block_end"},
        r"block_start=0.75 must be below block_end=0.25",
    ),
]


@pytest.mark.server
@pytest.mark.parametrize(("node_id", "overrides", "marked", "message"), CROSS_FIELD)
def test_inputs_that_constrain_each_other_are_refused_at_queue_time(
    comfy_server, pack, node_id, overrides, marked, message
):
    node = merging_nodes()[node_id]
    errors = queue_errors(comfy_server, node_id, widget_defaults(node) | overrides)
    assert errors
    assert marked <= {e["extra_info"]["input_name"] for e in errors}
    assert all(re.search(message, e["details"]) for e in errors), errors
    shown = {inp.id for inp in node.GET_SCHEMA().inputs}
    assert all(named_inputs(e) <= shown for e in errors)


@pytest.mark.server
def test_the_extremes_each_node_accepts_pass_queue_time_validation(comfy_server, pack):
    nodes = merging_nodes()
    accepted = [
        ("TokenMergeImportanceAdvanced", {"ratio": 0.9, "dst_fraction": 0.1}),
        ("TokenMergeSpatialToMe", {"ratio": 0.75}),
        ("TokenMergeSDTMAdvanced", {"ratio": 0.55}),
        ("TokenMergeSDTMAdvanced", {"ratio": 0.75, "deviation": 0.0}),
        # ratio 0 returns the model unpatched: the SDTM default deviation 0.2 no longer exceeds anything
        ("TokenMergeSDTMAdvanced", {"ratio": 0.0}),
        ("TokenMergeImportanceAdvanced", {"ratio": 0.0, "dst_fraction": 0.9}),
    ]
    for node_id, overrides in accepted:
        assert queue_errors(comfy_server, node_id, widget_defaults(nodes[node_id]) | overrides) is None, node_id


def slider_values(node) -> list[float]:
    ratio = next(inp for inp in node.GET_SCHEMA().inputs if inp.id == "ratio")
    count = round((ratio.max - ratio.min) / ratio.step)
    return [round(ratio.min + i * ratio.step, 6) for i in range(count + 1)]


@pytest.mark.parametrize(
    ("node_id", "family"),
    [
        ("TokenMergeImportance", "sd15"),
        ("TokenMergeImportance", "sd3"),
        ("TokenMergeSpatialToMe", "sd15"),
        ("TokenMergeSDTM", "sd3"),
    ],
)
def test_every_ratio_a_simple_slider_offers_runs(pack, node_id, family):
    """From 0 to the slider's end in its steps, at the node's other defaults: the node patches and a 2-step run
    merges (ratio 0 returns the model itself)."""
    node = merging_nodes()[node_id]
    tiny = tiny_models.FAMILIES[family]
    model = tiny_models.build_patcher(family)
    values = slider_values(node)
    assert values[0] == 0.0
    assert values[-1] == 0.75
    for ratio in values:
        patched = node.execute(model, **(widget_defaults(node) | {"ratio": ratio}))[0]
        if ratio == 0.0:
            assert patched is model
            continue
        latent = sample(patched, tiny, steps=2, height=128, width=128)  # 64 tokens or more: 0.05 merges one
        assert latent.isfinite().all(), ratio
        assert state_of(patched).counters["merged_calls"] > 0, ratio


def test_the_simple_sdtm_schedule_narrows_near_the_ends(pack):
    from tokenmerge.nodes.sdtm import simple_deviation

    assert [simple_deviation(r) for r in (0.0, 0.1, 0.4, 0.55, 0.6, 0.75)] == [0.0, 0.1, 0.2, 0.2, 0.15, 0.0]


def test_every_range_comes_from_the_one_settings_table(pack):
    """Each numeric input of every node (the heatmap preview's too) has the table's default, range and slider step
    (the ratio and block range may be a node's variant: a narrower slider or another default, never a wider
    range)."""
    from tokenmerge.nodes import preview
    from tokenmerge.patching.settings import SETTINGS

    checked = set()
    for node in (*merging_nodes().values(), *preview.NODES):
        for inp in ranged(node):
            setting = SETTINGS[inp.id]
            assert getattr(inp, "step", None) == setting.step, (node, inp.id)
            if inp.id in ("ratio", "block_start", "block_end"):
                assert setting.low <= inp.min, (node, inp.id)
                assert inp.max <= setting.high, (node, inp.id)
            else:
                assert (inp.default, inp.min, inp.max) == (setting.default, setting.low, setting.high), inp.id
            checked.add(inp.id)
    assert checked == set(SETTINGS)  # every entry of the table is some node's input


def test_the_merge_seed_keeps_its_control_widget(pack):
    """Saved workflows hold the control's value after the seed's, so the widget stays; the editor extension sets it
    to fixed on new nodes (tests/test_browser.py)."""
    for node in merging_nodes().values():
        for inp in node.GET_SCHEMA().inputs:
            if inp.id == "seed":
                assert inp.control_after_generate is True
                assert "not the sampler's seed" in inp.tooltip

"""The merge seed in the real editor (both frontends): a new node's seed control is fixed, a saved workflow keeps
its own control value, and a Run leaves the merge seed alone while the sampler's randomizes."""

from __future__ import annotations

import time

from conftest import sd3_prompt
from test_browser import ARTIFACTS, frontend_server  # noqa: F401 (the fixture: a server per frontend)

from devkit.browser import load_api_prompt, load_workflow, open_frontend
from devkit.example_workflows import DEMOS, EXAMPLES, load_example

SEEDED_NODES = ["TokenMergeImportanceAdvanced", "TokenMergeSpatialToMe", "TokenMergeSDTMAdvanced"]
CONTROL_OF = """(node) => { const seed = node.widgets.find((w) => w.name === "seed");
    return {seed: seed.value, control: seed.linkedWidgets?.[0]?.value ?? null}; }"""


def seed_state(page, node_id: int) -> dict:
    return page.evaluate(f"(id) => ({CONTROL_OF})(window.app.graph.getNodeById(id))", node_id)


def test_a_new_merging_node_has_its_seed_control_fixed(frontend_server):  # noqa: F811
    with open_frontend(frontend_server.url) as page:
        created = page.evaluate(
            f"""(types) => types.map((type) => {{
            const node = LiteGraph.createNode(type);
            window.app.graph.add(node);
            return ({CONTROL_OF})(node);
        }})""",
            [*SEEDED_NODES, "KSampler"],
        )
        *merging, ksampler = created
        assert ksampler["control"] == "randomize"  # the frontend's default for a seed, which the pack changes
        assert [state["control"] for state in merging] == ["fixed"] * len(SEEDED_NODES)
        assert not page.errors, page.errors


def test_a_saved_control_value_is_kept_when_a_workflow_loads(frontend_server):  # noqa: F811
    names = [
        name for name in {**DEMOS, **EXAMPLES} if any(n["type"] in SEEDED_NODES for n in load_example(name)["nodes"])
    ]
    workflow = load_example(names[0])
    node = next(n for n in workflow["nodes"] if n["type"] in SEEDED_NODES)
    values = node["widgets_values"]
    values[values.index("fixed")] = "increment"
    with open_frontend(frontend_server.url) as page:
        load_workflow(page, workflow)
        assert seed_state(page, node["id"])["control"] == "increment"


def test_a_run_keeps_the_merge_seed_and_randomizes_the_sampler_seed(frontend_server):  # noqa: F811
    prompt = sd3_prompt(
        "TokenMergeSpatialToMe",
        {
            "ratio": 0.5,
            "max_downsample": "auto",
            "window_y": 2,
            "window_x": 2,
            "merge_cross_attention": False,
            "merge_feed_forward": False,
            "seed": 5,
        },
        cfg=4.0,
        steps=2,
        width=64,
        height=64,
        batch=1,
    )
    with open_frontend(frontend_server.url) as page:
        load_api_prompt(page, prompt, "seed check")
        before = {node_id: seed_state(page, node_id) for node_id in (2, 7)}
        assert before[2] == {"seed": 5, "control": "fixed"}
        assert before[7]["control"] == "randomize"
        done = len(frontend_server.get_json("/history"))
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        deadline = time.monotonic() + 120
        while len(frontend_server.get_json("/history")) == done and time.monotonic() < deadline:
            page.wait_for_timeout(250)  # the newer frontend keeps outputs in a store, not on node.imgs
        assert len(frontend_server.get_json("/history")) == done + 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_seed_after_run.png"))
        assert seed_state(page, 2) == {"seed": 5, "control": "fixed"}
        assert seed_state(page, 7)["seed"] != before[7]["seed"]  # the control ran: it would have changed ours
        assert not page.errors, page.errors

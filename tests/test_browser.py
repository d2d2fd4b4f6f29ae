"""The real ComfyUI frontend in headless Chromium (Playwright): the pack's extension loads, the SD1.5 example
workflow loads without missing nodes, and a queued run shows the live heatmap on the preview node and then the
final preview. Runs against the frontend ComfyUI 0.3.75 pins and the newest ``comfyui-frontend-package``.

Screenshots are kept in ``test_artifacts/browser/``.
"""

from __future__ import annotations

import pytest

from devkit import ENV_DIR, REPO_ROOT
from devkit.browser import focus_node, load_api_prompt, load_workflow, node_state, node_types, open_frontend
from devkit.comfy_server import ComfyServer
from devkit.example_workflows import EXAMPLES, load_example, standin_prompt

ARTIFACTS = REPO_ROOT / "test_artifacts" / "browser"
LATEST_FRONTEND = ENV_DIR / "frontend-latest" / "comfyui_frontend_package" / "static"
LIVE_STEPS = 12


@pytest.fixture(scope="module", params=["pinned", "latest"])
def frontend_server(request, tmp_path_factory, standin_models):
    """A server per frontend: the one ComfyUI pins (from its requirements) and the newest release."""
    extra = () if request.param == "pinned" else ("--front-end-root", str(LATEST_FRONTEND))
    if request.param == "latest" and not LATEST_FRONTEND.is_dir():
        pytest.fail(f"{LATEST_FRONTEND} is missing: rerun scripts/setup_env.sh")
    server = ComfyServer(tmp_path_factory.mktemp(f"browser_{request.param}"), models_dir=standin_models,
                         extra_args=extra)
    server.start()
    server.frontend = request.param
    try:
        yield server
    finally:
        server.stop()


def test_every_example_loads_in_the_editor_with_no_missing_node(frontend_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_frontend(frontend_server.url) as page:
        registered = page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")
        for name in EXAMPLES:
            workflow = load_example(name)
            load_workflow(page, workflow)
            types = node_types(page)
            assert sorted(types) == sorted(n["type"] for n in workflow["nodes"]), name
            missing = {t for t in types if t != "Note"} - set(registered)
            assert not missing, f"{name}: the frontend does not know {missing}"
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_last_example.png"))
        assert not page.errors, page.errors


def test_live_heatmap_then_final_preview_on_the_node(frontend_server):
    """Queue the SD1.5 example (on stand-ins) from the editor; the preview node shows the live map during
    sampling, then the final preview image."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # enough steps at 256 px that sampling takes visible time
    prompt = standin_prompt(frontend_server.object_info(), "tokenmerge_sd15_ibtm_preview", steps=LIVE_STEPS, side=256)
    preview = int(next(k for k, n in prompt.items() if n["class_type"] == "TokenMergeHeatmapPreview"))
    with open_frontend(frontend_server.url) as page:
        load_api_prompt(page, prompt, "tokenmerge_sd15_ibtm_preview")
        focus_node(page, preview)
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function("(id) => (window.app.graph.getNodeById(id).tokenmergeLive?.frames ?? 0) >= 1",
                               arg=preview)
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_live_heatmap.png"))
        page.wait_for_function("(id) => { const n = window.app.graph.getNodeById(id);"
                               " return n.tokenmergeLive?.done && (n.imgs?.length ?? 0) > 0; }", arg=preview)
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_final_preview.png"))
        state = node_state(page, preview)
        assert state["liveFrames"] == LIVE_STEPS
        assert state["liveStep"] == LIVE_STEPS
        assert state["images"] == 1
        assert not page.errors, page.errors


def test_heatmap_events_for_unknown_nodes_or_bad_payloads_are_ignored(frontend_server):
    with open_frontend(frontend_server.url) as page:
        load_workflow(page, load_example("tokenmerge_sd15_ibtm_preview"))
        page.evaluate("""() => {
            const api = window.comfyAPI?.api?.api ?? window.app.api;
            for (const detail of [{node: "999", image: "data:image/png;base64,AAAA"},
                                  {node: "9", image: "javascript:alert(1)"}, {node: "9"}, null]) {
                api.dispatchEvent(new CustomEvent("tokenmerge.heatmap", {detail}));
            }
        }""")
        page.wait_for_timeout(300)
        assert node_state(page, 9)["liveFrames"] == 0
        assert not page.errors, page.errors

"""The real ComfyUI frontend in headless Chromium (Playwright), against the frontend ComfyUI pins and the newest
``comfyui-frontend-package``: the pack's extension loads; every example workflow loads without missing nodes and
reads at 100 % zoom (no overlaps, nothing cut short) and fitted to the window; the template browser shows each with
its thumbnail; the loaders offer missing model files for download; the demo runs from the editor without moving a
node; and a queued run shows the live heatmap on the preview node and then the final preview.

Screenshots are kept in ``test_artifacts/browser/``.
"""

from __future__ import annotations

import re

import pytest

from devkit import ENV_DIR, REPO_ROOT
from devkit.browser import focus_node, load_api_prompt, load_workflow, node_state, node_types, open_frontend
from devkit.comfy_server import PACK_DIR_NAME, ComfyServer
from devkit.example_standins import standin_prompt
from devkit.example_workflows import (
    DEMO,
    DEMOS,
    EXAMPLES,
    PIXART,
    SD15_PREVIEW,
    load_example,
)
from devkit.screenshots import SIDE as THUMBNAIL_SIDE
from devkit.workflow_graph import IMAGE_AREA

ARTIFACTS = REPO_ROOT / "test_artifacts" / "browser"
LATEST_FRONTEND = ENV_DIR / "frontend-latest" / "comfyui_frontend_package" / "static"
LIVE_STEPS = 12
LAYOUT_VIEWPORT = {"width": 1700, "height": 1300}  # every example whole at 100 %, as it opens
FIT_VIEWPORT = {"width": 1600, "height": 900}  # a laptop's browser window
# Fit the whole graph to the view (the command may animate: wait for it); the zoom it lands at and whether the
# frontend draws text there.
FIT_VIEW = """async () => {
    await window.app.extensionManager.command.execute("Comfy.Canvas.FitView");
    await new Promise((done) => setTimeout(done, 1000));
    const canvas = window.app.canvas;
    canvas.draw(true, true);
    return {scale: canvas.ds.scale, textless: canvas.low_quality};
}"""

SHOWS_IMAGES = ("SaveImage", "SaveAnimatedWEBP", "TokenMergeHeatmapPreview")  # nodes the frontend grows for images

# What the frontend computes for the graph it loaded: each node's box (title bar included), the least size it
# computes for the node's slots and widgets, its title's width against the room the title bar leaves it (the frontend
# cuts a longer title short), and for text boxes whether their text overflows; each group's box and title width.
LAYOUT = """() => {
    const app = window.app, ctx = app.canvas.ctx, titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = app.graph._nodes.map((node) => {
        ctx.font = node.titleFontStyle;
        const texts = (node.widgets ?? []).map((w) => w.element ?? w.inputEl).filter((e) => e?.tagName === "TEXTAREA");
        return {id: node.id, type: node.type, title: node.getTitle(), box: [...node.getBounding()],
                size: [...node.size], computed: [...node.computeSize()], images: node.imgs?.length ?? 0,
                titleWidth: ctx.measureText(node.getTitle()).width, titleRoom: node.size[0] - 2 * titleHeight,
                overflowing: texts.filter((e) => e.value && e.scrollHeight > e.clientHeight + 1).length};
    });
    const groups = app.graph._groups.map((group) => {
        ctx.font = `${group.font_size}px ${LiteGraph.GROUP_FONT}`;
        return {title: group.title, box: [...group._bounding], titleHeight: group.titleHeight,
                titleWidth: ctx.measureText(group.title).width + 2 * (group.constructor.padding ?? 4)};
    });
    return {scale: app.canvas.ds.scale, nodes, groups};
}"""


def _overlap(a: list[float], b: list[float]) -> bool:
    """Whether boxes ``[x, y, width, height]`` share any area."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(inner: list[float], outer: list[float], top: float = 0) -> bool:
    """Whether box ``inner`` lies within ``outer``, below its first ``top`` units (a group's title bar)."""
    return (
        outer[0] <= inner[0]
        and inner[0] + inner[2] <= outer[0] + outer[2]
        and outer[1] + top <= inner[1]
        and inner[1] + inner[3] <= outer[1] + outer[3]
    )


def assert_readable(name: str, layout: dict, workflow: dict) -> None:
    """The layout checks of :func:`test_every_example_loads_readable_with_no_missing_node` for one example."""
    assert layout["scale"] == 1, f"{name} opens at {layout['scale']:.0%}, not 100 %"
    saved = {str(node["id"]): node["size"] for node in workflow["nodes"]}
    nodes, groups = layout["nodes"], layout["groups"]
    assert groups, f"{name} has no groups naming its stages"
    for node in nodes:
        label = f"{name}: {node['title']!r}"
        size = saved[str(node["id"])]
        # a node that will show images computes the room for them once they arrive (and the frontend grows it to that)
        room = IMAGE_AREA if node["type"] in SHOWS_IMAGES and not node["images"] else 0
        assert size[0] >= node["computed"][0], f"{label} is saved narrower than the frontend computes"
        assert size[1] >= node["computed"][1] + room, (
            f"{label} is saved {size[1]} high, less than the {node['computed'][1]} + {room} the frontend computes"
        )
        assert node["titleWidth"] <= node["titleRoom"], f"{label}: the title bar cuts its title short"
        assert not node["overflowing"], f"{label}: its text does not fit its text box"
        for other in nodes:
            assert other is node or not _overlap(node["box"], other["box"]), f"{label} overlaps {other['title']!r}"
        holders = [group for group in groups if _overlap(node["box"], group["box"])]
        assert len(holders) <= 1, f"{label} overlaps groups {[g['title'] for g in holders]}"
        for group in holders:
            assert _inside(node["box"], group["box"], group["titleHeight"]), (
                f"{label} sticks out of group {group['title']!r} or covers its title"
            )
    for group in groups:
        assert group["titleWidth"] <= group["box"][2], f"{name}: group {group['title']!r} is narrower than its title"
        assert any(_inside(node["box"], group["box"]) for node in nodes), f"{name}: group {group['title']!r} is empty"
        for other in groups:
            assert other is group or not _overlap(group["box"], other["box"]), (
                f"{name}: groups {group['title']!r} and {other['title']!r} overlap"
            )


@pytest.fixture(scope="module", params=["pinned", "latest"])
def frontend_server(request, tmp_path_factory, standin_models):
    """A server per frontend: the one ComfyUI pins (from its requirements) and the newest release."""
    extra = () if request.param == "pinned" else ("--front-end-root", str(LATEST_FRONTEND))
    if request.param == "latest" and not LATEST_FRONTEND.is_dir():
        pytest.fail(f"{LATEST_FRONTEND} is missing: rerun scripts/setup_env.sh")
    server = ComfyServer(
        tmp_path_factory.mktemp(f"browser_{request.param}"), models_dir=standin_models, extra_args=extra
    )
    server.start()
    server.frontend = request.param
    try:
        yield server
    finally:
        server.stop()


def test_every_example_loads_readable_with_no_missing_node(frontend_server):
    """Each example as it opens, at 100 %: every node known to the frontend; no node's box (title bar included)
    overlaps another's; a node in a group lies wholly inside it, below its title, and overlaps no other group; groups
    do not overlap, and are as wide as their titles; every node is saved at least as large as the frontend computes
    for its widgets (and the images it will show), its title is not cut short and its text fits its text box; fitted
    to a 1600x900 window, the whole graph is still drawn with its text. The screenshots (``<frontend>_example_<n>.png``)
    show each example whole at 100 %."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_frontend(frontend_server.url, viewport=LAYOUT_VIEWPORT) as page:
        registered = page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")
        for name in [*DEMOS, *EXAMPLES]:
            workflow = load_example(name)
            load_workflow(page, workflow)
            types = node_types(page)
            assert sorted(types) == sorted(n["type"] for n in workflow["nodes"]), name
            missing = {t for t in types if t != "Note"} - set(registered)
            assert not missing, f"{name}: the frontend does not know {missing}"
            page.keyboard.press("Escape")  # the missing-models dialog of the pinned frontend (models not on the server)
            page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_example_{name.split()[0]}.png"))
            assert_readable(name, page.evaluate(LAYOUT), workflow)
            page.set_viewport_size(FIT_VIEWPORT)
            fit = page.evaluate(FIT_VIEW)
            page.set_viewport_size(LAYOUT_VIEWPORT)
            assert not fit["textless"], f"{name}: fit to view lands at {fit['scale']:.0%}, where no text is drawn"
        assert not page.errors, page.errors


def test_the_template_browser_shows_every_example_with_its_thumbnail(frontend_server):
    """Workflow > Browse Templates > Extensions > tokenmerge: a card per example, titled with its file name (all the
    frontends take from a custom node pack's templates), each with its thumbnail loaded."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    names = [*DEMOS, *EXAMPLES]
    with open_frontend(frontend_server.url, viewport=LAYOUT_VIEWPORT) as page:
        page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
        page.get_by_text(PACK_DIR_NAME, exact=True).first.click()
        page.wait_for_function(
            "([side, count]) => [...document.images].filter((i) => i.complete"
            " && i.naturalWidth === side && i.naturalHeight === side).length >= count",
            arg=[THUMBNAIL_SIDE, len(names)],
        )
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_template_browser.png"))
        for name in names:
            assert page.get_by_text(name, exact=True).count(), f"no card titled {name!r}"
        assert not page.errors, page.errors


def test_missing_model_files_are_offered_for_download(frontend_server):
    """The loaders' ``properties.models`` reach the frontend: opened on a server without its files, the PixArt example
    lists each missing file with its folder and a download (the pinned frontend in a dialog, newer ones in the
    issues panel behind "View details"), and no refusal of a host or a folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    models = [m for node in load_example(PIXART)["nodes"] for m in node["properties"].get("models", [])]
    with open_frontend(frontend_server.url) as page:
        load_workflow(page, load_example(PIXART))
        details = page.get_by_text("View details")
        if details.count():
            details.first.click()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_missing_models.png"))
        text = page.inner_text("body")
        for model in models:
            assert model["name"] in text, model
            assert model["directory"] in text, model
        assert page.get_by_role("button", name=re.compile(r"^Download")).count() >= len(models)
        assert "not allowed" not in text
        assert "Invalid directory" not in text


def test_the_demo_runs_from_the_editor_and_its_images_move_nothing(frontend_server):
    """Queue the demo as it opens (the trained shapes DiT is on the server): every save node and the preview show
    their images in the room the layout left them, so no node grows and the layout stays as readable as before."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    workflow = load_example(DEMO)
    with open_frontend(frontend_server.url, viewport=LAYOUT_VIEWPORT) as page:
        load_workflow(page, workflow)
        before = {node["id"]: node["size"] for node in page.evaluate(LAYOUT)["nodes"]}
        shown = [node["id"] for node in workflow["nodes"] if node["type"] in SHOWS_IMAGES]
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function(
            "(ids) => ids.every((id) => (window.app.graph.getNodeById(id).imgs?.length ?? 0) > 0)", arg=shown
        )
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_demo_after_run.png"))
        layout = page.evaluate(LAYOUT)
        assert {node["id"]: node["size"] for node in layout["nodes"]} == before
        assert_readable(DEMO, layout, workflow)
        # The preview shows one grid (the first sample's), so its tiles are not shrunk to a quarter.
        preview = next(node for node in workflow["nodes"] if node["type"] == "TokenMergeHeatmapPreview")
        assert page.evaluate("(id) => window.app.graph.getNodeById(id).imgs.length", preview["id"]) == 1
        assert preview["size"][0] >= 330
        assert not page.errors, page.errors


def test_live_heatmap_then_final_preview_on_the_node(frontend_server):
    """Queue the SD1.5 example (on stand-ins) from the editor; the preview node shows the live map during
    sampling, then the final preview image."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # enough steps at 256 px that sampling takes visible time
    prompt = standin_prompt(frontend_server.object_info(), SD15_PREVIEW, steps=LIVE_STEPS, side=256)
    preview = int(next(k for k, n in prompt.items() if n["class_type"] == "TokenMergeHeatmapPreview"))
    with open_frontend(frontend_server.url) as page:
        load_api_prompt(page, prompt, SD15_PREVIEW)
        focus_node(page, preview)
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        page.wait_for_function(
            "(id) => (window.app.graph.getNodeById(id).tokenmergeLive?.frames ?? 0) >= 1", arg=preview
        )
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_live_heatmap.png"))
        page.wait_for_function(
            "(id) => { const n = window.app.graph.getNodeById(id);"
            " return n.tokenmergeLive?.done && (n.imgs?.length ?? 0) > 0; }",
            arg=preview,
        )
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / f"{frontend_server.frontend}_final_preview.png"))
        state = node_state(page, preview)
        assert state["liveFrames"] == LIVE_STEPS
        assert state["liveStep"] == LIVE_STEPS
        assert state["images"] == 1
        assert not page.errors, page.errors


def test_heatmap_events_for_unknown_nodes_or_bad_payloads_are_ignored(frontend_server):
    with open_frontend(frontend_server.url) as page:
        load_workflow(page, load_example(SD15_PREVIEW))
        preview = page.evaluate("() => window.app.graph._nodes.find((n) => n.type === 'TokenMergeHeatmapPreview').id")
        page.evaluate(
            """(id) => {
            const api = window.comfyAPI?.api?.api ?? window.app.api;
            for (const detail of [{node: "999", image: "data:image/png;base64,AAAA"},
                                  {node: String(id), image: "javascript:alert(1)"}, {node: String(id)}, null]) {
                api.dispatchEvent(new CustomEvent("tokenmerge.heatmap", {detail}));
            }
        }""",
            preview,
        )
        page.wait_for_timeout(300)
        assert node_state(page, preview)["liveFrames"] == 0
        assert not page.errors, page.errors

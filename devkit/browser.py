"""Drive the real ComfyUI frontend in headless Chromium (Debian's ``chromium``) with Playwright.

``open_frontend`` yields a page on a running :class:`ComfyServer` once the graph editor is ready
(``window.app.graph`` exists); the helpers load workflows and read node state through the frontend's
own ``app`` object. Chromium starts with the flags this closed network needs (no background networking).
"""

from __future__ import annotations

import json
import os
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = Path(os.environ.get("TOKENMERGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 900}


# A returning user's settings: no first-visit template gallery over the canvas, and a canvas free of the minimap
# and the canvas info (screenshots show the graph, not the editor's tools).
USER_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
# The 1.3x frontends' "Introducing Nodes 2.0" banner over the top of the editor, dismissed as its close button does.
DISMISSED_BANNERS = "localStorage.setItem('vueNodesBannerDismissed', 'true');"


def _store_settings(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/settings",
        data=json.dumps(USER_SETTINGS).encode(),  # loopback only
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextmanager
def open_frontend(url: str, timeout_ms: int = 90_000, viewport: dict | None = None) -> Iterator:
    """A Playwright page showing the graph editor at ``url`` (``viewport``: its size, default :data:`VIEWPORT`);
    console errors are kept in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    _store_settings(url)

    if not CHROMIUM.exists():
        raise FileNotFoundError(
            f"Chromium not found at {CHROMIUM}: run scripts/install_browser.sh (Debian package chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=viewport or VIEWPORT)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.set_default_timeout(timeout_ms)
            page.add_init_script(DISMISSED_BANNERS)
            page.goto(url)
            page.wait_for_function("() => window.app && window.app.graph && window.app.canvas")
            page.keyboard.press("Escape")  # any dialog a newer frontend opens on a first visit
            yield page
        finally:
            browser.close()


def load_workflow(page, workflow: dict) -> None:
    """Load a UI-format workflow the way opening a file does."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(500)


def load_api_prompt(page, prompt: dict, name: str) -> None:
    """Load an API-format prompt into the editor (the frontend lays its nodes out)."""
    page.evaluate("async ([p, n]) => { await window.app.loadApiJson(p, n); }", [prompt, name])
    page.wait_for_timeout(500)


def node_types(page) -> list[str]:
    return page.evaluate("() => window.app.graph._nodes.map((n) => n.type)")


def focus_node(page, node_id: int, scale: float = 1.0) -> None:
    """Centre the canvas on a node at ``scale``."""
    page.evaluate(
        """([id, scale]) => {
        const canvas = window.app.canvas;
        canvas.ds.scale = scale;
        canvas.centerOnNode(window.app.graph.getNodeById(id));
        canvas.setDirty(true, true);
    }""",
        [node_id, scale],
    )
    page.wait_for_timeout(300)


def node_state(page, node_id: int) -> dict:
    """What the pack's extension and the frontend hold for a node: live frames and final images."""
    return page.evaluate(
        """(id) => {
        const node = window.app.graph.getNodeById(id);
        if (!node) return null;
        const live = node.tokenmergeLive;
        return {type: node.type, liveFrames: live ? live.frames : 0, liveStep: live ? live.step : 0,
                liveDone: live ? live.done : false, images: node.imgs ? node.imgs.length : 0};
    }""",
        node_id,
    )

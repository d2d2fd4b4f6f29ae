"""Security: the pack's runtime code loads no pickles, opens no network connection, writes files only through
ComfyUI's folders, and its web extension never builds DOM from strings."""

from __future__ import annotations

import ast
import re

import pytest

from devkit import REPO_ROOT

RUNTIME_SOURCES = sorted(
    [
        REPO_ROOT / "__init__.py",
        *(p for folder in ("nodes", "patching", "merging") for p in (REPO_ROOT / folder).rglob("*.py")),
    ]
)
NETWORK_MODULES = {
    "socket",
    "urllib",
    "requests",
    "http",
    "aiohttp",
    "websocket",
    "websockets",
    "httpx",
    "ftplib",
    "smtplib",
}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}


def imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def call_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


@pytest.mark.parametrize("path", RUNTIME_SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_runtime_module_loads_no_pickles_and_opens_no_network(path):
    tree = ast.parse(path.read_text())
    assert not imported_modules(tree) & PICKLE_MODULES
    assert not imported_modules(tree) & NETWORK_MODULES
    for call in calls(tree):
        name = call_name(call)
        if name in ("torch.load", "load"):
            weights_only = [kw for kw in call.keywords if kw.arg == "weights_only"]
            assert weights_only, f"{path}: {ast.unparse(call)} without weights_only=True"
            assert ast.literal_eval(weights_only[0].value) is True
        assert not name.endswith(("pickle.load", "pickle.loads", "numpy.load", "np.load")), ast.unparse(call)


@pytest.mark.parametrize("path", RUNTIME_SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_runtime_module_writes_files_only_through_comfyui_folders(path):
    source = path.read_text()
    tree = ast.parse(source)
    # Buffers in memory (``buffer = io.BytesIO()``; ``image.save(buffer)``) are not files.
    in_memory = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and call_name(node.value).endswith("BytesIO")
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    writers = [
        ast.unparse(call)
        for call in calls(tree)
        if (
            call_name(call) in ("open", "os.makedirs", "torch.save")
            or call_name(call).endswith((".save", ".save_file", ".write_text", ".write_bytes"))
        )
        and not (call.args and isinstance(call.args[0], ast.Name) and call.args[0].id in in_memory)
    ]
    if writers:
        assert "folder_paths" in source, f"{path} writes files ({writers}) outside ComfyUI's temp/output folders"


def test_the_checks_see_the_whole_runtime():
    assert {p.parent.name for p in RUNTIME_SOURCES} >= {"nodes", "patching", "merging"}
    assert len(RUNTIME_SOURCES) >= 15


def test_the_checks_catch_what_they_look_for():
    tree = ast.parse("import pickle\nfrom urllib import request\nimport torch\ntorch.load(f)\n")
    assert imported_modules(tree) >= {"pickle", "urllib"}
    assert [call_name(call) for call in calls(tree)] == ["torch.load"]


def test_web_extension_builds_no_dom_from_strings():
    scripts = sorted((REPO_ROOT / "web").rglob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert not re.search(
            r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\s*\(|new Function", text
        ), script

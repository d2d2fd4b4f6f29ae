"""The pack imports without ComfyUI (pure tests, tools) and registers through the V3 API inside it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from devkit import REPO_ROOT


def test_pack_imports_outside_comfyui_and_merging_stays_pure(tmp_path):
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.path = [p for p in sys.path if "ComfyUI" not in p]
        spec = importlib.util.spec_from_file_location(
            "tokenmerge", {str(REPO_ROOT / "__init__.py")!r}, submodule_search_locations=[{str(REPO_ROOT)!r}])
        pack = importlib.util.module_from_spec(spec)
        sys.modules["tokenmerge"] = pack
        spec.loader.exec_module(pack)
        import tokenmerge.merging
        print(json.dumps({{
            "web": pack.WEB_DIRECTORY,
            "entrypoint": hasattr(pack, "comfy_entrypoint"),
            "comfy_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "nodes")),
        }}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert result == {"web": "./web", "entrypoint": False, "comfy_modules": []}


def test_pack_registers_a_v3_extension_inside_comfyui(pack):
    from comfy_api.latest import ComfyExtension, io

    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    node_list = asyncio.run(extension.get_node_list())
    assert all(issubclass(node, io.ComfyNode) for node in node_list)
    assert all(node.GET_SCHEMA().node_id.startswith("TokenMerge") for node in node_list)


def test_comfyui_node_loader_accepts_the_pack(tmp_path):
    import nodes

    # A link under another name keeps this load separate from the 'tokenmerge' package the tests import.
    link = tmp_path / "tokenmerge_loader_check"
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    assert asyncio.run(nodes.load_custom_node(str(link))) is True
    assert nodes.EXTENSION_WEB_DIRS["tokenmerge_loader_check"] == str(link / "web")

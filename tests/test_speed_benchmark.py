"""The speed benchmark's smoke mode (what CI runs of it) and its FLOP accounting.

Timings are never asserted (the machines are noisy); the invariants are: every condition is measured, unpatched
is its own baseline, the FLOP model agrees between the two attention backends, merging removes FLOPs, and this
pack's profiler ranges account for its matching.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from devkit import REPO_ROOT

pytestmark = pytest.mark.release_independent  # the harnesses' own behaviour: checked on the pinned release


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from benchmarks import speed

    out = tmp_path_factory.mktemp("speed")
    assert speed.main(["--smoke", "--out", str(out)]) == 0
    return out


def _rows(out, backend: str) -> dict[str, dict]:
    (path,) = out.glob(f"speed-smoke-*-{backend}.json")
    (result,) = json.loads(path.read_text())
    return {row["name"]: row for row in result["rows"]}


def test_smoke_mode_writes_the_report_and_plots_for_both_backends(smoke_run):
    (report,) = smoke_run.glob("speed-smoke-*.md")
    text = report.read_text()
    for heading in ("## Targets", "## pytorch attention", "## sub-quadratic attention"):
        assert heading in text
    for backend in ("sub-quadratic", "pytorch"):
        (figure,) = smoke_run.glob(f"speed-smoke-*-{backend}.png")
        assert figure.stat().st_size > 5000
        assert f"]({figure.name})" in text


@pytest.mark.parametrize("backend", ["sub-quadratic", "pytorch"])
def test_the_presets_are_measured_against_the_same_run(smoke_run, backend):
    rows = _rows(smoke_run, backend)
    assert rows["unpatched"]["speedup"] == 1.0
    assert rows["unpatched"]["ideal"] == 1.0
    for row in rows.values():
        assert row["min"] <= row["seconds_per_step"] <= row["max"]
        assert row["peak_mib"] >= 0
        assert 0 <= row["overhead_share"] < 1
    # Merging removes FLOPs: more with the cross-attention and feed-forward merged too.
    assert rows["ibtm 0.5"]["ideal"] > 1.02
    assert rows["ibtm 0.5 + cross-attn + FF"]["ideal"] > rows["ibtm 0.5"]["ideal"]
    # Our matching runs inside its profiler range and is left out of the ideal.
    assert rows["ibtm 0.5"]["match_gflop_per_step"] > 0
    assert rows["ibtm 0.5"]["overhead_seconds"]["match"] > 0
    assert rows["ibtm 0.5"]["overhead_seconds"]["capture"] > 0


def test_the_first_backend_runs_the_grid_with_the_baselines(smoke_run):
    rows = _rows(smoke_run, "pytorch")
    assert set(rows) == {"unpatched", "builtin 0.5", "tome 0.5", "ibtm 0.5", "ibtm 0.5 + cross-attn + FF"}
    assert set(_rows(smoke_run, "sub-quadratic")) == {"unpatched", "ibtm 0.5", "ibtm 0.5 + cross-attn + FF"}
    assert rows["tome 0.5"]["ideal"] > 1.02
    assert rows["builtin 0.5"]["match_gflop_per_step"] == 0  # the built-in's matching is not in our ranges


def test_the_flop_model_is_the_same_under_both_attention_backends(smoke_run):
    sub_quadratic, pytorch = _rows(smoke_run, "sub-quadratic"), _rows(smoke_run, "pytorch")
    for name in ("unpatched", "ibtm 0.5", "ibtm 0.5 + cross-attn + FF"):
        assert pytorch[name]["tflop_per_step"] == pytest.approx(sub_quadratic[name]["tflop_per_step"], rel=0.02)


def test_cpu_sdpa_is_counted_like_attention():
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.speed import _cpu_sdpa_flops

    q = torch.randn(2, 8, 256, 40)
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * 2 * 8 * 256 * 256 * 40)  # QK^T and AV, 2 FLOPs per MAC


def test_append_keeps_the_rows_and_lists_every_command(smoke_run, tmp_path):
    import shutil

    from benchmarks import speed

    out = tmp_path / "results"
    shutil.copytree(smoke_run, out)
    before = {backend: _rows(out, backend) for backend in ("sub-quadratic", "pytorch")}
    assert speed.main(["--smoke", "--append", "--out", str(out)]) == 0  # every model is there: nothing reruns
    assert {backend: _rows(out, backend) for backend in ("sub-quadratic", "pytorch")} == before
    (run,) = out.glob("speed-smoke-*-run.json")
    commands = json.loads(run.read_text())["commands"]
    assert [c["argv"] for c in commands] == [["--smoke"], ["--smoke", "--append"]]
    (report,) = out.glob("speed-smoke-*.md")
    assert report.read_text().count("- `python -m benchmarks.speed --smoke") == 2
    (result,) = json.loads(next(out.glob("speed-smoke-*-pytorch.json")).read_text())
    assert (result["steps"], result["rounds"]) == (2, 1)


def test_compiled_benchmark_smoke_mode_writes_its_report(tmp_path):
    """``python -m benchmarks.compiled --smoke`` (in its own process, which picks PyTorch attention): every
    condition eager and compiled, the compiled ones warmed up once and never recompiled in the timed runs."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.compiled", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = tmp_path.glob("compiled-smoke-*.md")
    (result,) = json.loads(next(tmp_path.glob("compiled-smoke-*.json")).read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == {"unpatched", "ibtm 0.5", "unpatched compiled", "ibtm 0.5 compiled"}
    assert all(row["seconds_per_step"] > 0 for row in rows.values())
    assert rows["ibtm 0.5 compiled"]["warmup_graphs"] >= 1
    assert result["graphs_in_timed_runs"] == 0
    assert "| ibtm 0.5 compiled |" in report.read_text()


def test_compiled_benchmark_gpu_mode_defaults_to_bf16(pack):
    from benchmarks import compiled

    args = compiled.parse_args(["--device", "cuda"])
    assert (args.dtype, args.machine, args.models) == ("bf16", "cuda", ["sd15-768", "sd3-1024"])
    assert compiled.DTYPES[args.dtype] is torch.bfloat16

"""benchmarks/run_all.py: a quick run gathers each benchmark's goal rows, the machine and its peak into
benchmarks.json and rewrites only the marked table of a README (no timing is asserted)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def run_all():
    sys.path.insert(0, str(BENCH))
    try:
        import run_all as module

        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_every_benchmark_script_is_run_and_takes_the_common_arguments(run_all):
    scripts = {p.stem for p in BENCH.glob("*.py")} - {"_common", "run_all", "gpu_check"}
    assert set(run_all.BENCHMARKS) == scripts  # gpu_check needs CUDA: run by hand on a GPU machine
    for name in scripts:
        tree = ast.parse((BENCH / f"{name}.py").read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
        assert main.args.args and main.args.args[0].arg == "argv", name  # run_all calls main(argv) in-process
        assert {"add_common_args", "apply_common_args", "write_bench"} <= calls, name


def test_quick_run_writes_benchmarks_json_and_the_readme_table(run_all, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- benchmarks:begin -->\nold table\n<!-- benchmarks:end -->\nafter\n")
    record = run_all.main(["--quick", "--only", "multilabel", "data", "--results-dir", str(tmp_path),
                           "--readme", str(readme)])
    on_disk = json.loads((tmp_path / "benchmarks.json").read_text())
    assert on_disk["rows"] == record["rows"] and on_disk["quick"] is True
    assert set(on_disk["benchmarks"]) == {"multilabel", "data"}
    assert [r["benchmark"] for r in on_disk["rows"]] == ["multilabel"] * 2 + ["data"] * 2
    for name in ("multilabel", "data"):
        rows = json.loads((tmp_path / f"bench_{name}.json").read_text())["rows"]
        assert [r["ratio"] for r in rows] == [r["ratio"] for r in on_disk["rows"] if r["benchmark"] == name]
    machine = on_disk["machine"]
    assert {"cpu", "flags", "amx", "vnni", "torch_threads"} <= set(machine)
    assert on_disk["measured_peak_gflops"]["bf16_gflops"] > 0 and on_disk["measured_peak_gflops"]["fp32_gflops"] > 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n<!-- benchmarks:begin -->\n") and text.endswith(
        "<!-- benchmarks:end -->\nafter\n")
    assert "old table" not in text and "QUICK RUN" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| multilabel |") or
                  line.startswith("| data |")]
    assert len(table_rows) == 4
    first = on_disk["rows"][0]
    assert table_rows[0].startswith(f"| multilabel | {first['hot_path']} | {first['peer']} | ")


def test_readme_without_markers_is_refused_by_name(run_all, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="README.md has no"):
        run_all.update_readme(readme, "table\n")
    assert readme.read_text() == "no markers\n"


def test_the_repository_readme_has_the_table_markers(run_all):
    text = (BENCH.parent / "README.md").read_text()
    assert text.count(run_all.BEGIN) == 1 and text.count(run_all.END) == 1

"""benchmarks/data.py --quick runs end to end and prints every figure (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_data_benchmark_quick_mode_reports_loader_and_model_rates(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_data", BENCH / "data.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        figures = bench.main(["--quick", "--workers", "0,1", "--device", "cpu", "--json-out", str(tmp_path / "f.json"),
                             "--results-dir", str(tmp_path)])
    finally:
        sys.path.remove(str(BENCH))
    out = capsys.readouterr().out
    assert set(figures["loader_img_s"]) == {"files/0", "files/1", "shards/0", "shards/1"}
    assert all(v > 0 for v in figures["loader_img_s"].values()) and figures["model_img_s"] > 0
    for key in ("decode_speedup", "path_speedup"):
        assert figures[key] > 0
    assert json.loads((tmp_path / "f.json").read_text())["model"] == "small_convnet"
    bench_json = json.loads((tmp_path / "bench_data.json").read_text())
    assert bench_json["quick"] is True  # ratios are stored rounded (reproduce.results._plain)
    assert [r["ratio"] for r in bench_json["rows"]] == pytest.approx([figures["decode_speedup"],
                                                                     figures["path_speedup"]], rel=1e-4)
    assert "limit: the " in out and "model small_convnet @ 32px" in out and "shards        1" in out

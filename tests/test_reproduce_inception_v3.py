"""``vislearn reproduce inception_v3`` runs end to end at a tiny scale (its verdict is not checked here)."""

from __future__ import annotations

import json

import pytest

from vislearn.reproduce import run_reproduction


def test_reproduction_runs_tiny(tmp_path):
    record = run_reproduction("inception_v3", tmp_path, scale=0.02, seeds=(0,), log=lambda m: None)
    assert (tmp_path / "inception_v3.json").exists() and (tmp_path / "inception_v3.png").exists()
    saved = json.loads((tmp_path / "inception_v3.json").read_text())
    arch = saved["numbers"]["architecture"]
    assert arch["params_no_aux"] == 23_834_568 and arch["params_aux"] == 27_161_264
    assert arch["gmacs_299"] == pytest.approx(5.713216, abs=1e-4) == arch["timm_gmacs_299_same_counter"]
    assert saved["numbers"]["architecture_ok"] is True
    assert set(saved["numbers"]["conditions"]) == {"full (LS 0.1 + aux 0.4)", "no label smoothing", "no aux head"}
    assert record["numbers"]["steps_per_run"] == 5  # 250 x 0.02

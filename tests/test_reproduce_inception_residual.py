"""The inception_residual reproduction runs end to end at a tiny scale and writes its results."""

import json

from vislearn.reproduce import get_reproduction, run_reproduction


def test_runs_at_tiny_scale(tmp_path):
    rep = get_reproduction("inception_residual")
    assert "50%" in rep.criterion and "0.2" in rep.criterion
    rec = run_reproduction("inception_residual", tmp_path, scale=0.02, seeds=(0,), log=lambda m: None)
    saved = json.loads((tmp_path / "inception_residual.json").read_text())
    assert saved["name"] == "inception_residual" and (tmp_path / "inception_residual.png").exists()
    a, b = rec["numbers"]["a"], rec["numbers"]["b"]
    assert a["steps"] == 2 and b["steps"] == 2
    # similar cost: the two (a) networks within 30% of each other's multiply-adds
    v4, ir = a["runs"]["inception_v4"]["mmacs_75"], a["runs"]["inception_resnet_v2_paper"]["mmacs_75"]
    assert 0.7 < ir / v4 < 1.3
    for runs in b["runs"].values():
        assert all(0.0 <= z <= 1.0 for z in runs["zero_fraction"])

"""Reproduction ``proxy_nca``: its curve arithmetic, its committed sweep, and tiny end-to-end runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vislearn.errors import UserError
from vislearn.reproduce import get_reproduction, run_reproduction
from vislearn.reproduce import proxy_nca as P

SWEEP = Path(__file__).resolve().parents[1] / "results" / "proxy_nca_sweep.json"


def test_smooth_is_a_centred_moving_average_cut_at_the_ends():
    v = [0.0, 1.0, 5.0, 2.0, 8.0, 3.0, 4.0]
    got = P.smooth(v, 5)
    # interior points: numpy's 5-point box filter; ends: the mean of the points that exist
    np.testing.assert_allclose(got[2:-2], np.convolve(v, np.ones(5) / 5, mode="valid"))
    assert got[0] == pytest.approx(2.0) and got[1] == pytest.approx(2.0)  # (0+1+5)/3, (0+1+5+2)/4
    assert got[-1] == pytest.approx(5.0) and got[-2] == pytest.approx(17 / 4)
    assert P.smooth([1.0, 3.0], 1) == [1.0, 3.0]


def test_plateau_target_and_first_reach():
    curve = [0.0] * 8 + [1.0, 2.0]
    assert P.plateau(curve, 0.2) == pytest.approx(1.5)  # the last 2 of 10 points
    assert P.plateau([4.0], 0.2) == 4.0
    assert P.first_reach([0, 25, 50, 75], [0.1, 0.3, 0.5, 0.4], 0.45) == 50
    assert P.first_reach([0, 25], [0.1, 0.3], 0.45) is None


def test_chosen_values_are_the_committed_sweeps_choice():
    table = json.loads(SWEEP.read_text())
    assert table["scale"] == 1.0 and table["steps"] == P.STEPS and table["tune_seeds"] == list(P.TUNE_SEEDS)
    for arm, (param, values) in P.ARMS.items():
        rows = [r for r in table["rows"] if r["arm"] == arm]
        assert len(rows) == len(P.LRS) * len(values)  # the same grid size for both arms
        best = max(rows, key=lambda r: r["score_mean_smoothed_val_recall@1"])
        assert P.CHOSEN[arm] == {"lr": best["lr"], param: best[param]}
        assert {k: v for k, v in table["chosen"][arm].items() if k != "on_grid_edge"} == P.CHOSEN[arm]


def test_registered_claim_criterion_and_inputs():
    rep = get_reproduction("proxy_nca")
    assert rep.inputs == ("weights",) and rep.seeds == (0, 1, 2, 3, 4)
    assert "held-out training classes" in rep.criterion and ">= 0.10" in rep.criterion
    assert "2.5x" in rep.criterion and "0.9 x" in rep.criterion


def test_reproduction_runs_tiny(tmp_path):
    rec = run_reproduction("proxy_nca", tmp_path, scale=0.01, seeds=(0,), log=lambda m: None)
    data = json.loads((tmp_path / "proxy_nca.json").read_text())
    assert data["name"] == "proxy_nca" and (tmp_path / "proxy_nca.png").stat().st_size > 0
    n = rec["numbers"]
    assert n["chosen"] == P.CHOSEN and "not re-run" in n["tuning_source"] and "sweep" not in n
    steps = n["eval_steps"]
    assert steps[0] == 0 and steps[-1] == n["steps_per_run"] == 15 and len(steps) == 16  # step 0 + every step
    assert set(n["mean_smoothed_recall@1"]) == {"proxy_nca", "triplet"}
    lo = min(n["plateau_recall@1"][a]["mean"] for a in P.ARMS)
    assert n["target_recall@1"] == pytest.approx(n["r0_untrained_recall@1"]
                                                 + 0.9 * (lo - n["r0_untrained_recall@1"]), abs=1e-5)
    with pytest.raises(UserError, match="does not use --data"):
        run_reproduction("proxy_nca", tmp_path, scale=0.01, seeds=(0,), log=lambda m: None, data=str(tmp_path))


def test_pretrained_backbone_run_with_a_weights_file(tmp_path):
    """``--weights``: a (here randomly initialised) BN-Inception file is the frozen trunk, and the sweep runs."""
    from vislearn.io import save_weights
    from vislearn.models import create_model
    from vislearn.recipes.proxy_nca import _FEATURE_CACHE

    torch.manual_seed(5)
    save_weights(create_model("bn_inception"), tmp_path / "bn.safetensors")
    logs = []
    rec = run_reproduction("proxy_nca", tmp_path, scale=0.01, seeds=(0,), log=logs.append,
                           weights=str(tmp_path / "bn.safetensors"))
    n = rec["numbers"]
    assert n["setting"]["backbone"] == "bn_inception"
    assert n["setting"]["backbone_weights"] == str(tmp_path / "bn.safetensors")
    sweep = n["sweep"]
    assert "swept in this run" in n["tuning_source"] and n["chosen"] == sweep["chosen"]
    assert {r["arm"] for r in sweep["rows"]} == {"proxy_nca", "triplet"}
    assert len([r for r in sweep["rows"] if r["arm"] == "proxy_nca"]) == len(
        [r for r in sweep["rows"] if r["arm"] == "triplet"])
    assert any("sweep proxy_nca" in m for m in logs)
    # the maps the final runs trained on are the weights file's inception4 maps (576 channels)
    (maps, _), = _FEATURE_CACHE.values()
    assert maps.images.shape[1] == 576


def test_parallel_runs_equal_sequential_runs():
    tiny = {"steps": 3, "num_classes": 8, "shapes_per_class": 6, "image_size": 16, "eval_every": 1, "log_every": 0,
            "batch_size": 4, "samples_per_class": 2, "embedding_dim": 8, "frozen_backbone": True, "head_width": 4,
            "feature_stage": 1, "eval_nmi": False}
    configs = [{**tiny, "seed": 1}, {**tiny, "seed": 2, "loss": "triplet"}]
    assert P.run_all(configs, workers=2) == P.run_all(configs, workers=1)

"""``vislearn reproduce ssl_ensemble`` runs end to end at a tiny scale; the JSON holds the criteria and the
numbers per arm and seed (its verdict is not checked here)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from vislearn.reproduce import get_reproduction, run_reproduction
from vislearn.reproduce import ssl_ensemble as rep


def test_registered_with_claim_and_criterion_before_the_run():
    r = get_reproduction("ssl_ensemble")
    assert "ENT" in r.claim and "UNIF" in r.claim and "seed spread" in r.criterion and r.seeds == (0, 1, 2)
    assert set(rep.ARMS) == {"1 head", f"unif ({rep.HEADS})", f"prob ({rep.HEADS})", f"ent ({rep.HEADS})"}
    shared = set(rep.SMALL_SCALE)  # the arms differ only in heads, scheme and codes
    assert all(set(arm) == {"heads", "scheme", "codes"} and not set(arm) & shared for arm in rep.ARMS.values())


def test_eval_sets_are_held_out_classes():
    (xp, yp), (xt, yt) = rep.eval_sets(labels="class")
    n = rep.EVAL_CLASSES[1] - rep.EVAL_CLASSES[0]
    assert sorted(set(yp.tolist())) == sorted(set(yt.tolist())) == list(range(n))
    assert len(xp) == n * rep.POOL_PER_CLASS and len(xt) == n * rep.TEST_PER_CLASS
    # the default labels drop the colour: classes of one fill and shape share a label
    names = rep.eval_label_names(rep.EVAL_CLASSES, "class")
    merged = rep.eval_label_names(rep.EVAL_CLASSES, "fill shape")
    assert merged == [f"{m.split()[0]} {m.split()[-1]}" for m in names] and len(set(merged)) < n
    (xp2, yp2), _ = rep.eval_sets()
    groups = list(dict.fromkeys(merged))
    assert torch.equal(xp2, xp) and yp2.tolist() == [groups.index(merged[c]) for c in yp.tolist()]
    assert rep.PRETRAIN_CLASSES[1] <= rep.EVAL_CLASSES[0] and rep.SMALL_SCALE["num_classes"] == rep.PRETRAIN_CLASSES[1]


def test_reproduction_runs_tiny(tmp_path, monkeypatch):
    monkeypatch.setitem(rep.SMALL_SCALE, "samples_per_class", 6)
    monkeypatch.setitem(rep.SMALL_SCALE, "batch_size", 8)
    monkeypatch.setattr(rep, "POOL_PER_CLASS", 6)
    monkeypatch.setattr(rep, "TEST_PER_CLASS", 3)
    record = run_reproduction("ssl_ensemble", tmp_path, scale=0.02, seeds=(0, 1), log=lambda m: None)
    assert (tmp_path / "ssl_ensemble.json").exists() and (tmp_path / "ssl_ensemble.png").exists()
    saved = json.loads((tmp_path / "ssl_ensemble.json").read_text())
    assert saved["criterion"] == get_reproduction("ssl_ensemble").criterion and isinstance(saved["passed"], bool)
    nums = saved["numbers"]
    assert nums["steps_per_run"] == max(2, round(rep.STEPS * 0.02)) == record["numbers"]["steps_per_run"]
    assert set(nums["verdicts"]) == {"(i) every arm learns", "(ii) ent beats 1 head by > seed spread",
                                     "(iii) unif does not"}
    summary = nums["summary"]
    assert set(summary) == {*rep.ARMS, "random init"}
    for s in summary.values():
        assert [r["seed"] for r in s["runs"]] == [0, 1]
        for m in ("1shot", "5shot", "knn"):
            vals = [r[m] for r in s["runs"]]
            assert all(0.0 <= v <= 1.0 for v in vals)
            assert s[f"{m}_mean"] == pytest.approx(statistics.fmean(vals), abs=1e-5)
            assert s[f"{m}_std"] == pytest.approx(statistics.stdev(vals), abs=1e-5)
    for name in (rep.UNIF, rep.PROB, rep.ENT):
        e = nums["effects_vs_1_head"][name]
        assert e["1shot_gain_over_1_head"] == pytest.approx(
            summary[name]["1shot_mean"] - summary[rep.BASE]["1shot_mean"], abs=1e-5)
        assert e["seed_spread"] == pytest.approx(max(summary[name]["1shot_std"], summary[rep.BASE]["1shot_std"]),
                                                 abs=1e-5)
        assert e["exceeds_spread"] == (e["1shot_gain_over_1_head"] > e["seed_spread"])

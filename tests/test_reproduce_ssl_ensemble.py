"""``vislearn reproduce ssl_ensemble`` runs end to end at a tiny scale; the JSON holds the criteria and the
numbers per arm and seed, each run's 20-NN equal to scikit-learn's on the same backbone (the verdict is not
checked here); gate (i) fails an untrained arm."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from vislearn.data.embedded import TensorImageDataset
from vislearn.metrics.frozen import extract_features
from vislearn.reproduce import get_reproduction, run_reproduction
from vislearn.reproduce import ssl_ensemble as rep


def test_registered_with_claim_and_criterion_before_the_run():
    r = get_reproduction("ssl_ensemble")
    assert "ENT" in r.claim and "UNIF" in r.claim and "seed spread" in r.criterion and r.seeds == (0, 1, 2)
    assert set(rep.ARMS) == {"1 head", f"unif ({rep.HEADS})", f"prob ({rep.HEADS})", f"ent ({rep.HEADS})"}
    shared = set(rep.SMALL_SCALE)  # the arms differ only in heads, scheme and codes
    assert all(set(arm) == {"heads", "scheme", "codes"} and not set(arm) & shared for arm in rep.ARMS.values())


def test_eval_sets_are_held_out_images_of_the_pretraining_digits():
    pre = rep.pretrain_images()
    (xp, yp), (xt, yt) = rep.eval_sets("test")
    # the labelled pool is the pre-training set; the test images are the digits test split, never trained on
    assert torch.equal(xp, pre.images) and torch.equal(yp, pre.targets) and len(xp) + len(xt) == 1797
    assert not (torch.cdist(xt.flatten(1), xp.flatten(1)).min(1).values == 0).any()
    assert xp.shape[1:] == (3, rep.SMALL_SCALE["image_size"], rep.SMALL_SCALE["image_size"])
    assert sorted(set(yt.tolist())) == list(range(10))
    # the tuning's check images: a stratified quarter of the train split, the test split untouched
    (cp, cyp), (cq, cyq) = rep.eval_sets("check")
    assert len(cp) + len(cq) == len(xp) and len(cq) == round(rep.CHECK_FRACTION * len(xp))
    both = torch.cat([cp, cq]).flatten(1)
    assert torch.equal(torch.sort(both, 0).values, torch.sort(xp.flatten(1), 0).values)
    assert (torch.bincount(cyq) - rep.CHECK_FRACTION * torch.bincount(yp)).abs().max() <= 1
    with pytest.raises(ValueError, match="'val'"):
        rep.eval_sets("val")


def _summary(shift_1shot: float, shift_5shot: float) -> dict:
    base = {"1shot_mean": 0.5, "5shot_mean": 0.75, "knn_mean": 0.9}
    arms = {name: {"1shot_mean": 0.5 + shift_1shot, "5shot_mean": 0.75 + shift_5shot, "knn_mean": 0.9}
            for name in rep.ARMS}
    return {**arms, rep.RANDOM_BN: base}


def test_gate_i_fails_an_untrained_arm_and_needs_both_few_shot_gains():
    m = rep.LEARN_MARGIN
    assert rep.every_arm_learns(_summary(0.0, 0.0))[0] is False  # an arm equal to the random backbone
    assert rep.every_arm_learns(_summary(m + 0.005, m + 0.005))[0] is True
    assert rep.every_arm_learns(_summary(m + 0.005, m - 0.005))[0] is False
    assert rep.every_arm_learns(_summary(m - 0.005, m + 0.005))[0] is False
    gains = rep.every_arm_learns(_summary(0.04, 0.05))[1]
    assert gains[rep.ENT] == pytest.approx({"1shot": 0.04, "5shot": 0.05, "knn": 0.0})
    one_fails = _summary(0.05, 0.05)
    one_fails[rep.PROB] = {"1shot_mean": 0.5, "5shot_mean": 0.75, "knn_mean": 0.9}  # one arm did not learn
    assert rep.every_arm_learns(one_fails)[0] is False


def test_random_backbone_with_data_bn_stats_is_the_plain_average():
    from vislearn.recipes.ssl import ssl_backbone

    torch.manual_seed(0)
    net = ssl_backbone(type("C", (), {"backbone": "small_convnet", "drop_path": 0.0})())
    images = torch.rand(300, 3, 16, 16)
    calibrated = rep.with_data_bn_stats(net, images)
    bn = next(m for m in calibrated.stages[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = next(m for m in net.stages[0].modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        pre = conv(net.prepare_input(images))
    assert torch.allclose(bn.running_mean, pre.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, pre.var((0, 2, 3)), rtol=1e-3)
    assert not calibrated.training and all(torch.equal(a, b) for a, b in zip(
        calibrated.parameters(), net.parameters(), strict=True))  # weights untouched, the original unchanged
    assert torch.equal(next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean,
                       torch.zeros(16))


def _sklearn_knn(backbone, sets) -> float:
    """DINO's weighted 20-NN by scikit-learn: cosine distance d, each neighbour's vote exp((1 - d) / 0.07)."""
    (xp, yp), (xt, yt) = [extract_features(backbone, TensorImageDataset(x, y), batch_size=256) for x, y in sets]
    knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", weights=lambda d: np.exp((1 - d) / 0.07))
    return float((knn.fit(xp.numpy(), yp.numpy()).predict(xt.numpy()) == yt.numpy()).mean())


def test_reproduction_runs_tiny(tmp_path, monkeypatch):
    monkeypatch.setitem(rep.SMALL_SCALE, "batch_size", 8)
    eval_sets = rep.eval_sets

    def small_sets(split="test"):  # every 8th pool image and every 6th test image (k-NN k = 20 still fits)
        (xp, yp), (xt, yt) = eval_sets(split)
        return (xp[::8], yp[::8]), (xt[::6], yt[::6])

    monkeypatch.setattr(rep, "eval_sets", small_sets)
    calls = []  # (scores, scikit-learn's 20-NN of the same backbone) of every scoring, in order
    score = rep.score

    def recording_score(backbone, sets):
        out = score(backbone, sets)
        calls.append((out, _sklearn_knn(backbone, sets)))
        return out

    monkeypatch.setattr(rep, "score", recording_score)
    record = run_reproduction("ssl_ensemble", tmp_path, scale=0.02, seeds=(0, 1), log=lambda m: None)
    assert (tmp_path / "ssl_ensemble.json").exists() and (tmp_path / "ssl_ensemble.png").exists()
    saved = json.loads((tmp_path / "ssl_ensemble.json").read_text())
    assert saved["criterion"] == get_reproduction("ssl_ensemble").criterion and isinstance(saved["passed"], bool)
    nums = saved["numbers"]
    assert nums["steps_per_run"] == max(2, round(rep.STEPS * 0.02)) == record["numbers"]["steps_per_run"]
    assert set(nums["verdicts"]) == {"(i) every arm learns", "(ii) ent beats 1 head by > seed spread",
                                     "(iii) unif does not"}
    summary = nums["summary"]
    assert set(summary) == {*rep.ARMS, rep.RANDOM, rep.RANDOM_BN}
    # per seed: the 1-head arm scores its initial backbone plainly and with the data's BN stats, then itself
    # trained; the other arms only themselves trained
    order = [rep.RANDOM, rep.RANDOM_BN, *rep.ARMS]
    assert len(calls) == 2 * len(order)
    for i, (out, oracle) in enumerate(calls):
        assert out["knn"] == pytest.approx(oracle, abs=1e-9)
        seed, name = divmod(i, len(order))
        assert summary[order[name]]["runs"][seed]["knn"] == pytest.approx(oracle, abs=1e-6)  # JSON: 6 decimals
        assert summary[order[name]]["runs"][seed]["1shot"] == pytest.approx(out["1shot"], abs=1e-6)
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

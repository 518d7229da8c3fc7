"""The inception_residual reproduction: its decision rules on hand-made cases, the committed sweep it
depends on, and an end-to-end run at a tiny scale."""

import json
from pathlib import Path

import pytest
import torch

from vislearn.reproduce import get_reproduction, run_reproduction
from vislearn.reproduce import inception_residual as ir

SWEEP = Path(__file__).resolve().parents[1] / "results" / ir.SWEEP_FILE


def _b_run(best, final, zero=0.5, spread=1.0, finite=True, nonfinite=False):
    return {"best_top1": best, "final_top1": final, "nonfinite": nonfinite,
            "deaths": [{"step": 10, "zero_fraction": 0.1, "logit_spread": 2.0, "finite": True},
                       {"step": 20, "zero_fraction": zero, "logit_spread": spread, "finite": finite}]}


@pytest.mark.parametrize(("run", "dead"), [
    (_b_run(0.6, 0.55), False),                       # learned and alive
    (_b_run(0.6, 0.12), True),                        # learned, then back to chance
    (_b_run(0.2, 0.12), False),                       # never learned: not a death (no relapse)
    (_b_run(0.6, 0.5, zero=0.995), True),             # >= 99% zero pre-pool activations at the end
    (_b_run(0.6, 0.5, zero=0.98), False),
    (_b_run(0.6, 0.5, spread=1e-6), True),            # logits the same for every image
    (_b_run(0.6, 0.5, finite=False), True),           # non-finite activations at a check
    (_b_run(0.6, 0.5, nonfinite=True), True),         # the engine stopped on a non-finite loss
])
def test_death_rule(run, dead):
    assert ir._death_verdict(run)["dead"] is dead


def test_choice_rules():
    rows = [{"lr": 0.01, "clip_grad": 0.0, "steps_to_target": 90, "best_top1": 0.6},
            {"lr": 0.03, "clip_grad": 0.0, "steps_to_target": 40, "best_top1": 0.5},
            {"lr": 0.1, "clip_grad": 2.0, "steps_to_target": 40, "best_top1": 0.55},  # tie on steps: higher top-1
            {"lr": 0.3, "clip_grad": 0.0, "steps_to_target": None, "best_top1": 0.9}]  # never: budget + 10
    assert ir.choose_a(rows, 200) == {"lr": 0.1, "clip_grad": 2.0}
    assert ir.choose_a(rows[3:], 200) == {"lr": 0.3, "clip_grad": 0.0}
    assert ir.max_stable_lr([{"lr": 0.03, "stable": True}, {"lr": 0.3, "stable": True},
                             {"lr": 0.1, "stable": False}, {"lr": 1.0, "stable": False}]) == 0.3
    assert ir.max_stable_lr([{"lr": 0.03, "stable": False}]) is None


def test_demo_uses_the_committed_sweep():
    """The lr/clip the demo runs with are the committed sweep's choices, on the grids it states."""
    table = json.loads(SWEEP.read_text())
    assert table["a"]["grid_lr"] == list(ir.A_GRID_LR) and table["a"]["grid_clip"] == list(ir.A_GRID_CLIP)
    assert table["b"]["grid_lr"] == list(ir.B_GRID_LR)
    for model, chosen in ir.A_CHOSEN.items():
        runs = table["a"]["runs"][model]
        assert len(runs["rows"]) == len(ir.A_GRID_LR) * len(ir.A_GRID_CLIP)  # the same grid for both arms
        assert runs["chosen"] == chosen == ir.choose_a(runs["rows"], table["a"]["steps"])
    for scale, lr in ir.B_CHOSEN.items():
        runs = table["b"]["runs"][str(scale)]
        assert len(runs["rows"]) == len(ir.B_GRID_LR)
        assert runs["max_stable_lr"] == lr == ir.max_stable_lr(runs["rows"])


def test_runs_at_tiny_scale(tmp_path):
    rep = get_reproduction("inception_residual")
    assert "35%" in rep.criterion and "0.2" in rep.criterion and "held-out" in rep.criterion
    rec = run_reproduction("inception_residual", tmp_path, scale=0.01, seeds=(0,), log=lambda m: None)
    saved = json.loads((tmp_path / "inception_residual.json").read_text())
    assert saved["name"] == "inception_residual" and (tmp_path / "inception_residual.png").exists()
    a, b = rec["numbers"]["a"], rec["numbers"]["b"]
    assert a["steps"] == 2 and b["steps"] == 2
    # similar cost: the two (a) networks within 30% of each other's multiply-adds
    v4, irv2 = a["runs"]["inception_v4"]["mmacs_75"], a["runs"]["inception_resnet_v2_paper"]["mmacs_75"]
    assert 0.7 < irv2 / v4 < 1.3
    for runs in b["runs"].values():
        assert all(set(d) == {"step", "zero_fraction", "logit_spread", "finite"} for ds in runs["deaths"] for d in ds)
        assert [d["step"] for d in runs["deaths"][0]] == [2]  # a check at the last step
    # 2 steps cannot show either effect: the verdict says untested rather than "not reproduced"
    assert "untested" in saved["verdict"] and "not observed at this scale" in saved["verdict"]


class _Stub(torch.nn.Module):
    """forward_features: a fixed map with a known share of zeros; forward_head: a fixed linear map."""

    def __init__(self, feats: torch.Tensor) -> None:
        super().__init__()
        self.feats = feats

    def forward_features(self, x):
        return [self.feats[: len(x)]]

    def forward_head(self, f):
        return f.flatten(1)[:, :2] * torch.tensor([1.0, 3.0])


def test_death_probe_numbers_by_hand():
    # 4 images x 2 x 2 x 2 maps: 4 zeros per image (16 of 32); logits = the first row of channel 0 x (1, 3)
    feats = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).repeat(4, 2, 1, 1)
    feats[:, 1] = torch.tensor([[0.0, 0.0], [5.0, 6.0]])
    feats[:, 0, 0, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # logit 0 is 0 everywhere, logit 1 = 3 k
    val = [(torch.zeros(3, 8, 8), 0)] * 4
    stub = _Stub(feats).train()
    d = ir._death_probe(stub, val)
    assert stub.training  # back in train mode
    assert d["zero_fraction"] == pytest.approx(16 / 32)
    k = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert d["logit_spread"] == pytest.approx((0.0 + 3 * float(k.std())) / 2)  # the mean over logits of their std
    assert d["finite"] is True
    feats[0, 0, 0, 0] = float("nan")
    assert ir._death_probe(_Stub(feats), val)["finite"] is False

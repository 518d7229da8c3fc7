"""A NaN/inf loss: the run stops with one line naming the step and the terms, or skips up to N steps.

Metrics files stay strict JSON (``null`` where a value is not finite), no checkpoint holds a
non-finite weight, and the last good checkpoint is the one a resume continues from.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from vislearn.cli import main
from vislearn.recipes.classification import ClassifierModule
from vislearn.train import Trainer
from vislearn.train import checkpoint as ckpt
from vislearn.train.engine import NonFiniteLossError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _faults import final_states, finite, overrides, strict_json_lines  # noqa: E402

import _engine_job as job  # noqa: E402

CFG = dict(steps=12, ckpt_every=5, eval_every=0, log_every=2, ckpt_minutes=0)


def _poisoned(bad_steps: set[int], value: float = math.nan):
    """The engine job's task whose loss (and an extra "aux" term) is ``value`` at the given steps."""
    t = job.task()
    forward, calls = t.module.forward, [0]

    def poisoned(batch):
        calls[0] += 1
        out = forward(batch)
        if calls[0] in bad_steps:
            out = {"loss": out["loss"] * value, "aux": torch.tensor(value)}
        else:
            out = {**out, "aux": torch.tensor(0.5)}
        return out

    t.module.forward = poisoned
    return t


def test_nan_loss_stops_naming_the_step_and_terms_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"step 8 \(loss=nan, aux=nan, grad_norm=nan\).*step_00000005"):
        Trainer(job.config(**CFG), _poisoned({8}), tmp_path, progress=False).fit()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000005"
    assert finite(final_states(tmp_path))
    rows = strict_json_lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert not (tmp_path / ".vislearn.lock").exists()  # released on the way out
    # continue with one skip allowed: step 8 (drawn again from the same batch) is skipped, the run ends
    res = Trainer(job.config(**CFG, skip_nonfinite=1), _poisoned({3}), tmp_path, resume=True,
                  progress=False).fit()  # forward call 3 after the resume is step 8
    assert res.step == 12 and finite(final_states(tmp_path))


def test_skip_nonfinite_skips_up_to_n_steps_without_applying_them(tmp_path, capfd):
    # inf at step 4, NaN at step 6: both skipped, the weights stay finite, the records say so
    t = _poisoned({4}, math.inf)
    forward = t.module.forward
    calls = [0]

    def both(batch):
        calls[0] += 1
        out = forward(batch)
        return {"loss": out["loss"] * math.nan, "aux": torch.tensor(math.nan)} if calls[0] == 6 else out

    t.module.forward = both
    seen = []
    res = Trainer(job.config(**CFG, skip_nonfinite=2), t, tmp_path, progress=False,
                  callbacks=[lambda tr, step: seen.append(step)]).fit()
    assert res.step == 12 and finite(final_states(tmp_path))
    assert seen == [s for s in range(1, 13) if s not in (4, 6)]  # hooks see only applied steps
    skipped = [r for r in strict_json_lines(tmp_path / "metrics.jsonl") if r["split"] == "skipped"]
    assert [(r["step"], r["loss"], r["nonfinite"]) for r in skipped] == [
        (4, None, ["aux", "grad_norm", "loss"]), (6, None, ["aux", "grad_norm", "loss"])]
    err = capfd.readouterr().err
    assert "non-finite loss at step 4" in err and "update skipped (2 of skip_nonfinite=2)" in err
    json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    with pytest.raises(NonFiniteLossError, match="step 6.*skipped so far: 1"):
        Trainer(job.config(**CFG, skip_nonfinite=1), _poisoned({4, 6}), tmp_path / "again", progress=False).fit()


def test_a_skipped_step_leaves_the_weights_unchanged():
    tr = Trainer(job.config(**{**CFG, "steps": 3, "skip_nonfinite": 1}), _poisoned({2}), None, progress=False)
    states, real = [], tr.train_step

    def spy(batch):
        out = real(batch)
        states.append({k: v.clone() for k, v in tr.module.state_dict().items()})
        return out

    tr.train_step = spy
    tr.fit()
    assert len(states) == 3
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # step 2: not applied
    assert any(not torch.equal(states[1][k], states[2][k]) for k in states[0])  # step 3: applied
    assert tr.ema.state_dict()["n_averaged"].item() == 2  # nor the EMA


def test_cli_nan_loss_is_one_line_exit_2_and_valid_json(tmp_path, monkeypatch, capsys):
    forward, calls = ClassifierModule.forward, [0]

    def diverging(self, batch):
        calls[0] += 1
        out = forward(self, batch)
        return {**out, "loss": out["loss"] * (math.inf if calls[0] >= 5 else 1.0)}

    monkeypatch.setattr(ClassifierModule, "forward", diverging)
    sets = [a for k, v in overrides("classify", steps=8, ckpt_every=2).items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "classify", "--out", str(tmp_path), *sets]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"step \d+/\d+ ", line)]  # progress lines of a run without a terminal
    assert len(err) == 1 and err[0].startswith("vislearn: error: non-finite loss at step 5 (loss=inf"), err
    assert "step_00000004" in err[0]
    strict_json_lines(tmp_path / "metrics.jsonl")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000004"

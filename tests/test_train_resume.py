"""Resuming compares the saved config: a field that changes the run is refused by name, logging ones pass."""

from __future__ import annotations

import pytest

from vislearn import recipes
from vislearn.cli import main
from vislearn.errors import UserError
from vislearn.train.resume import MAY_CHANGE_ON_RESUME, compare_configs, reseed_value

TINY = {"steps": 4, "batch_size": 16, "log_every": 2, "eval_every": 0, "ckpt_every": 2, "ckpt_minutes": 0,
        "hidden": (16, 16)}


@pytest.fixture
def run_dir(tmp_path):
    recipes.run("batchnorm", "quick", {**TINY, "steps": 2}, out=tmp_path, progress=False)
    return tmp_path


def test_resume_with_another_recipe_or_architecture_is_refused_by_name(run_dir, capsys):
    sets = [a for k, v in {**TINY, "steps": 2}.items() if k != "hidden" for a in ("--set", f"{k}={v}")]
    assert main(["train", "classify", "--out", str(run_dir), *sets, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe: saved 'batchnorm', now 'classify'" in err[0], err
    with pytest.raises(UserError, match=r"hidden: saved \[16, 16\], now \[32, 16\]"):
        recipes.run("batchnorm", "quick", {**TINY, "steps": 2, "hidden": (32, 16)}, out=run_dir, resume=True,
                    progress=False)
    for field, value in (("eval_every", 1), ("seed", 5), ("steps", 9), ("batch_size", 32)):
        with pytest.raises(UserError, match=f"cannot resume .*{field}: saved"):
            recipes.run("batchnorm", "quick", {**TINY, "steps": 2, field: value}, out=run_dir, resume=True,
                        progress=False)


def test_logging_and_checkpointing_fields_may_change(run_dir):
    res = recipes.run("batchnorm", "quick", {**TINY, "steps": 2, "log_every": 1, "ckpt_every": 1, "ckpt_minutes": 3,
                                             "keep_checkpoints": 4, "skip_nonfinite": 2, "ckpt_at_eval": False},
                      out=run_dir, resume=True, progress=False)
    assert res.step == 2
    assert MAY_CHANGE_ON_RESUME == {"log_every", "ckpt_every", "ckpt_minutes", "ckpt_at_eval", "keep_checkpoints",
                                    "skip_nonfinite", "dist_timeout_minutes"}


def test_compare_configs_by_hand():
    compare_configs({"a": [1, 2], "lr": 0.1, "old": 1}, {"a": (1, 2), "lr": 0.1, "new": 2}, "x")  # tuple == list
    with pytest.raises(UserError, match="a: saved"):
        compare_configs({"a": [1, 2]}, {"a": (2, 1)}, "x")
    assert reseed_value(3, 40, 1) == 3 * 1_000_003 + 40 * 10_007 + 1



def test_resume_at_another_world_size_reseeds_from_seed_step_and_rank(tmp_path, monkeypatch, capsys):
    """A checkpoint saved by 2 processes (two RNG states) resumed on one: the random streams are seeded with
    reseed_value(seed, step, rank), not the saved states and not the fresh run's seed (issue 15.2)."""
    import torch

    from vislearn.train import engine

    over = {k: v for k, v in {**TINY, "steps": 2, "seed": 5}.items() if k != "hidden"}
    with monkeypatch.context() as m:
        m.setattr(engine, "all_gather_objects", lambda obj, info: [obj, obj])  # what 2 processes save
        recipes.run("classify", "quick", over, out=tmp_path, progress=False)
    cfg, task = recipes.build("classify", "quick", over)
    trainer = engine.Trainer(cfg, task, tmp_path, resume=True, progress=False)
    assert torch.initial_seed() == reseed_value(5, 2, 0) != 5
    assert trainer.fit().step == 2
    assert "resuming a 2-process checkpoint on 1: the data order continues at step 2" in capsys.readouterr().err

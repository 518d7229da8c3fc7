"""Recipes inception_v4 / inception_resnet_v2 / inception_resnet_v1: paper values and 2-step smoke runs."""

from __future__ import annotations

import math
import sys as _sys
from pathlib import Path as _Path

import pytest

from vislearn.errors import UserError
from vislearn.recipes import get_recipe
from vislearn.train.engine import Trainer

_sys.path.insert(0, str(_Path(__file__).parent))
from _oracles import top1_by_hand  # noqa: E402

NAMES = ("inception_v4", "inception_resnet_v2", "inception_resnet_v1")


@pytest.mark.parametrize("name", NAMES)
def test_paper_preset_is_the_papers_recipe(name):
    cfg = get_recipe(name).config("paper")
    assert cfg.model == name and cfg.image_size == 299 and cfg.width == 1.0
    assert (cfg.optimizer, cfg.rmsprop_decay, cfg.optimizer_eps, cfg.lr) == ("rmsprop_tf", 0.9, 1.0, 0.045)
    assert (cfg.schedule, cfg.decay_rate, cfg.decay_epochs) == ("staircase", 0.94, 2.0)
    assert cfg.clip_grad > 0 and cfg.ema_decay > 0 and cfg.ema_eval
    assert cfg.drop_rate == pytest.approx(0.2)  # keep probability 0.8
    assert not cfg.aux_logits and cfg.aux_weight == 0.0  # no auxiliary head in the v4 paper
    v3 = get_recipe("inception_v3").config("paper")  # the v4 paper trains with the v3 recipe (Sec. 4)
    for k in ("optimizer", "lr", "decay_rate", "decay_epochs", "clip_grad", "ema_decay", "weight_decay",
              "batch_per_replica", "epochs", "bn_decay"):
        assert getattr(cfg, k) == getattr(v3, k), k


@pytest.mark.parametrize("name, preset", [(n, p) for n in NAMES for p in ("quick", "paper")])
def test_two_steps(name, preset):
    r = get_recipe(name)
    # the paper preset on embedded data at 75 px (no ImageNet here): same optimiser, EMA, clipping
    cfg = r.config(preset, {"steps": 2, "epochs": 0, "batch_per_replica": 0, "width": 0.05, "batch_size": 8,
                            "dataset": "shapes", "image_size": 75, "eval_batch_size": 250, "log_every": 1,
                            "eval_every": 0, "ckpt_every": 0})
    task = r.build(cfg)
    assert task.param_groups[1]["weight_decay"] == 0.0  # no decay on BN / biases (TF-slim)
    trainer = Trainer(cfg, task, out_dir=None, progress=False)
    assert trainer.cfg.decay_every == 2 * (len(task.train_set) // 8)  # two epochs, in steps (resolved by the engine)
    res = trainer.fit()
    assert res.step == 2
    train = [h for h in res.history if h["split"] == "train"]
    assert len(train) == 2 and all(math.isfinite(h["loss"]) for h in train)
    assert train[0]["lr"] == pytest.approx(0.045)
    assert res.final_metrics["top1"] == pytest.approx(top1_by_hand(trainer), abs=1e-6)  # a float32 mean


def test_bad_settings():
    r = get_recipe("inception_v4")
    with pytest.raises(UserError, match="image_size"):
        r.build(r.config("quick", {"image_size": 64}))
    with pytest.raises(UserError, match="model"):
        r.build(r.config("quick", {"model": "mlp"}))
    with pytest.raises(UserError, match="--data"):
        r.build(r.config("paper"))
    with pytest.raises(UserError, match="auxiliary"):
        r.build(r.config("quick", {"aux_logits": "true"}))

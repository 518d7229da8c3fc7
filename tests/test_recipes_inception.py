"""Recipe ``inception_v3``: the paper preset's values, derived epoch settings, 2-step smoke runs."""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

import numpy as np
import pytest
import torch

from vislearn.errors import UserError
from vislearn.recipes import get_recipe
from vislearn.recipes.inception import inception_v3_paper
from vislearn.train import Trainer
from vislearn.train.engine import resolve_config
from vislearn.train.optim import RMSpropTF

_sys.path.insert(0, str(_Path(__file__).parent))
from _oracles import top1_by_hand  # noqa: E402


def test_paper_preset_values():
    cfg = get_recipe("inception_v3").config("paper")
    assert (cfg.optimizer, cfg.rmsprop_decay, cfg.optimizer_eps, cfg.lr) == ("rmsprop_tf", 0.9, 1.0, 0.045)
    assert (cfg.schedule, cfg.decay_rate, cfg.decay_epochs) == ("staircase", 0.94, 2.0)
    assert (cfg.clip_grad, cfg.label_smoothing, cfg.aux_weight) == (2.0, 0.1, 0.4)
    assert cfg.ema_decay == 0.9999 and cfg.bn_decay == 0.9997  # weight EMA vs BN statistics
    assert (cfg.batch_per_replica, cfg.image_size, cfg.epochs, cfg.weight_decay) == (32, 299, 100.0, 4e-5)
    assert cfg.lr_per_replica == 0.045  # Sec. 8's lr per batch-32 update; the module docstring's rule


def test_epoch_settings_from_dataset_size_and_world_size():
    # ImageNet on the paper's 50 replicas
    cfg = resolve_config(inception_v3_paper(), train_size=1_281_167, world_size=50)
    assert cfg.batch_size == 1600
    assert cfg.decay_every == round(2 * (1_281_167 // 1600))  # two epochs
    assert cfg.steps == 100 * (1_281_167 // 1600)
    assert cfg.lr == pytest.approx(0.045 * 50)  # linear scaling: each image's step is 0.045 / 32, as in the paper
    one = resolve_config(inception_v3_paper(), train_size=1_281_167, world_size=1)
    assert (one.batch_size, one.lr, one.steps) == (32, 0.045, 100 * (1_281_167 // 32))  # the paper's update stream


def test_a_global_lr_turns_the_per_replica_rule_off():
    recipe = get_recipe("inception_v3")
    cfg = recipe.config("paper", ["lr=0.045"])
    assert cfg.lr_per_replica == 0.0
    assert resolve_config(cfg, train_size=1_281_167, world_size=8).lr == 0.045
    assert resolve_config(recipe.config("quick"), train_size=1000, world_size=8).lr == 0.045


def _image_folder(root, classes=("cat", "dog"), per_class=3, size=90):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size + 7, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_paper_preset_two_steps_on_tiny_image_folder(tmp_path):
    recipe = get_recipe("inception_v3")
    # the paper preset with a smaller input, width and per-replica batch so it runs in seconds
    cfg = recipe.config("paper", ["image_size=75", "width=0.25", "batch_per_replica=2", "epochs=0",
                                  "steps=2", "eval_every=0", "ckpt_every=0", "eval_batch_size=6"])
    task = recipe.build(cfg, str(_image_folder(tmp_path / "data")))
    bn = task.module.model.Mixed_5b.branch1x1.bn
    assert bn.momentum == pytest.approx(0.0003)
    trainer = Trainer(cfg, task, None, progress=False)
    # resolved by the engine (the recipe's config is not rewritten)
    assert trainer.cfg.batch_size == 2 and trainer.cfg.decay_every == 6  # 6 images / batch 2 = 3 steps/epoch, × 2
    assert isinstance(trainer.optimizer, RMSpropTF)
    wd = sorted(g["weight_decay"] for g in trainer.optimizer.param_groups)
    assert wd == [0.0, 4e-5]
    before = task.module.model.fc.weight.detach().clone()
    result = trainer.fit()
    assert result.step == 2 and set(result.final_metrics) >= {"top1", "ece"}
    assert not torch.equal(before, task.module.model.fc.weight)


def test_quick_preset_two_steps():
    recipe = get_recipe("inception_v3")
    cfg = recipe.config("quick", ["steps=2", "batch_size=8", "width=0.25", "eval_batch_size=150"])
    assert cfg.dataset == "digits" and cfg.image_size == 75 and cfg.precision == "bf16"
    task = recipe.build(cfg)
    x, y = task.train_set[0]
    assert x.shape == (3, 75, 75)
    trainer = Trainer(cfg, task, None, progress=False)
    result = trainer.fit()
    assert result.step == 2
    assert result.final_metrics["top1"] == pytest.approx(top1_by_hand(trainer), abs=1e-6)  # a float32 mean
    logged = [h for h in result.history if h["split"] == "eval"]
    assert logged and np.isfinite(logged[-1]["loss"])


def test_bad_settings():
    recipe = get_recipe("inception_v3")
    with pytest.raises(UserError, match="at least 75"):
        recipe.build(recipe.config("quick", ["image_size=64"]))
    with pytest.raises(UserError, match="needs --data"):
        recipe.build(recipe.config("paper"))

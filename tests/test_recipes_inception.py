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
    fc = task.module.model.fc.weight
    seen = []  # per optimizer step: fc weight and its (clipped) gradient, the group's lr, the global grad norm

    def record(opt, args, kwargs):
        group = next(g for g in opt.param_groups if any(p is fc for p in g["params"]))
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append((fc.detach().clone(), fc.grad.detach().clone(), group["lr"], group["weight_decay"],
                     float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))))

    trainer.optimizer.register_step_pre_hook(record)
    result = trainer.fit()
    assert result.step == 2 and set(result.final_metrics) >= {"top1", "ece"}
    # Sec. 8 by hand: TF RMSProp (ms from 1, decay 0.9, eps 1 inside the root, lr in the momentum 0.9 buffer,
    # L2 4e-5 added to the gradient) on the gradients the engine clipped to global norm <= 2.0, lr 0.045.
    assert len(seen) == 2
    w = seen[0][0].double()
    ms, mom = torch.ones_like(w), torch.zeros_like(w)
    for _, grad, lr, wd, norm in seen:
        assert lr == pytest.approx(0.045) and wd == pytest.approx(4e-5) and norm <= 2.0 + 1e-4
        g = grad.double() + wd * w
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + lr * g / torch.sqrt(ms + 1.0)
        w = w - mom
    moved, predicted = fc.detach().double() - seen[0][0].double(), w - seen[0][0].double()
    assert predicted.abs().max() > 0
    # float32 weights: compare the two-step update itself, to 1 % of its largest entry
    torch.testing.assert_close(moved, predicted, rtol=0, atol=1e-2 * float(predicted.abs().max()))


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

"""Recipe ``batchnorm`` (quick and paper presets) and ``vislearn reproduce batchnorm`` at a tiny scale."""

import json
import sys as _sys
from pathlib import Path as _Path

import pytest
import torch

from vislearn.errors import UserError
from vislearn.recipes import get_recipe
from vislearn.recipes.classification import ClassifierModule
from vislearn.train import Trainer

_sys.path.insert(0, str(_Path(__file__).parent))
from _oracles import top1_by_hand  # noqa: E402


def test_paper_preset_values_and_two_steps_on_shapes():
    recipe = get_recipe("batchnorm")
    cfg = recipe.config("paper")
    assert (cfg.model, cfg.image_size, cfg.batch_size, cfg.momentum) == ("bn_inception", 224, 32, 0.9)
    assert cfg.lr == pytest.approx(0.0075) and recipe.config("paper_x30").lr == pytest.approx(0.045)
    assert cfg.drop_rate == 0.0 and cfg.weight_decay == pytest.approx(4e-5)
    assert cfg.decay_every_epochs == pytest.approx(8 / 6) and cfg.decay_rate == 0.96
    with pytest.raises(UserError, match="--data"):
        recipe.build(cfg)  # the ImageNet layout needs a folder
    cfg = recipe.config("paper", {"dataset": "shapes", "image_size": 32, "batch_size": 8, "steps": 2,
                                  "eval_batch_size": 500, "log_every": 1})
    task = recipe.build(cfg)
    assert isinstance(task.module, ClassifierModule)
    trainer = Trainer(cfg, task, None, progress=False)  # the engine resolves epochs into steps
    assert trainer.cfg.decay_every == round(8 / 6 * (len(task.train_set) // 8))  # 8/6 epochs, in steps
    result = trainer.fit()
    train = [h for h in result.history if h["split"] == "train"]
    assert len(train) == 2 and all(h["loss"] == h["loss"] for h in train)
    assert result.final_metrics["top1"] == pytest.approx(top1_by_hand(trainer), abs=1e-6)  # a float32 mean


def test_quick_preset_learns_digits_with_paper_bn():
    recipe = get_recipe("batchnorm")
    cfg = recipe.config("quick", {"steps": 150, "bn_impl": "paper", "log_every": 50})
    task = recipe.build(cfg)
    assert sum(type(m).__name__ == "BatchNorm1d" and m.__module__ == "vislearn.nn.batchnorm"
               for m in task.module.modules()) == 3
    result = Trainer(cfg, task, None, progress=False).fit()
    assert result.final_metrics["top1"] > 0.8  # BN at lr 0.5 passes 90% within ~100 steps on digits
    with pytest.raises(UserError, match="bn_inception"):
        recipe.build(recipe.config("quick", {"dataset": "shapes"}))


def test_reproduction_runs_at_tiny_scale(tmp_path):
    from vislearn.reproduce import run_reproduction

    record = run_reproduction("batchnorm", tmp_path, scale=0.02, seeds=(0,), log=lambda m: None)
    saved = json.loads((tmp_path / "batchnorm.json").read_text())
    assert saved["criterion"] == record["criterion"] and "1/5" in saved["criterion"]
    assert (tmp_path / "batchnorm.png").stat().st_size > 10_000
    n = record["numbers"]
    assert set(n["median_steps_to_90"]) == {"noBN lr=0.1", "noBN lr=0.5", "noBN lr=1", "noBN lr=2", "noBN lr=4",
                                            "noBN lr=8", "BN", "BN-x5", "BN-x30"}
    assert n["lrs"]["BN-x30"] == pytest.approx(30 * n["best_no_bn_lr"])


def test_paper_preset_on_an_imagenet_layout_folder(tmp_path):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    recipe = get_recipe("batchnorm")
    cfg = recipe.config("paper", {"image_size": 32, "batch_size": 4, "steps": 1, "log_every": 1})
    task = recipe.build(cfg, str(tmp_path))
    assert task.train_set.classes == ["cat", "dog"] and len(task.eval_set) == 4
    x, _ = task.train_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert any(type(t).__name__ == "ColorJitter" for t in task.train_set.transform.transforms)
    result = Trainer(cfg, task, None, progress=False).fit()
    assert result.step == 1 and "top1" in result.final_metrics

"""``vislearn.recipes.run``: the one way to run a recipe (seeding, config resolution, no mutation)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from vislearn import recipes
from vislearn.cli import main
from vislearn.errors import UserError
from vislearn.models import create_model
from vislearn.train.engine import TrainConfig, resolve_config

# the Sec. 4.1 MLP on digits: a few steps take well under a second
TINY = {"steps": 4, "batch_size": 32, "log_every": 2, "eval_every": 0, "ckpt_every": 0}


def _weights(result: recipes.RecipeRun) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.task.module.model.state_dict().items()}


def test_run_equals_what_vislearn_train_writes(tmp_path, capsys):
    torch.manual_seed(12345)  # whatever the global RNG holds before, run seeds it itself
    mem = recipes.run("batchnorm", "quick", {**TINY, "seed": 3}, progress=False)
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "batchnorm", "--out", str(tmp_path / "cli"), *sets, "--set", "seed=3"]) == 0
    written = load_file(str(tmp_path / "cli" / "model.safetensors"))
    ours = _weights(mem)
    assert set(written) == set(ours)
    for k, v in ours.items():
        assert torch.equal(written[k], v), k
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["step"] == 4 and printed["top1"] == pytest.approx(mem.final_metrics["top1"])


def test_same_seed_same_weights_other_seed_other_weights():
    a = recipes.run("batchnorm", "quick", {**TINY, "seed": 0}, progress=False)
    torch.rand(1000)  # consume the global RNG between runs: the next run must not notice
    b = recipes.run("batchnorm", "quick", {**TINY, "seed": 0}, progress=False)
    c = recipes.run("batchnorm", "quick", {**TINY, "seed": 1}, progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    first = next(k for k in wa if k.endswith("weight"))  # the first linear layer
    assert not torch.equal(wa[first], wc[first])
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_initial_weights_are_seeded_in_run():
    """``on_build`` sees the model before the engine exists: its init is a function of cfg.seed only."""
    seen = []

    def grab(cfg, task):
        seen.append(torch.cat([p.detach().flatten() for p in task.module.model.parameters()]))

    for seed, noise in ((5, 0), (5, 1), (6, 0)):
        torch.manual_seed(noise)
        recipes.run("batchnorm", "quick", {**TINY, "steps": 1, "seed": seed}, progress=False, on_build=grab)
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])


def test_evaluate_saved_weights_through_the_same_path(tmp_path):
    res = recipes.run("batchnorm", "quick", {**TINY, "seed": 2}, out=tmp_path / "run", progress=False)
    metrics = recipes.evaluate("batchnorm", tmp_path / "run" / "model.safetensors", "quick", {**TINY, "seed": 7})
    assert metrics["top1"] == pytest.approx(res.final_metrics["top1"])  # quick keeps no EMA: same weights
    assert metrics["loss"] == pytest.approx(res.final_metrics["loss"], rel=1e-5)
    with pytest.raises(UserError, match="already holds a run"):
        recipes.run("batchnorm", "quick", TINY, out=tmp_path / "run", progress=False)


def test_resolve_config_by_hand():
    cfg = TrainConfig(batch_size=7, batch_per_replica=32, epochs=2.0, decay_epochs=3.0, steps=999, decay_every=5)
    before = copy.deepcopy(cfg)
    r = resolve_config(cfg, train_size=1000, world_size=4)
    # batch 32 × 4 = 128; an epoch is floor(1000 / 128) = 7 steps (the engine drops the last partial
    # batch); steps = round(2 × 7) = 14; decay_every = round(3 × 7) = 21
    assert (r.batch_size, r.steps, r.decay_every) == (128, 14, 21)
    assert cfg == before and r is not cfg  # pure: the input is not changed
    one = resolve_config(cfg, train_size=1000, world_size=1)
    assert (one.batch_size, one.steps, one.decay_every) == (32, 62, 93)  # 1000 // 32 = 31 steps per epoch
    plain = TrainConfig(batch_size=50, steps=10, decay_every=3)
    assert resolve_config(plain, 1000, 4) == plain  # nothing stated in epochs or per replica: unchanged
    half = resolve_config(TrainConfig(batch_size=64, epochs=0.01, decay_epochs=0.01), 1000, 1)
    assert (half.steps, half.decay_every) == (1, 1)  # at least one step
    scaled = resolve_config(TrainConfig(lr=0.3, lr_per_replica=0.045), 1000, 4)
    assert scaled.lr == pytest.approx(0.18)  # 0.045 × 4 processes replaces lr
    assert resolve_config(TrainConfig(lr=0.3), 1000, 4).lr == 0.3


def test_engine_resolves_and_records_epochs(tmp_path):
    # a quarter epoch of the digits train split at 60 per batch; the run's record holds the resolved steps
    res = recipes.run("batchnorm", "quick", {"epochs": 0.25, "batch_size": 60, "log_every": 0, "eval_every": 0,
                                             "ckpt_every": 0}, out=tmp_path, progress=False)
    n = len(res.task.train_set)
    assert res.step == round(0.25 * (n // 60)) and res.cfg.steps == 1000  # the recipe's config is untouched
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["steps"] == res.step and summary["config"]["epochs"] == 0.25


@pytest.mark.parametrize("name, preset, over", [
    ("inception_v3", "quick", {"width": 0.05}),
    ("inception_v3", "paper", {"width": 0.05, "dataset": "digits", "image_size": 75}),
    ("inception_v4", "paper", {"width": 0.05, "depths": (1, 1, 1), "dataset": "digits", "image_size": 75}),
    ("batchnorm", "paper", {"dataset": "shapes", "image_size": 32}),
    ("proxy_nca", "quick", {"shapes_per_class": 4}),
])
def test_config_unchanged_by_build_and_trainer(name, preset, over):
    from vislearn.train import Trainer

    recipe = recipes.get_recipe(name)
    cfg = recipe.config(preset, over)
    before = copy.deepcopy(dataclasses.asdict(cfg))
    task = recipe.build(cfg)
    Trainer(cfg, task, None, progress=False)
    assert dataclasses.asdict(cfg) == before


@pytest.mark.parametrize("name, kw", [("inception_v3", {}), ("inception_v4", {"depths": (1, 1, 1)}),
                                      ("inception_resnet_v2", {"depths": (1, 1, 1)})])
def test_bn_momentum_is_a_model_option(name, kw):
    model = create_model(name, num_classes=3, width=0.05, bn_momentum=0.0003, **kw)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.0003 for m in bns)
    default = create_model(name, num_classes=3, width=0.05, **kw)
    assert all(m.momentum == 0.1 for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(UserError, match="bn_momentum"):
        create_model(name, num_classes=3, width=0.05, bn_momentum=0.0)


def test_recipe_sets_bn_momentum_from_bn_decay():
    task = recipes.get_recipe("inception_v4").build(recipes.get_recipe("inception_v4").config(
        "quick", {"width": 0.05, "depths": (1, 1, 1), "dataset": "digits", "bn_decay": 0.99}))
    bns = [m for m in task.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(0.01) for m in bns)


# what each recipe does with a --data folder in ImageFolder layout: trains on it, or refuses in one line
READS_IMAGEFOLDER = {"classify": "folder", "inception_v3": "imagenet", "inception_v4": "imagenet",
                     "inception_resnet_v1": "imagenet", "inception_resnet_v2": "imagenet"}
REFUSES = {"multibox": "recipe 'multibox' reads", "multilabel": "recipe 'multilabel' reads",
           "proxy_nca": "recipe 'proxy_nca' reads", "perceptual": "not a TID2013",
           "batchnorm": "use model=bn_inception for image data",  # quick: the Sec. 4.1 digits MLP
           "latent_diffusion": "needs --set autoencoder"}  # it reads the folder once an autoencoder is named
# recipes that read the folder into their own dataset types (multi-crop views, crops): the dataset setting
# they switch to, and the number of training images they must hold (the folder's 24)
READS_IMAGEFOLDER_OWN_TYPES = {"dino": "folder", "msn": "folder", "swycc": "imagenet"}


@pytest.mark.parametrize("name", recipes.list_recipes())
def test_data_is_always_used_or_refused(name, image_folder):
    assert name in READS_IMAGEFOLDER or name in REFUSES or name in READS_IMAGEFOLDER_OWN_TYPES, \
        f"say what {name} does with --data"
    if name in READS_IMAGEFOLDER_OWN_TYPES:
        cfg, task = recipes.build(name, "quick", None, data=str(image_folder))
        assert cfg.dataset == READS_IMAGEFOLDER_OWN_TYPES[name] and len(task.train_set) == 24  # the folder's
        return
    if name in REFUSES:
        with pytest.raises(UserError, match=REFUSES[name]):
            recipes.build(name, "quick", None, data=str(image_folder))
        return
    cfg, task = recipes.build(name, "quick", None, data=str(image_folder))
    assert cfg.dataset == READS_IMAGEFOLDER[name]
    assert len(task.train_set) == 24 and task.train_set.classes == ["cat", "dog"]  # the folder, not embedded data
    assert len(task.eval_set) == 8


def test_batchnorm_trains_bn_inception_on_the_folder(image_folder):
    cfg, task = recipes.build("batchnorm", "quick", ["model=bn_inception", "image_size=64"], data=str(image_folder))
    assert cfg.dataset == "imagenet" and len(task.train_set) == 24 and task.train_set.classes == ["cat", "dog"]
    assert task.model.fc.out_features == 2


def test_multibox_reads_a_coco_folder_and_named_dataset_is_kept(coco_folder, image_folder):
    cfg, task = recipes.build("multibox", "quick", None, data=str(coco_folder))
    assert cfg.dataset == "coco" and (len(task.train_set), len(task.eval_set)) == (6, 3)
    with pytest.raises(UserError, match="dataset=shapes is embedded data, so --data"):
        recipes.build("batchnorm", "quick", ["dataset=shapes"], data=str(image_folder))

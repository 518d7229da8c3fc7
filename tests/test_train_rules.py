"""Config rules (vislearn.train.rules): every preset of every recipe passes; bad values are one line, exit 2."""

from __future__ import annotations

import dataclasses

import pytest

from vislearn.cli import main
from vislearn.errors import UserError
from vislearn.recipes import get_recipe, list_recipes
from vislearn.train.config import TrainConfig
from vislearn.train.rules import TRAIN_RULES, check_config, rules_of

PRESETS = [(name, preset) for name in list_recipes() for preset in get_recipe(name).presets]


@pytest.mark.parametrize("name, preset", PRESETS)
def test_every_preset_passes_its_rules(name, preset):
    cfg = get_recipe(name).config(preset)
    assert check_config(cfg) is cfg
    rules = rules_of(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert set(rules) <= fields, f"rules for settings {type(cfg).__name__} does not have: {set(rules) - fields}"


def test_every_engine_setting_with_a_range_has_a_rule():
    # every int/str engine setting is bounded (optimizer_eps < 0 means "the optimizer's default": any float;
    # compile_backend is any torch.compile backend name)
    free = {"optimizer_eps", "compile_backend"}
    for f in dataclasses.fields(TrainConfig):
        if f.type in ("int", "float", "str") and f.name not in free:
            assert f.name in TRAIN_RULES, f.name


@pytest.mark.parametrize("name, setting, message", [
    ("classify", "lr=nan", "lr=nan is not a finite number"),
    ("classify", "lr=inf", "lr=inf is not a finite number"),
    ("classify", "weight_decay=-inf", "weight_decay=-inf is not a finite number"),
    ("classify", "device=tpu", "unknown device 'tpu' (setting device); expected one of auto | cpu | cuda | cuda:N"),
    ("classify", "image_size=0", "image_size=0 is not allowed; expected >= 1"),
    ("classify", "eval_batch_size=-3", "eval_batch_size=-3 is not allowed; expected >= 0"),
    ("classify", "num_workers=-1", "num_workers=-1 is not allowed; expected >= 0"),
    ("classify", "momentum=1.5", "momentum=1.5 is not allowed; expected in [0, 1)"),
    ("classify", "optimizer=adagrad", "unknown optimizer 'adagrad' (setting optimizer); expected one of sgd"),
    ("batchnorm", "hidden=100,0", "hidden=(100, 0) is not allowed; expected >= 1"),
    ("inception_v3", "width=0", "width=0.0 is not allowed; expected > 0"),
    ("inception_v4", "bn_decay=1", "bn_decay=1.0 is not allowed"),  # a base class's rule applies
    ("multibox", "nms_iou=2", "nms_iou=2.0 is not allowed; expected in [0, 1]"),
    ("multilabel", "loss=hinge", "unknown loss 'hinge'"),
    ("proxy_nca", "scale=nan", "scale=nan is not a finite number"),
    ("perceptual", "val_fraction=1", "val_fraction=1.0 is not allowed"),
])
def test_bad_values_are_one_line_and_exit_2(name, setting, message, tmp_path, capsys):
    with pytest.raises(UserError, match="not|unknown"):
        get_recipe(name).config("quick", [setting])
    assert main(["train", name, "--set", setting, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_a_directly_set_length_wins_over_the_presets_epochs():
    recipe = get_recipe("inception_v3")
    assert recipe.presets["paper"].epochs == 100  # the preset states its length in epochs
    cfg = recipe.config("paper", ["steps=500"])
    assert (cfg.steps, cfg.epochs) == (500, 0)
    cfg = recipe.config("paper", ["batch_size=64", "decay_every=7"])
    assert (cfg.batch_size, cfg.batch_per_replica, cfg.decay_every, cfg.decay_epochs) == (64, 0, 7, 0)
    assert recipe.config("paper", ["epochs=3"]).epochs == 3
    with pytest.raises(UserError, match="set steps or epochs, not both"):
        recipe.config("paper", ["steps=500", "epochs=3"])
    assert recipe.config("paper", ["steps=500", "epochs=0"]).steps == 500

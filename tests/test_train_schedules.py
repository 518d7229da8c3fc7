"""Scalar schedules (train/schedules.py) against their closed forms; lr_factor keeps its old values."""

from __future__ import annotations

import functools
import math

import pytest

from vislearn.train.schedules import constant, cosine, exponential, linear, lr_factor


def test_constant():
    assert constant(0, 0.07) == constant(10_000, 0.07) == 0.07


def test_cosine_closed_form_and_clamping():
    # end + (start - end) * (1 + cos(pi * t)) / 2 with t = step / total
    assert cosine(0, 100, 1.0, 0.1) == pytest.approx(1.0)
    assert cosine(50, 100, 1.0, 0.1) == pytest.approx(0.55)
    assert cosine(25, 100, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine(100, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert cosine(500, 100, 1.0, 0.1) == pytest.approx(0.1)  # holds the end value


def test_cosine_with_warmup():
    # linear from warmup_start at 0 to start at warmup_steps, then the cosine over the remaining steps
    assert cosine(0, 110, 1.0, 0.0, warmup_steps=10, warmup_start=0.2) == pytest.approx(0.2)
    assert cosine(5, 110, 1.0, 0.0, warmup_steps=10, warmup_start=0.2) == pytest.approx(0.6)
    assert cosine(10, 110, 1.0, 0.0, warmup_steps=10, warmup_start=0.2) == pytest.approx(1.0)
    assert cosine(60, 110, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)


def test_linear_closed_form():
    # DINO's teacher temperature: 0.04 -> 0.07 over 30 warm-up epochs, then constant
    temp = functools.partial(linear, total_steps=30, start=0.04, end=0.07)
    assert [temp(s) for s in (0, 10, 15, 30, 100)] == pytest.approx([0.04, 0.05, 0.055, 0.07, 0.07])
    assert linear(2, 10, 1.0, 0.0, warmup_steps=4) == pytest.approx(0.5)
    assert linear(7, 10, 1.0, 0.0, warmup_steps=4) == pytest.approx(0.5)


def test_exponential_and_staircase():
    assert exponential(250, 1.0, 0.94, every=100, staircase=True) == pytest.approx(0.94**2)
    assert exponential(250, 2.0, 0.94, every=100) == pytest.approx(2.0 * 0.94**2.5)


def test_dino_teacher_momentum_cosine():
    # Caron et al. 2021: m(i) = 1 - (1 - 0.996) * (cos(pi i / T) + 1) / 2
    total = 1000
    m = functools.partial(cosine, total_steps=total, start=0.996, end=1.0)
    for i in (0, 1, 250, 500, 999, 1000):
        assert m(i) == pytest.approx(1 - 0.004 * (math.cos(math.pi * i / total) + 1) / 2, abs=1e-12)
    assert m(0) == pytest.approx(0.996) and m(total) == pytest.approx(1.0)


def _old_lr_factor(step, schedule, total_steps, warmup_steps, decay_every, decay_rate, min_lr_ratio):
    """The formulas lr_factor had before the scalar schedules existed (the behaviour to keep)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    t = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
    decay = {"constant": 1.0,
             "cosine": min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)),
             "linear": 1 - (1 - min_lr_ratio) * t,
             "staircase": decay_rate ** (step // max(decay_every, 1)),
             "exponential": decay_rate ** (step / max(decay_every, 1))}[schedule]
    return warm * decay


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear", "staircase", "exponential"])
@pytest.mark.parametrize("warmup", [0, 7])
def test_lr_factor_is_unchanged(schedule, warmup):
    kw = dict(total_steps=57, warmup_steps=warmup, decay_every=5, decay_rate=0.9, min_lr_ratio=0.05)
    for step in range(0, 70):
        assert lr_factor(step, schedule=schedule, **kw) == _old_lr_factor(step, schedule, **kw)


@pytest.mark.parametrize("fn", [cosine, linear])
def test_warmup_edges(fn):
    # the last warm-up step is still on the ramp; a one-step warm-up starts at warmup_start
    assert fn(9, 110, 1.0, 0.0, warmup_steps=10, warmup_start=0.2) == pytest.approx(0.2 + 0.8 * 9 / 10)
    assert fn(0, 10, 1.0, 0.0, warmup_steps=1, warmup_start=0.2) == pytest.approx(0.2)
    assert fn(1, 11, 1.0, 0.0, warmup_steps=1, warmup_start=0.2) == pytest.approx(1.0)  # then the decay's start


class _Groups:
    """Just what apply_schedules touches: an optimizer's param_groups."""

    def __init__(self, *groups: dict) -> None:
        self.param_groups = [dict(g) for g in groups]


def test_apply_schedules_sets_each_groups_lr_and_weight_decay():
    from vislearn.train.config import TrainConfig
    from vislearn.train.schedules import apply_schedules

    cfg = TrainConfig(steps=20, lr=0.5, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1, weight_decay=0.04,
                      weight_decay_end=0.4)
    opt = _Groups({"weight_decay": 0.04}, {"weight_decay": 0.0, "lr_mult": 10.0}, {"weight_decay": 0.02})
    for step in (0, 3, 4, 11, 19):
        f = lr_factor(step, schedule="cosine", total_steps=20, warmup_steps=4, min_lr_ratio=0.1)
        assert apply_schedules(opt, cfg, step) == pytest.approx(0.5 * f)
        wd = 0.4 - 0.36 * 0.5 * (1 + math.cos(math.pi * step / 20))
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 * f, 5.0 * f, 0.5 * f], rel=1e-12)
        assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx([wd, 0.0, wd / 2], rel=1e-12)
    # no schedule (weight_decay_end < 0): the groups keep their own decay
    cfg = TrainConfig(steps=20, lr=0.5, weight_decay=0.04)
    opt = _Groups({"weight_decay": 0.04}, {"weight_decay": 0.0})
    apply_schedules(opt, cfg, 7)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.04, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    # a schedule that ends at 0 really reaches 0 (weight_decay_end = 0 is a schedule, not "off")
    cfg = TrainConfig(steps=10, lr=0.5, weight_decay=0.04, weight_decay_end=0.0)
    opt = _Groups({"weight_decay": 0.04})
    apply_schedules(opt, cfg, 10)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.0, abs=1e-15)


def test_apply_schedules_without_base_decay_leaves_every_group_undecayed():
    # each group's decay is scheduled relative to weight_decay, so weight_decay = 0 means none anywhere
    from vislearn.train.config import TrainConfig
    from vislearn.train.schedules import apply_schedules

    opt = _Groups({"weight_decay": 0.0}, {"weight_decay": 0.0})
    apply_schedules(opt, TrainConfig(steps=10, lr=0.5, weight_decay=0.0, weight_decay_end=0.4), 5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]

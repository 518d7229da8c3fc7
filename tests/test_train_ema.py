"""ModelEMA: the closed form over a few steps, AveragedModel's exact numbers, a scheduled teacher."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vislearn.train.ema import ModelEMA
from vislearn.train.schedules import cosine


def _set(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_evaluation_ema_closed_form_three_steps():
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, decay=0.9)
    for value in (1.0, 2.0, 4.0):
        _set(net, value)
        ema.update(net, step=0)
    # first update copies: 1; then 0.9 * 1 + 0.1 * 2 = 1.1; then 0.9 * 1.1 + 0.1 * 4 = 1.39
    for p in ema.module.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1.39))
        assert not p.requires_grad
    assert int(ema.n_averaged) == 3


def test_buffers_are_averaged_and_integer_buffers_truncate():
    bn = nn.BatchNorm1d(2)
    ema = ModelEMA(bn, decay=0.5)
    bn.running_mean.fill_(2.0)
    bn.num_batches_tracked.fill_(3)
    ema.update(bn)  # copies
    bn.running_mean.fill_(6.0)
    bn.num_batches_tracked.fill_(6)
    ema.update(bn)
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 4.0))  # 0.5 * 2 + 0.5 * 6
    assert int(ema.module.num_batches_tracked) == 4  # int(0.5 * 3 + 0.5 * 6) = int(4.5)


def test_matches_averaged_model_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    ours = ModelEMA(net, decay=0.99)
    theirs = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        net(torch.randn(16, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ours.update(net)
        theirs.update_parameters(net)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)  # the same layout: checkpoints of either load into the other
    for k in a:
        assert torch.equal(a[k], b[k]), k
    fresh = ModelEMA(net, decay=0.99)
    fresh.load_state_dict(b)
    assert int(fresh.n_averaged) == 5


def test_momentum_teacher_follows_the_cosine_schedule():
    total = 10
    m = functools.partial(cosine, total_steps=total, start=0.996, end=1.0)
    student = nn.Linear(2, 2, bias=False)
    _set(student, 0.0)
    teacher = ModelEMA(student, decay=m, copy_first=False)  # starts from the construction-time copy: 0
    expected = 0.0
    for step, value in enumerate((1.0, 3.0, -2.0)):
        _set(student, value)
        teacher.update(student, step)
        mom = 1 - 0.004 * (math.cos(math.pi * step / total) + 1) / 2
        expected = mom * expected + (1 - mom) * value
    torch.testing.assert_close(teacher.module.weight, torch.full((2, 2), expected))
    assert teacher.decay_at(total) == pytest.approx(1.0)


def test_bad_decay_is_rejected():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(1, 1), decay=1.5)
    ema = ModelEMA(nn.Linear(1, 1), decay=lambda s: 2.0, copy_first=False)
    with pytest.raises(ValueError, match="schedule gave 2.0"):
        ema.update(nn.Linear(1, 1), step=3)


def test_decay_bounds_are_inclusive_and_the_forward_is_the_average():
    net = nn.Linear(2, 1)
    for d, expect in ((0.0, 3.0), (1.0, 1.0)):  # d = 0 follows the weights, d = 1 freezes the average
        ema = ModelEMA(net, decay=d)
        _set(net, 1.0)
        ema.update(net)  # copies
        _set(net, 3.0)
        ema.update(net)
        for p in ema.module.parameters():
            torch.testing.assert_close(p, torch.full_like(p, expect))
        x = torch.randn(4, 2)
        torch.testing.assert_close(ema(x), expect * x.sum(1, keepdim=True) + expect)  # weights and bias all `expect`
    for bad in (-0.5, 1.5):
        with pytest.raises(ValueError, match="decay"):
            ModelEMA(net, decay=bad)
    zero = ModelEMA(net, decay=lambda s: 0.0, copy_first=False)
    zero.update(net, step=0)  # a schedule may give exactly 0 (and 1, see the cosine teacher)
    torch.testing.assert_close(zero.module.weight, net.weight)
    negative = ModelEMA(net, decay=lambda s: -0.5, copy_first=False)
    with pytest.raises(ValueError, match="schedule gave -0.5"):
        negative.update(net, step=1)


def test_update_refuses_a_module_of_another_structure():
    ema = ModelEMA(nn.Linear(2, 1), decay=0.5)
    with pytest.raises(ValueError, match="zip"):  # a bias-less twin: one tensor short
        ema.update(nn.Linear(2, 1, bias=False))

"""TensorFlow-style RMSProp (Inception-v3 Sec. 8) against a two-step update computed by hand.

TF 1's ``ApplyRMSProp`` (``tf.train.RMSPropOptimizer``, the optimizer of the Inception papers)::

    ms  ← ms + (g² − ms)(1 − ρ)             with ms initialised to ONE (TF's slot initialiser)
    mom ← μ · mom + lr · g / sqrt(ms + ε)    ε inside the square root
    p   ← p − mom
"""

from __future__ import annotations

import math

import pytest
import torch

from vislearn.errors import UserError
from vislearn.train.optim import RMSpropTF, build_optimizer


def _two_steps(opt_factory, grads, p0):
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = opt_factory([p])
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach()


def test_two_steps_by_hand():
    # ρ = 0.9, ε = 1.0 (paper), μ = 0.9, lr = 0.1; p0 = 1.0; gradients +2 then −1
    ms1 = 0.9 * 1.0 + 0.1 * 2.0 ** 2                  # 1.3
    mom1 = 0.1 * 2.0 / math.sqrt(ms1 + 1.0)           # 0.2 / sqrt(2.3) = 0.1318760...
    p1 = 1.0 - mom1                                   # 0.8681239...
    ms2 = 0.9 * ms1 + 0.1 * (-1.0) ** 2               # 1.27
    mom2 = 0.9 * mom1 + 0.1 * (-1.0) / math.sqrt(ms2 + 1.0)
    p2 = p1 - mom2
    assert ms1 == pytest.approx(1.3) and mom1 == pytest.approx(0.131876, abs=1e-6)
    assert p2 == pytest.approx(0.8158082, abs=1e-6)  # the same numbers written out
    got = _two_steps(lambda ps: RMSpropTF(ps, lr=0.1, decay=0.9, momentum=0.9, eps=1.0), [2.0, -1.0], 1.0)
    assert got.item() == pytest.approx(p2, abs=1e-12)


def test_vector_and_weight_decay_by_hand():
    wd = 0.01
    p0 = [0.5, -2.0]
    grads = [[1.0, 0.0], [-3.0, 0.5]]
    p, ms, mom = list(p0), [1.0, 1.0], [0.0, 0.0]
    for g in grads:  # TF-slim's L2 term: gradient + wd · p
        for i in range(2):
            gi = g[i] + wd * p[i]
            ms[i] = 0.9 * ms[i] + 0.1 * gi * gi
            mom[i] = 0.9 * mom[i] + 0.045 * gi / math.sqrt(ms[i] + 1.0)
            p[i] -= mom[i]
    got = _two_steps(lambda ps: RMSpropTF(ps, lr=0.045, weight_decay=wd), grads, p0)
    assert got.tolist() == pytest.approx(p, abs=1e-12)


def test_differs_from_torch_rmsprop():
    """torch's RMSprop puts ε outside the square root and starts ms at zero: a different first step."""
    ours = _two_steps(lambda ps: RMSpropTF(ps, lr=0.1, momentum=0.0, eps=1.0), [2.0], 1.0)
    torch_ = _two_steps(lambda ps: torch.optim.RMSprop(ps, lr=0.1, alpha=0.9, eps=1.0), [2.0], 1.0)
    assert ours.item() == pytest.approx(1.0 - 0.2 / math.sqrt(1.3 + 1.0))
    assert torch_.item() == pytest.approx(1.0 - 0.2 / (math.sqrt(0.4) + 1.0))
    assert abs(ours.item() - torch_.item()) > 5e-3


def test_build_optimizer_defaults_and_validation():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer("rmsprop_tf", [{"params": [p]}], lr=0.045, momentum=0.9)
    assert isinstance(opt, RMSpropTF)
    g = opt.param_groups[0]
    assert (g["eps"], g["decay"], g["momentum"], g["lr"]) == (1.0, 0.9, 0.9, 0.045)
    with pytest.raises(UserError, match="decay"):
        RMSpropTF([p], decay=1.0)
    with pytest.raises(UserError, match="eps"):
        RMSpropTF([p], eps=-1.0)


@pytest.mark.parametrize("name", ["sgd_nesterov", "adam", "adamw"])
def test_build_optimizer_steps_like_torch(name):
    """Three steps through ``build_optimizer`` equal torch's optimizer built by hand with the same settings."""
    torch.manual_seed(0)
    p0, grads = torch.randn(5), [torch.randn(5) for _ in range(3)]
    kind = "sgd" if name == "sgd_nesterov" else name
    ref = {"sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
           "adam": lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01),
           "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)}[name]

    def run(factory):
        p = torch.nn.Parameter(p0.clone())
        opt = factory([p])
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p.detach(), opt

    ours, opt = run(lambda ps: build_optimizer(kind, [{"params": ps}], lr=0.1, momentum=0.9, weight_decay=0.01,
                                               betas=(0.9, 0.95), nesterov=True))
    theirs, _ = run(ref)
    assert type(opt) is type(run(ref)[1])
    assert torch.equal(ours, theirs)
    # Adam(W) run torch's fused kernel on CPU (one vectorised pass; 8x the per-tensor loop on the SSL heads)
    assert opt.defaults.get("fused") is (True if kind in ("adam", "adamw") else None)
    if name == "sgd_nesterov":  # nesterov really differs from plain momentum here
        plain, _ = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01))
        assert not torch.allclose(ours, plain)
    if name == "adamw":  # decoupled decay differs from Adam's L2 term
        adam, _ = run(lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.9, 0.95), weight_decay=0.01))
        assert not torch.allclose(ours, adam)

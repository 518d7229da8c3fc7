"""Weighted-ensemble SSL loss (Ruan et al. 2023): every scheme against a float64 numpy oracle."""

import math

import numpy as np
import pytest
import torch

from vislearn.errors import UserError
from vislearn.losses.ensemble import (
    WeightedEnsembleLoss,
    gamma_schedule,
    head_weights,
    linear_ramp,
    weighted_ensemble_loss,
)


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_loss(log_s, t, scheme, gamma):
    """The paper's Alg. 1 written out in numpy, loop by loop (float64)."""
    b, m, _ = log_s.shape
    total = 0.0
    for x in range(b):
        if scheme == "prob":
            mean_t = t[x].mean(0)
            mean_s = np.exp(log_s[x]).mean(0)
            total += -(mean_t * np.log(mean_s)).sum()
            continue
        ce = np.array([-(t[x, i] * log_s[x, i]).sum() for i in range(m)])
        if scheme == "unif":
            w = np.full(m, 1.0 / m)
        else:
            p = t[x] if scheme == "ent" else np.exp(log_s[x])
            ent = np.array([-sum(q * math.log(q) for q in p[i] if q > 0) for i in range(m)])
            w = _np_softmax(-ent / gamma, axis=0)
        total += (w * ce).sum()
    return total / b


def _case(b=3, m=4, c=5, seed=0):
    rng = np.random.default_rng(seed)
    log_s = np.log(_np_softmax(rng.normal(size=(b, m, c)) * 2, axis=-1))
    t = _np_softmax(rng.normal(size=(b, m, c)) * rng.uniform(0.5, 4, size=(b, m, 1)), axis=-1)
    return log_s, t


@pytest.mark.parametrize("scheme", ["unif", "prob", "ent", "ent_st"])
def test_every_scheme_matches_numpy_oracle(scheme):
    log_s, t = _case()
    gamma = None if scheme in ("unif", "prob") else 0.3
    got = weighted_ensemble_loss(torch.from_numpy(log_s), torch.from_numpy(t), scheme, gamma=gamma)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(_np_loss(log_s, t, scheme, gamma), rel=1e-12)


def test_hand_case_two_heads():
    # head 0: one-hot teacher (entropy 0), head 1: uniform teacher over 2 codes (entropy log 2)
    t = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], dtype=torch.float64)
    s = torch.tensor([[[0.8, 0.2], [0.4, 0.6]]], dtype=torch.float64)
    log_s = s.log()
    ce0, ce1 = -math.log(0.8), -(0.5 * math.log(0.4) + 0.5 * math.log(0.6))
    assert weighted_ensemble_loss(log_s, t, "unif").item() == pytest.approx((ce0 + ce1) / 2, rel=1e-12)
    gamma = 0.5
    w0 = 1 / (1 + math.exp(-math.log(2) / gamma))  # softmax(-[0, log 2]/γ)[0]
    assert weighted_ensemble_loss(log_s, t, "ent", gamma).item() == pytest.approx(w0 * ce0 + (1 - w0) * ce1)
    # prob: mean teacher (0.75, 0.25), mean student (0.6, 0.4)
    want = -(0.75 * math.log(0.6) + 0.25 * math.log(0.4))
    assert weighted_ensemble_loss(log_s, t, "prob").item() == pytest.approx(want, rel=1e-12)
    # ent_st: student entropies
    hs = [-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))]
    ws0 = math.exp(-hs[0] / gamma) / (math.exp(-hs[0] / gamma) + math.exp(-hs[1] / gamma))
    assert weighted_ensemble_loss(log_s, t, "ent_st", gamma).item() == pytest.approx(ws0 * ce0 + (1 - ws0) * ce1)


@pytest.mark.parametrize("scheme", ["unif", "ent", "ent_st"])
def test_weights_sum_to_one_per_sample(scheme):
    log_s, t = _case(b=6, m=5, c=7, seed=1)
    w = head_weights(torch.from_numpy(log_s), torch.from_numpy(t), scheme, gamma=0.2)
    assert w.shape == (6, 5)
    torch.testing.assert_close(w.sum(1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)
    if scheme != "unif":  # data-dependent: rows differ (the third-party bug averaged over the batch)
        assert not torch.allclose(w[0], w[1])


@pytest.mark.parametrize("scheme", ["unif", "prob", "ent", "ent_st"])
def test_one_head_is_plain_cross_entropy(scheme):
    log_s, t = _case(b=4, m=1, c=6, seed=2)
    want = -(t * log_s).sum(-1).mean()
    gamma = None if scheme in ("unif", "prob") else 0.01
    got = weighted_ensemble_loss(torch.from_numpy(log_s), torch.from_numpy(t), scheme, gamma=gamma)
    assert got.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("scheme", ["ent", "ent_st"])
def test_gradient_stops_through_the_weights(scheme):
    """d loss / d logits equals Σ_i w_i dCE_i/d logits with w held constant (no entropy gradient)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(3, 4, 5, dtype=torch.float64) * 3, -1)
    log_s = torch.log_softmax(logits, -1)
    weighted_ensemble_loss(log_s, t, scheme, gamma=0.2).backward()
    w = head_weights(log_s.detach(), t, scheme, gamma=0.2)
    logits2 = logits.detach().clone().requires_grad_(True)
    ce = -(t * torch.log_softmax(logits2, -1)).sum(-1)
    (w * ce).sum(1).mean().backward()
    torch.testing.assert_close(logits.grad, logits2.grad, rtol=1e-12, atol=1e-14)
    if scheme == "ent_st":  # the student-entropy weights would add a gradient had they not been stopped
        logits3 = logits.detach().clone().requires_grad_(True)
        ls3 = torch.log_softmax(logits3, -1)
        w_live = torch.softmax((ls3.exp() * ls3).sum(-1) / 0.2, 1)
        (w_live * -(t * ls3).sum(-1)).sum(1).mean().backward()
        assert not torch.allclose(logits3.grad, logits2.grad)


def test_teacher_receives_no_gradient():
    t_logits = torch.randn(2, 3, 4, requires_grad=True)
    s = torch.log_softmax(torch.randn(2, 3, 4, requires_grad=True), -1)
    weighted_ensemble_loss(s, torch.softmax(t_logits, -1), "ent", gamma=0.1).backward()
    assert t_logits.grad is None


def test_ent_picks_the_low_entropy_head_as_gamma_goes_to_zero():
    log_s, t = _case(b=5, m=4, c=6, seed=3)
    t = torch.from_numpy(t)
    log_s = torch.from_numpy(log_s)
    ent = -(t * t.log()).sum(-1)
    w = head_weights(log_s, t, "ent", gamma=1e-4)
    assert torch.equal(w.argmax(1), ent.argmin(1))
    torch.testing.assert_close(w.max(1).values, torch.ones(5, dtype=torch.float64))
    ce = -(t * log_s).sum(-1)
    chosen = ce.gather(1, ent.argmin(1, keepdim=True)).mean()
    assert weighted_ensemble_loss(log_s, t, "ent", gamma=1e-4).item() == pytest.approx(chosen.item(), rel=1e-9)
    # large γ approaches UNIF
    big = weighted_ensemble_loss(log_s, t, "ent", gamma=1e6).item()
    assert big == pytest.approx(weighted_ensemble_loss(log_s, t, "unif").item(), rel=1e-5)


def test_zero_probabilities_in_teacher_are_fine():
    t = torch.tensor([[[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]])
    s = torch.log_softmax(torch.randn(1, 2, 3), -1)
    out = weighted_ensemble_loss(s, t, "ent", gamma=0.1)
    assert torch.isfinite(out)


def test_gamma_schedule_values():
    c = 1024
    assert gamma_schedule(0, c) == pytest.approx(0.5 * math.log(c))
    assert gamma_schedule(29, c) == pytest.approx(0.05 * math.log(c))
    assert gamma_schedule(100, c) == pytest.approx(0.05 * math.log(c))
    np.testing.assert_allclose([gamma_schedule(e, c) for e in range(30)],
                               np.linspace(0.5, 0.05, 30) * math.log(c), rtol=1e-12)
    assert gamma_schedule(14.5, c) == pytest.approx((0.5 + (0.05 - 0.5) * 14.5 / 29) * math.log(c))
    assert gamma_schedule(30, c, final=0.01) == pytest.approx(0.01 * math.log(c))  # MSN*, Table 8
    assert gamma_schedule(7, c, final=0.01, ramp_epochs=0) == pytest.approx(0.01 * math.log(c))
    assert linear_ramp(3, 1.0, 2.0, ramp_epochs=0) == 2.0


def test_module_uses_the_schedule():
    log_s, t = (torch.from_numpy(a) for a in _case())
    loss = WeightedEnsembleLoss("ent", schedule=lambda e: gamma_schedule(e, num_codes=5))
    assert loss.gamma_at(0) == pytest.approx(0.5 * math.log(5))
    want = weighted_ensemble_loss(log_s, t, "ent", gamma=gamma_schedule(10, 5))
    assert loss(log_s, t, epoch=10).item() == pytest.approx(want.item(), rel=1e-12)
    with pytest.raises(UserError, match="epoch"):
        loss(log_s, t)
    fixed = WeightedEnsembleLoss("ent", gamma=0.3)
    assert fixed(log_s, t).item() == pytest.approx(_np_loss(log_s.numpy(), t.numpy(), "ent", 0.3), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_gamma(gamma):
    log_s, t = (torch.from_numpy(a) for a in _case())
    with pytest.raises(UserError, match="gamma"):
        weighted_ensemble_loss(log_s, t, "ent", gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        WeightedEnsembleLoss("ent", gamma=gamma)


def test_bad_scheme_and_shapes():
    log_s, t = (torch.from_numpy(a) for a in _case(m=2, c=5))
    with pytest.raises(UserError, match="'entt'.*did you mean 'ent'"):
        weighted_ensemble_loss(log_s, t, "entt", gamma=0.1)
    with pytest.raises(UserError, match="did you mean"):
        WeightedEnsembleLoss("uniform")
    with pytest.raises(UserError, match="student has 5 codes, the teacher 4"):
        weighted_ensemble_loss(log_s, t[..., :4], "unif")
    with pytest.raises(UserError, match="heads must be >= 1, got 0"):
        weighted_ensemble_loss(log_s[:, :0], t[:, :0], "unif")
    with pytest.raises(UserError, match="heads do not match"):
        weighted_ensemble_loss(log_s, t[:, :1], "unif")
    with pytest.raises(UserError, match=r"\(batch, heads, codes\)"):
        weighted_ensemble_loss(log_s[0], t[0], "unif")
    with pytest.raises(UserError, match="needs gamma"):
        weighted_ensemble_loss(log_s, t, "ent")
    with pytest.raises(UserError, match="gamma = 1"):
        weighted_ensemble_loss(log_s, t, "prob", gamma=0.5)
    with pytest.raises(UserError, match="needs gamma or schedule"):
        WeightedEnsembleLoss("ent_st")


def _eq4_loss(log_s, t, f, gamma):
    """The paper's general Eq. 4-5 over all (i, j) pairs: w_ijy = softmax_{(i,j)}(f_ijy / γ) (stopped),
    L = mean_x Σ_ij H×[w_ij ⊙ t_i, s_j]; the ``Σ q - 1`` part of H× is 0 for normalised students."""
    b, m, c = log_s.shape
    w = torch.softmax(f.detach().reshape(b, m * m, c) / gamma, dim=1).reshape(b, m, m, c)
    return -(w * t[:, :, None, :] * log_s[:, None, :, :]).sum((1, 2, 3)).mean()


def test_schemes_are_instances_of_the_general_eq4():
    torch.manual_seed(1)
    b, m, c = 3, 4, 6
    logits = torch.randn(b, m, c, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(b, m, c, dtype=torch.float64) * 2, -1)
    log_s = torch.log_softmax(logits, -1)
    diag = torch.where(torch.eye(m, dtype=torch.bool), 0.0, float("-inf")).to(torch.float64)  # log δ(i - j)
    diag = diag[None, :, :, None].expand(b, m, m, c)
    h_t = -(t * t.log()).sum(-1)  # (b, m)
    h_s = -(log_s.exp() * log_s).sum(-1)
    gamma = 0.4
    cases = {
        "unif": (diag, 1.0),
        "ent": (-h_t[:, :, None, None] + diag, gamma),
        "ent_st": (-h_s[:, None, :, None] + diag, gamma),
    }
    for scheme, (f, g) in cases.items():
        want = _eq4_loss(log_s, t, f, g)
        got = weighted_ensemble_loss(log_s, t, scheme, gamma=None if scheme == "unif" else gamma)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # PROB: f_ijy = log s_j(y) at γ = 1 gives the gradient of CE(mean teacher, mean student) (App. D.1)
    f = log_s[:, None, :, :].expand(b, m, m, c)
    g_eq4, = torch.autograd.grad(_eq4_loss(log_s, t, f, 1.0), logits, retain_graph=True)
    g_prob, = torch.autograd.grad(weighted_ensemble_loss(log_s, t, "prob"), logits)
    torch.testing.assert_close(g_prob, g_eq4, rtol=1e-10, atol=1e-12)

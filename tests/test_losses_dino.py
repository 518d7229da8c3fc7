"""DINOLoss: lightly's DINOLoss as the oracle (value, gradient, center over steps), hand cases,
Sinkhorn-Knopp sums, the temperature warm-up, per-head behaviour and the all-reduced center."""

import sys
from pathlib import Path

import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss
from lightly.loss.msn_loss import sinkhorn as lightly_sinkhorn

from vislearn.errors import UserError
from vislearn.losses.dino import DINOLoss
from vislearn.losses.ensemble import WeightedEnsembleLoss, weighted_ensemble_loss
from vislearn.losses.ssl_ops import global_mean, sinkhorn_knopp

sys.path.insert(0, str(Path(__file__).parent))
from _fake_world import ThreadWorld  # noqa: E402


def _views(n, b, c, heads=None, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, c) if heads is None else (b, heads, c)
    return [torch.randn(shape, generator=g) * scale for _ in range(n)]


def test_equals_lightly_with_centering_over_three_steps():
    c, b = 16, 6
    ours = DINOLoss(c, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=5,
                    normalization="center", center_momentum=0.9)
    theirs = LightlyDINOLoss(output_dim=c, warmup_teacher_temp=0.04, teacher_temp=0.07,
                             warmup_teacher_temp_epochs=5, student_temp=0.1, center_momentum=0.9)
    for step in range(3):
        teacher = _views(2, b, c, seed=10 * step)
        student = [v.requires_grad_(True) for v in _views(5, b, c, seed=10 * step + 1)]  # 2 global + 3 local
        student2 = [v.detach().clone().requires_grad_(True) for v in student]
        got = ours(teacher, student, epoch=step)
        want = theirs(teacher, student2, epoch=step)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        got.backward()
        want.backward()
        for a, w in zip(student, student2, strict=True):
            torch.testing.assert_close(a.grad, w.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.center, theirs.center.reshape(1, c), rtol=1e-5, atol=1e-7)
    assert ours.center.abs().sum() > 0


def test_temperature_warmup_matches_lightly_schedule():
    ours = DINOLoss(8, teacher_temp=0.025, warmup_teacher_temp=0.05, warmup_teacher_temp_epochs=30)
    theirs = LightlyDINOLoss(output_dim=8, warmup_teacher_temp=0.05, teacher_temp=0.025,
                             warmup_teacher_temp_epochs=30)
    for epoch in range(30):
        assert ours.teacher_temperature(epoch) == pytest.approx(theirs.teacher_temp_schedule[epoch].item())
    assert ours.teacher_temperature(0) == pytest.approx(0.05)
    assert ours.teacher_temperature(29) == pytest.approx(0.025)
    assert ours.teacher_temperature(400) == pytest.approx(0.025)
    assert ours.teacher_temperature(0.5) == pytest.approx(0.05 - 0.025 * 0.5 / 29)
    assert ours.teacher_temperature(None) == 0.025
    assert DINOLoss(8, warmup_teacher_temp=None).teacher_temperature(0) == 0.025


def test_hand_case_uniform_teacher():
    # zero teacher logits and zero center: uniform targets, so each pair costs logsumexp(s/τ) - mean(s/τ)
    s = [torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.5, 0.5, 0.0]])]
    t = [torch.zeros(1, 3), torch.zeros(1, 3)]
    loss = DINOLoss(3, teacher_temp=0.04, warmup_teacher_temp=None, normalization="center")(t, s)

    def ce_uniform(x):
        z = x / 0.1
        return (torch.logsumexp(z, -1) - z.mean(-1)).mean()

    assert loss.item() == pytest.approx(((ce_uniform(s[1]) + ce_uniform(s[0])) / 2).item(), rel=1e-6)


def test_only_different_views_are_paired():
    # student view 0 equal to a one-hot teacher view 0: if (0, 0) were paired it would change the loss
    c = 4
    t = _views(2, 3, c, seed=1)
    s = _views(3, 3, c, seed=2)
    fn = DINOLoss(c, warmup_teacher_temp=None, normalization="center")
    fn.eval()  # no center update between the calls
    base = fn(t, s)
    s_changed = [s[0] + 5.0 * torch.randn_like(s[0]), s[1], s[2]]
    t_changed = [t[0], t[1]]
    # student view 0 only meets teacher view 1; changing teacher view 0 must not touch the (t0, s0) pair
    probs = fn.teacher_probs(t_changed)
    student = fn.student_log_probs(s_changed)
    want = torch.stack([-(probs[i] * student[j]).sum(-1).mean() for i in range(2) for j in range(3) if i != j]).mean()
    torch.testing.assert_close(fn(t_changed, s_changed), want)
    assert not torch.isclose(base, want)


def test_sinkhorn_sums_and_equal_to_lightly_msn_sinkhorn():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(12, 5, generator=g) * 2, -1)
    ours = sinkhorn_knopp(p.log(), iterations=3)
    torch.testing.assert_close(ours, lightly_sinkhorn(p, iterations=3), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.sum(1), torch.ones(12))
    long = sinkhorn_knopp(p.log(), iterations=200)
    torch.testing.assert_close(long.sum(1), torch.ones(12))
    torch.testing.assert_close(long.sum(0), torch.full((5,), 12 / 5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sinkhorn_knopp(p.log(), iterations=0), p)
    # a code with no mass anywhere stays at zero instead of turning into NaN
    p0 = torch.cat([p[:, :4], torch.zeros(12, 1)], 1)
    out = sinkhorn_knopp(p0.log(), iterations=3)
    assert torch.isfinite(out).all() and out[:, 4].abs().max() == 0


def test_dino_star_sinkhorn_targets_per_head():
    c, b, h = 6, 5, 3
    fn = DINOLoss(c, num_heads=h, teacher_temp=0.1, warmup_teacher_temp=None, normalization="sinkhorn")
    t = _views(2, b, c, heads=h, scale=1.0)
    probs = fn.teacher_probs(t)
    assert probs.shape == (2, b, h, c)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, b, h))
    for head in range(h):  # each head on its own, over both views' samples, as lightly's SK on exp(z/τ)
        flat = torch.cat([v[:, head] for v in t])
        want = lightly_sinkhorn(torch.exp(flat / 0.1), iterations=3)
        torch.testing.assert_close(probs[:, :, head].reshape(2 * b, c), want, rtol=1e-5, atol=1e-7)
    # any logit scale is fine (log-space iteration): neither overflow nor underflow
    big = fn.teacher_probs([v * 1e3 for v in t])
    assert torch.isfinite(big).all()


def test_heads_with_unif_are_the_mean_of_single_head_losses_with_per_head_centers():
    c, b, h = 8, 4, 3
    multi = DINOLoss(c, num_heads=h, teacher_temp=0.05, warmup_teacher_temp=None, normalization="center")
    singles = [DINOLoss(c, teacher_temp=0.05, warmup_teacher_temp=None, normalization="center") for _ in range(h)]
    for step in range(2):
        t = _views(2, b, c, heads=h, seed=step)
        s = _views(4, b, c, heads=h, seed=step + 100)
        got = multi(t, s)
        want = torch.stack([singles[k]([v[:, k] for v in t], [v[:, k] for v in s]) for k in range(h)]).mean()
        torch.testing.assert_close(got, want)
    for k in range(h):
        torch.testing.assert_close(multi.center[k], singles[k].center[0])


def test_ent_ensemble_uses_teacher_probs_after_sinkhorn_per_pair():
    c, b, h = 8, 4, 3
    ens = WeightedEnsembleLoss("ent", gamma=0.2)
    fn = DINOLoss(c, num_heads=h, teacher_temp=0.05, warmup_teacher_temp=None, ensemble=ens)
    t, s = _views(2, b, c, heads=h, seed=3), _views(3, b, c, heads=h, seed=4)
    probs, logp = fn.teacher_probs(t), fn.student_log_probs(s)
    want = torch.stack([weighted_ensemble_loss(logp[j], probs[i], "ent", 0.2)
                        for i in range(2) for j in range(3) if i != j]).mean()
    torch.testing.assert_close(fn(t, s), want)
    # entropy after Sinkhorn differs from entropy of the raw softmax: the choice matters
    raw = torch.softmax(torch.stack(t) / 0.05, -1)
    assert not torch.allclose(raw, probs, atol=1e-3)


def test_global_mean_in_a_fake_world_equals_one_process():
    x = torch.randn(7, 3)
    parts = [x[:4], x[4:]]  # unequal batch sizes
    results = ThreadWorld(2).run(lambda r, ar: global_mean(parts[r].sum(0), len(parts[r]), ar))
    for got in results:
        torch.testing.assert_close(got, x.mean(0))


def test_center_and_sinkhorn_all_reduced_in_a_fake_world():
    c, b, h = 6, 4, 2
    t, s = _views(2, 2 * b, c, heads=h, seed=5), _views(3, 2 * b, c, heads=h, seed=6)
    for norm in ("center", "sinkhorn"):
        one = DINOLoss(c, num_heads=h, teacher_temp=0.05, warmup_teacher_temp=None, normalization=norm)
        whole_probs = one.teacher_probs(t)
        one(t, s)

        def rank_fn(rank, all_reduce, norm=norm):
            fn = DINOLoss(c, num_heads=h, teacher_temp=0.05, warmup_teacher_temp=None, normalization=norm,
                          all_reduce=all_reduce)
            sl = slice(rank * b, (rank + 1) * b)
            probs = fn.teacher_probs([v[sl] for v in t])
            fn([v[sl] for v in t], [v[sl] for v in s])
            return probs, fn.center

        results = ThreadWorld(2).run(rank_fn)
        for rank, (probs, center) in enumerate(results):
            torch.testing.assert_close(probs, whole_probs[:, rank * b:(rank + 1) * b], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(center, one.center)


def test_center_step_mode_under_accumulation_equals_one_large_batch():
    c, b = 5, 4
    t, s = _views(2, 2 * b, c, seed=7), _views(2, 2 * b, c, seed=8)
    big = DINOLoss(c, normalization="center", warmup_teacher_temp=None)
    big(t, s)
    acc = DINOLoss(c, normalization="center", warmup_teacher_temp=None, center_update="step")
    for half in (slice(0, b), slice(b, 2 * b)):
        acc([v[half] for v in t], [v[half] for v in s])
        assert acc.center.abs().sum() == 0  # nothing applied before the optimizer step
    acc.step_center()
    torch.testing.assert_close(acc.center, big.center)
    per_micro = DINOLoss(c, normalization="center", warmup_teacher_temp=None)
    for half in (slice(0, b), slice(b, 2 * b)):
        per_micro([v[half] for v in t], [v[half] for v in s])
    assert not torch.allclose(per_micro.center, big.center)  # the trap the step mode avoids


@pytest.mark.parametrize("kwargs, match", [
    ({"teacher_temp": 0.0}, "teacher_temp"), ({"student_temp": -0.1}, "student_temp"),
    ({"warmup_teacher_temp": 0.0}, "warmup_teacher_temp"), ({"num_heads": 0}, "num_heads"),
    ({"normalization": "centre"}, "normalization"), ({"center_momentum": 1.0}, "center_momentum"),
    ({"sinkhorn_iterations": -1}, "sinkhorn_iterations")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        DINOLoss(8, **kwargs)


def test_bad_inputs():
    fn = DINOLoss(8, num_heads=2)
    t, s = _views(2, 3, 8, heads=2), _views(4, 3, 8, heads=2)
    with pytest.raises(UserError, match="2 teacher view.*1 student"):
        fn(t, s[:1])
    with pytest.raises(UserError, match="7 codes, expected 8"):
        fn(t, [v[..., :7] for v in s])
    with pytest.raises(UserError, match="1 heads, expected 2"):
        fn([v[:, :1] for v in t], s)
    with pytest.raises(UserError, match="batch"):
        fn(t, [v[:2] for v in s])
    with pytest.raises(UserError, match="no cross-view pairs"):
        DINOLoss(8)(_views(1, 3, 8), _views(1, 3, 8))
    with pytest.raises(ValueError, match="teacher_temp"):
        fn(t, s, teacher_temp=-1.0)

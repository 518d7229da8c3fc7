"""MSNLoss: lightly's MSNLoss as the oracle, a hand case, the ME-MAX regulariser, per-head use with
the weighted ensemble, the all-reduced ME-MAX mean in a fake world, and bad input."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import MSNLoss as LightlyMSNLoss

from vislearn.errors import UserError
from vislearn.losses.ensemble import WeightedEnsembleLoss, weighted_ensemble_loss
from vislearn.losses.msn import MSNLoss, mean_entropy_regularizer
from vislearn.losses.ssl_ops import cosine_logits

sys.path.insert(0, str(Path(__file__).parent))
from _fake_world import ThreadWorld  # noqa: E402


def _embeddings(views=3, b=5, d=8, k=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    anchors = torch.randn(views * b, d, generator=g)
    targets = torch.randn(b, d, generator=g)
    prototypes = torch.randn(k, d, generator=g)
    return anchors, targets, prototypes


@pytest.mark.parametrize("sinkhorn, weight", [(3, 1.0), (0, 4.0), (0, 0.0)])
def test_equals_lightly_value_and_gradient(sinkhorn, weight):
    anchors, targets, prototypes = _embeddings()
    a1 = anchors.clone().requires_grad_(True)
    a2 = anchors.clone().requires_grad_(True)
    theirs = LightlyMSNLoss(temperature=0.1, sinkhorn_iterations=sinkhorn, regularization_weight=weight)
    want = theirs(a2, targets, prototypes, target_sharpen_temperature=0.25)
    ours = MSNLoss(num_codes=12, temperature=0.1, teacher_temp=0.1 * 0.25, warmup_teacher_temp=None,
                   me_max_weight=weight, sinkhorn_iterations=sinkhorn)
    got = ours(cosine_logits(a1, prototypes), cosine_logits(targets, prototypes))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-7)


def test_list_of_views_equals_stacked_tensor():
    anchors, targets, prototypes = _embeddings()
    fn = MSNLoss(12)
    logits = cosine_logits(anchors, prototypes)
    stacked = fn(logits, cosine_logits(targets, prototypes))
    listed = fn(list(logits.split(5)), cosine_logits(targets, prototypes))
    torch.testing.assert_close(stacked, listed)


def test_hand_case():
    # one anchor, one target, two codes, no regulariser: CE of sharpened softmax against the anchor softmax
    za = torch.tensor([[0.2, -0.1]])
    zt = torch.tensor([[0.5, 0.0]])
    fn = MSNLoss(2, temperature=0.1, teacher_temp=0.05, warmup_teacher_temp=None, me_max_weight=0.0)
    pa = [math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0)), math.exp(-1.0) / (math.exp(2.0) + math.exp(-1.0))]
    pt_raw = [math.exp(5.0), 1.0]
    pt = [p**2 / (pt_raw[0] ** 2 + pt_raw[1] ** 2) for p in pt_raw]  # sharpen with T = 0.5
    want = -(pt[0] * math.log(pa[0]) + pt[1] * math.log(pa[1]))
    assert fn(za, zt).item() == pytest.approx(want, rel=1e-5)
    # the warm-up: at epoch 0 MSN*'s teacher temperature is 0.05 (T = 0.5), at epoch 29 it is 0.025
    warm = MSNLoss(2, me_max_weight=0.0)
    assert warm(za, zt, epoch=0).item() == pytest.approx(want, rel=1e-5)
    assert warm.teacher_temperature(29) == pytest.approx(0.025)
    assert warm(za, zt, epoch=29).item() == pytest.approx(fn(za, zt, teacher_temp=0.025).item(), rel=1e-6)
    # ME-MAX of a single sample: log 2 - H[pa]
    reg = MSNLoss(2, teacher_temp=0.05, warmup_teacher_temp=None, me_max_weight=1.0)(za, zt).item() - want
    h = -(pa[0] * math.log(pa[0]) + pa[1] * math.log(pa[1]))
    assert reg == pytest.approx(math.log(2) - h, rel=1e-5)


def test_me_max_is_zero_at_uniform_use_and_positive_otherwise():
    uniform = torch.full((4, 1, 8), 1 / 8)
    assert mean_entropy_regularizer(uniform).item() == pytest.approx(0.0, abs=1e-6)
    peaked = torch.softmax(torch.randn(4, 2, 8) * 5, -1)
    assert mean_entropy_regularizer(peaked).item() > 0.1


def test_entropy_penalty_adds_the_mean_anchor_entropy():
    anchors, targets, prototypes = _embeddings()
    a, t = cosine_logits(anchors, prototypes), cosine_logits(targets, prototypes)
    base = MSNLoss(12, me_max_weight=0.0)(a, t)
    with_ent = MSNLoss(12, me_max_weight=0.0, entropy_weight=0.5)(a, t)
    p = torch.softmax(a / 0.1, -1)
    ent = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(with_ent - base, 0.5 * ent, rtol=1e-5, atol=1e-6)


def test_heads_with_ent_use_sharpened_targets_and_mean_over_heads_me_max():
    g = torch.Generator().manual_seed(1)
    b, h, k = 4, 3, 6
    anchors = [torch.randn(b, h, k, generator=g) for _ in range(2)]
    target = torch.randn(b, h, k, generator=g)
    fn = MSNLoss(k, num_heads=h, me_max_weight=2.0, ensemble=WeightedEnsembleLoss("ent", gamma=0.3))
    assert fn.teacher_temperature(None) == 0.025
    t = fn.target_probs(target)[0]
    torch.testing.assert_close(t, torch.softmax(target / 0.025, -1))  # sharpen(softmax(z/0.1), 0.25)
    torch.testing.assert_close(fn.target_probs(target, epoch=0)[0], torch.softmax(target / 0.05, -1))
    logp = [torch.log_softmax(a / 0.1, -1) for a in anchors]
    ce = torch.stack([weighted_ensemble_loss(lp, t, "ent", 0.3) for lp in logp]).mean()
    probs = torch.cat([lp.exp() for lp in logp])
    reg = torch.stack([math.log(k) + (probs[:, i].mean(0) * probs[:, i].mean(0).log()).sum() for i in range(h)]).mean()
    torch.testing.assert_close(fn(anchors, target), ce + 2.0 * reg)


def test_several_target_views_follow_dino_pairing_for_msn_star():
    g = torch.Generator().manual_seed(2)
    b, k = 4, 6
    targets = [torch.randn(b, k, generator=g) for _ in range(2)]
    anchors = [torch.randn(b, k, generator=g) for _ in range(4)]  # 2 masked globals + 2 locals
    t = [torch.softmax(v / 0.025, -1) for v in targets]
    logp = [torch.log_softmax(a / 0.1, -1) for a in anchors]

    def ce(i, j):
        return -(t[i] * logp[j]).sum(-1).mean()

    cross = MSNLoss(k, me_max_weight=0.0)(anchors, targets)
    want = torch.stack([ce(i, j) for i in range(2) for j in range(4) if i != j]).mean()
    torch.testing.assert_close(cross, want)
    every = MSNLoss(k, me_max_weight=0.0, pairing="all")(anchors, targets)
    torch.testing.assert_close(every, torch.stack([ce(i, j) for i in range(2) for j in range(4)]).mean())
    with pytest.raises(UserError, match="2 target view.*1 anchor"):
        MSNLoss(k)(anchors[:1], targets)


def test_me_max_all_reduced_in_a_fake_world_value_and_gradient():
    anchors, targets, prototypes = _embeddings(views=2, b=6, seed=3)
    a = cosine_logits(anchors, prototypes).reshape(2, 6, 12)
    t = cosine_logits(targets, prototypes)
    whole = a.clone().requires_grad_(True)
    one = MSNLoss(12, me_max_weight=4.0, sinkhorn_iterations=3)
    want = one(list(whole.unbind(0)), t)
    want.backward()

    def rank_fn(rank, all_reduce):
        sl = slice(3 * rank, 3 * rank + 3)
        local = a[:, sl].clone().requires_grad_(True)
        fn = MSNLoss(12, me_max_weight=4.0, sinkhorn_iterations=3, all_reduce=all_reduce)
        loss = fn(list(local.unbind(0)), t[sl])
        loss.backward()
        return loss.detach(), local.grad

    results = ThreadWorld(2).run(rank_fn)
    # the ranks' losses average to the one-process loss, and DDP's averaged gradient equals its gradient
    torch.testing.assert_close(torch.stack([r[0] for r in results]).mean(), want.detach(), rtol=1e-5, atol=1e-6)
    for rank, (_, grad) in enumerate(results):
        torch.testing.assert_close(grad / 2, whole.grad[:, 3 * rank:3 * rank + 3], rtol=1e-4, atol=1e-7)


def test_cosine_logits_per_head():
    e = torch.randn(5, 3, 4)
    p = torch.randn(3, 7, 4)
    out = cosine_logits(e, p)
    assert out.shape == (5, 3, 7)
    torch.testing.assert_close(out[:, 1], F.normalize(e[:, 1], dim=-1) @ F.normalize(p[1], dim=-1).t())
    assert out.abs().max() <= 1 + 1e-6


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, "temperature"), ({"teacher_temp": -1.0}, "teacher_temp"),
    ({"warmup_teacher_temp": 0.0}, "warmup_teacher_temp"), ({"warmup_teacher_temp_epochs": -1}, "epochs"),
    ({"me_max_weight": -1.0}, "me_max_weight"), ({"num_heads": 0}, "num_heads"),
    ({"sinkhorn_iterations": -2}, "sinkhorn_iterations")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        MSNLoss(8, **kwargs)


def test_bad_inputs():
    fn = MSNLoss(8)
    with pytest.raises(UserError, match="10 rows, not a whole number of views of the target batch 4"):
        fn(torch.randn(10, 8), torch.randn(4, 8))
    with pytest.raises(UserError, match="batch 3 but the target has 4"):
        fn([torch.randn(3, 8)], torch.randn(4, 8))
    with pytest.raises(UserError, match="7 codes, expected 8"):
        fn(torch.randn(8, 7), torch.randn(4, 8))
    with pytest.raises(UserError, match="no views"):
        fn(torch.randn(8, 8), [])
    with pytest.raises(UserError, match="pairing"):
        MSNLoss(8, pairing="diagonal")

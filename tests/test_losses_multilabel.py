"""Softmax, pairwise and WARP multilabel losses against closed forms and brute-force loops."""

import math

import pytest
import torch

from vislearn.errors import UserError
from vislearn.losses import (
    MultilabelSoftmaxLoss,
    PairwiseRankingLoss,
    WARPLoss,
    pairwise_ranking_loss,
    warp_loss,
    warp_rank_weights,
    warp_sample,
)


def harmonic(r: int) -> float:
    return sum(1.0 / j for j in range(1, r + 1))


# ------------------------------------------------------------------------------------------ softmax
def test_softmax_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    z0 = math.exp(1) + math.exp(2) + math.exp(3)
    row0 = -(0.5 * (1 - math.log(z0)) + 0.5 * (3 - math.log(z0)))
    z1 = math.exp(0.5) + math.exp(-1) + 1.0
    row1 = -(-1 - math.log(z1))
    loss = MultilabelSoftmaxLoss()
    assert loss(s, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert int(loss.last_stats["skipped_rows"]) == 0


def test_softmax_skips_rows_without_positive_and_counts_them():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.zeros(4, 5)
    t[1, 2] = 1
    t[3, [0, 4]] = 1
    loss = MultilabelSoftmaxLoss()
    value = loss(s, t)
    ref = -(torch.log_softmax(s[1], 0)[2] + 0.5 * torch.log_softmax(s[3], 0)[[0, 4]].sum()) / 2
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    assert int(loss.last_stats["skipped_rows"]) == 2 and int(loss.last_stats["valid_rows"]) == 2
    value.backward()
    assert s.grad[[0, 2]].abs().sum() == 0  # skipped rows get no gradient


# ------------------------------------------------------------------------------------------ pairwise
def brute_pairwise(s: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    total, rows = s.new_zeros(()), 0
    for i in range(s.shape[0]):
        p = [j for j in range(s.shape[1]) if t[i, j] == 1]
        n = [k for k in range(s.shape[1]) if t[i, k] == 0]
        if not p or not n:
            continue
        rows += 1
        for j in p:
            for k in n:
                total = total + torch.clamp(margin - s[i, j] + s[i, k], min=0)
    return total / max(rows, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_pairwise_equals_double_loop_value_and_gradient(seed, margin):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(7, 9, generator=g)
    s[2, :4] = 0.25  # ties inside a row
    t = (torch.rand(7, 9, generator=g) < 0.35).float()
    t[0] = 0  # skipped: no positive
    t[1] = 1  # skipped: no negative
    t[2, :2] = 1
    a = s.clone().requires_grad_(True)
    b = s.clone().requires_grad_(True)
    ours = PairwiseRankingLoss(margin=margin)(a, t)
    ref = brute_pairwise(b, t, margin)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_pairwise_closed_form_and_reductions():
    s = torch.tensor([[0.0, 0.0, 0.0]])
    t = torch.tensor([[1, 0, 0]])
    assert pairwise_ranking_loss(s, t).item() == pytest.approx(2.0)  # two pairs, hinge 1 each
    s2 = torch.tensor([[3.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    t2 = torch.tensor([[1, 0, 0], [0, 0, 0]])
    assert pairwise_ranking_loss(s2, t2).item() == 0.0  # no violation; row 1 skipped
    none = pairwise_ranking_loss(torch.cat([s, s2]), torch.cat([t, t2]), reduction="none")
    assert none.tolist() == [2.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------- WARP
def test_rank_weight_table():
    table = warp_rank_weights(6)
    assert table.tolist() == pytest.approx([0.0, 1.0, 1.5, 1 + 1 / 2 + 1 / 3, harmonic(4), harmonic(5)])


@pytest.mark.parametrize("c", [2, 5, 81])
def test_warp_fully_violated_has_weight_of_rank_c_minus_1(c):
    # every negative violates the margin: the first draw succeeds, N = 1, r = C − 1
    t = torch.zeros(3, c)
    t[0, 0] = 1
    t[1, :1] = 1
    t[2, 0] = 1
    if c > 2:
        t[2, 1] = 1  # two positives: two pairs, each weighted L(C − 1)
    s = torch.zeros(3, c, requires_grad=True)
    loss = WARPLoss(c, generator=torch.Generator().manual_seed(0), reduction="none", form="sampled_pair")
    rows = loss(s, t)
    per_pos = harmonic(c - 1) * 1.0
    expected = [per_pos, per_pos, per_pos * t[2].sum().item()]
    assert rows.tolist() == pytest.approx(expected, rel=1e-6)


def test_warp_no_violation_gives_zero_and_no_gradient():
    s = torch.tensor([[5.0, 0.0, 3.9, -1.0], [0.0, 2.0, 0.5, 0.9]], requires_grad=True)
    t = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    loss = WARPLoss(4, generator=torch.Generator().manual_seed(0))
    value = loss(s, t)
    value.backward()
    assert value.item() == 0.0
    assert s.grad.abs().sum().item() == 0.0
    assert int(loss.last_stats["violated_pairs"]) == 0


def _expected_grad_from_draws(s, t, draw, table, valid_rows):
    grad = torch.zeros_like(s)
    for p in range(draw["row"].numel()):
        if not draw["found"][p]:
            continue
        i, j, k = int(draw["row"][p]), int(draw["positive"][p]), int(draw["negative"][p])
        w = float(table[int(draw["rank"][p])])
        if 1.0 - s[i, j] + s[i, k] > 0:
            grad[i, j] -= w / valid_rows
            grad[i, k] += w / valid_rows
    return grad


def test_warp_gradient_flows_only_through_chosen_pairs():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 12, generator=g)
    t = (torch.rand(6, 12, generator=g) < 0.3).float()
    t[:, 0] = 1
    pos = t.bool()
    draw = warp_sample(s, pos, 1.0, None, torch.Generator().manual_seed(11))
    x = s.clone().requires_grad_(True)
    loss = WARPLoss(12, generator=torch.Generator().manual_seed(11), form="sampled_pair")
    value = loss(x, t)
    value.backward()
    table = warp_rank_weights(12)
    valid = int(((pos.sum(1) > 0) & (pos.sum(1) < 12)).sum())
    expected_grad = _expected_grad_from_draws(s, t, draw, table, valid)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-6, atol=1e-7)
    # value: Σ over chosen pairs of L(⌊(C−1)/N⌋)·hinge, mean over rows
    f = draw["found"]
    hinge = 1 - s[draw["row"], draw["positive"]] + s[draw["row"], draw["negative"]]
    manual = (table[(11 // draw["draws"][f])] * hinge[f]).sum() / valid
    assert value.item() == pytest.approx(manual.item(), rel=1e-6)
    # every chosen negative does violate, and the gradient touches only chosen labels
    assert (hinge[f] > 0).all()
    touched = torch.zeros_like(pos)
    touched[draw["row"][f], draw["positive"][f]] = True
    touched[draw["row"][f], draw["negative"][f]] = True
    assert (x.grad[~touched] == 0).all()


def test_warp_draw_count_is_uniform_position_of_single_violator():
    # one violator among n = 9 negatives: its position in a random order is uniform on 1..9
    reps, c = 9000, 10
    s = torch.zeros(reps, c)
    s[:, 0] = 5.0  # positive
    s[:, 1:] = 0.0
    s[:, 7] = 4.5  # the only violator (5 − 1 < 4.5)
    pos = torch.zeros(reps, c, dtype=torch.bool)
    pos[:, 0] = True
    d = warp_sample(s, pos, 1.0, None, torch.Generator().manual_seed(0))
    assert d["found"].all() and (d["negative"] == 7).all()
    counts = torch.bincount(d["draws"], minlength=c)[1:c]
    assert counts.sum() == reps
    expected = reps / 9
    chi2 = float(((counts.float() - expected) ** 2 / expected).sum())
    assert chi2 < 26.1  # chi-square, 8 degrees of freedom, p = 0.001
    assert (d["rank"] == 9 // d["draws"]).all()


def test_warp_draws_follow_the_random_order_distribution_with_several_violators():
    # v = 3 violators among n = 10 negatives: P(N = t) = C(n − t, v − 1) / C(n, v); the chosen
    # violator is uniform among the three
    reps, c = 12000, 11
    s = torch.zeros(reps, c)
    s[:, 0] = 5.0
    s[:, [2, 5, 9]] = torch.tensor([4.2, 4.5, 4.9])  # violators of 5 − 1 = 4
    pos = torch.zeros(reps, c, dtype=torch.bool)
    pos[:, 0] = True
    d = warp_sample(s, pos, 1.0, None, torch.Generator().manual_seed(2))
    assert d["found"].all() and (d["violators"] == 3).all()
    n, v = 10, 3
    pmf = torch.tensor([math.comb(n - t, v - 1) / math.comb(n, v) for t in range(1, n - v + 2)])
    counts = torch.bincount(d["draws"], minlength=n + 1)[1:n - v + 2].float()
    assert counts.sum() == reps
    chi2 = float(((counts - reps * pmf) ** 2 / (reps * pmf)).sum())
    assert chi2 < 24.3  # 7 degrees of freedom, p = 0.001
    picks = torch.bincount(d["negative"], minlength=c)[[2, 5, 9]].float()
    assert float(((picks - reps / 3) ** 2 / (reps / 3)).sum()) < 13.8  # 2 dof, p = 0.001


@pytest.mark.parametrize("form", ["sampled_pair", "paper"])
def test_warp_expected_loss_matches_exact_enumeration(form):
    # E[loss] over the random order, computed exactly, vs the mean of many sampled rows. The chosen
    # violator is uniform among the v violators (sampled_pair: the mean hinge); the paper's form sums
    # the hinge over every violator. P(first violator at draw t) = C(n−t, v−1)/C(n, v).
    c, margin = 6, 1.0
    row = torch.tensor([0.3, 1.5, 0.9, -0.6, 0.8, 0.1])
    positives = [1, 4]
    table = warp_rank_weights(c).double()
    negs = [k for k in range(c) if k not in positives]
    n = len(negs)
    expected = 0.0
    for j in positives:
        viol = [k for k in negs if margin - row[j] + row[k] > 0]
        v = len(viol)
        if v == 0:
            continue
        total = sum(float(margin - row[j] + row[k]) for k in viol)
        hinge = total / v if form == "sampled_pair" else total
        for draws in range(1, n - v + 2):
            p = math.comb(n - draws, v - 1) / math.comb(n, v)
            expected += p * float(table[(c - 1) // draws]) * hinge
    reps = 20000
    t = torch.zeros(reps, c)
    t[:, positives] = 1
    ours = warp_loss(row.repeat(reps, 1), t, margin, generator=torch.Generator().manual_seed(5), form=form).item()
    assert ours == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("c", [2, 5, 81])
def test_warp_paper_form_fully_violated_sums_every_negative(c):
    # every negative violates with hinge 1: N = 1, r = C − 1, and the positive pays L(C − 1) · (C − 1)
    t = torch.zeros(2, c)
    t[0, 0] = 1
    t[1, 0] = 1
    if c > 2:
        t[1, 1] = 1  # two positives, each against C − 2 negatives
    rows = WARPLoss(c, generator=torch.Generator().manual_seed(0), reduction="none")(torch.zeros(2, c), t)
    n_neg = c - t.sum(1)
    expected = [harmonic(c - 1) * float(n_neg[0]), harmonic(c - 1) * float(n_neg[1]) * float(t[1].sum())]
    assert rows.tolist() == pytest.approx(expected, rel=1e-6)


def _paper_objective_by_loops(s, t, draw, table, margin=1.0):
    """Gong et al.'s J with the sampled ranks, summed by explicit loops over (image, j ∈ C+, k ∈ C−)."""
    rank = {(int(i), int(j)): int(r) for i, j, r in zip(draw["row"], draw["positive"], draw["rank"], strict=True)}
    rows = torch.zeros(s.shape[0], dtype=torch.float64)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            if not t[i, j]:
                continue
            for k in range(s.shape[1]):
                if not t[i, k]:
                    rows[i] += float(table[rank[(i, j)]]) * max(0.0, margin - float(s[i, j]) + float(s[i, k]))
    return rows


def test_warp_paper_form_equals_brute_force_objective_and_gradient():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(7, 10, generator=g, dtype=torch.float64).float()
    t = (torch.rand(7, 10, generator=g) < 0.3).float()
    t[:, 2] = 1
    t[6] = 1  # a row without negatives: skipped
    draw = warp_sample(s, t.bool(), 1.0, None, torch.Generator().manual_seed(9))
    table = warp_rank_weights(10).double()
    x = s.clone().requires_grad_(True)
    rows = WARPLoss(10, generator=torch.Generator().manual_seed(9), reduction="none")(x, t)
    ref = _paper_objective_by_loops(s, t, draw, table)
    torch.testing.assert_close(rows.double(), ref, rtol=1e-5, atol=1e-6)
    # gradient: every violating (j, k) pair pushes s_j up and s_k down with weight L(r_j)
    rows.sum().backward()
    expected = torch.zeros_like(s)
    rank = {(int(i), int(j)): int(r) for i, j, r in zip(draw["row"], draw["positive"], draw["rank"], strict=True)}
    for (i, j), r in rank.items():
        for k in range(10):
            if not t[i, k] and 1.0 - s[i, j] + s[i, k] > 0:
                expected[i, j] -= float(table[r])
                expected[i, k] += float(table[r])
    expected[6] = 0.0
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)
    # more labels get gradient than with the one sampled violator
    y = s.clone().requires_grad_(True)
    WARPLoss(10, generator=torch.Generator().manual_seed(9), reduction="sum", form="sampled_pair")(y, t).backward()
    assert int((x.grad != 0).sum()) > int((y.grad != 0).sum())


def test_warp_max_trials_caps_draws():
    reps, c = 4000, 10
    s = torch.zeros(reps, c)
    s[:, 0] = 5.0
    s[:, 7] = 4.5
    t = torch.zeros(reps, c)
    t[:, 0] = 1
    g = torch.Generator().manual_seed(1)
    loss = WARPLoss(c, max_trials=1, generator=g, reduction="none", form="sampled_pair")
    rows = loss(s, t)
    hit = rows > 0
    # a violator found on the first draw has rank C − 1 = 9; the others find nothing within one draw
    assert torch.allclose(rows[hit], torch.full_like(rows[hit], harmonic(9) * 0.5))
    assert abs(hit.float().mean().item() - 1 / 9) < 0.02


def test_warp_reproducible_with_generator_seed():
    s = torch.randn(32, 20)
    t = (torch.rand(32, 20) < 0.2).float()
    t[:, 3] = 1
    a = WARPLoss(20, generator=torch.Generator().manual_seed(7))(s, t)
    b = WARPLoss(20, generator=torch.Generator().manual_seed(7))(s, t)
    c = WARPLoss(20, generator=torch.Generator().manual_seed(8))(s, t)
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_warp_skips_rows_and_counts_them():
    s = torch.zeros(4, 5, requires_grad=True)
    t = torch.tensor([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    loss = WARPLoss(5, generator=torch.Generator().manual_seed(0), form="sampled_pair")
    value = loss(s, t)
    assert value.item() == pytest.approx(harmonic(4))  # the one valid row
    assert int(loss.last_stats["skipped_rows"]) == 3
    # nothing valid at all: zero loss, backward still works
    empty = loss(s, torch.zeros(4, 5))
    empty.backward()
    assert empty.item() == 0.0 and int(loss.last_stats["valid_rows"]) == 0


@pytest.mark.parametrize("make", [
    lambda: WARPLoss(5)(torch.zeros(2, 5), torch.zeros(2, 4)),
    lambda: WARPLoss(5)(torch.zeros(2, 5), torch.full((2, 5), 2.0)),
    lambda: WARPLoss(6)(torch.zeros(2, 5), torch.zeros(2, 5)),
    lambda: WARPLoss(5, max_trials=0),
    lambda: WARPLoss(1),
    lambda: WARPLoss(5, margin=-1.0),
    lambda: WARPLoss(5, generator=3),
    lambda: WARPLoss(5, form="wsabie"),
    lambda: PairwiseRankingLoss(margin="x"),
    lambda: PairwiseRankingLoss(reduction="avg"),
    lambda: PairwiseRankingLoss()(torch.zeros(5), torch.zeros(5)),
    lambda: MultilabelSoftmaxLoss()(torch.zeros(2, 3), torch.tensor([[0.5, 0.5, 0.0], [1, 0, 0]])),
    lambda: MultilabelSoftmaxLoss()(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)),
])
def test_bad_input_is_a_clear_user_error(make):
    with pytest.raises(UserError):
        make()


def test_losses_accept_bool_and_integer_targets():
    s = torch.randn(3, 4)
    t = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]])
    for loss in (MultilabelSoftmaxLoss(), PairwiseRankingLoss()):
        assert loss(s, t).item() == pytest.approx(loss(s, t.bool()).item())
    a = WARPLoss(4, generator=torch.Generator().manual_seed(0))(s, t)
    b = WARPLoss(4, generator=torch.Generator().manual_seed(0))(s, t.float())
    assert a.item() == b.item()


def test_warp_chunked_sampling_equals_one_pass(monkeypatch):
    import vislearn.losses.multilabel as ml

    s = torch.randn(9, 13)
    pos = torch.rand(9, 13) < 0.3
    pos[:, 0] = True
    one = warp_sample(s, pos, 1.0, None, torch.Generator().manual_seed(4))
    monkeypatch.setattr(ml, "_CHUNK", 13 * 2)  # two pairs per chunk
    chunked = warp_sample(s, pos, 1.0, None, torch.Generator().manual_seed(4))
    for key in one:
        assert torch.equal(one[key], chunked[key]), key


def test_functional_reductions_by_hand():
    from vislearn.losses.multilabel import multilabel_softmax_loss, pairwise_ranking_loss

    # row 0: scores (0, 0, 0), positives {0, 1}: −½ log ⅓ · 2 = log 3; row 1: no positive (skipped);
    # row 2: scores (2, 0, 0), positive {0}: −log(e² / (e² + 2))
    scores = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [2.0, 0.0, 0.0]])
    targets = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    rows = torch.tensor([math.log(3), 0.0, -math.log(math.exp(2) / (math.exp(2) + 2))])
    torch.testing.assert_close(multilabel_softmax_loss(scores, targets, reduction="none"), rows)
    torch.testing.assert_close(multilabel_softmax_loss(scores, targets, reduction="sum"), rows.sum())
    torch.testing.assert_close(multilabel_softmax_loss(scores, targets, reduction="mean"), rows.sum() / 2)
    # pairwise hinge, margin 1: row 0: 2 pairs of max(0, 1 − 0 + 0) = 2; row 2: 2 pairs of max(0, 1 − 2) = 0
    pair_rows = torch.tensor([2.0, 0.0, 0.0])
    torch.testing.assert_close(pairwise_ranking_loss(scores, targets, reduction="none"), pair_rows)
    torch.testing.assert_close(pairwise_ranking_loss(scores, targets, reduction="sum"), torch.tensor(2.0))
    torch.testing.assert_close(pairwise_ranking_loss(scores, targets, reduction="mean"), torch.tensor(1.0))
    # WARP (paper form) with every score 0, C = 4: every negative violates, the first draw finds one, so
    # r = C − 1 = 3 and each (positive, negative) pair pays L(3) = H(3) · hinge 1. Row 0: 1 positive × 3
    # negatives; row 1: no positive, row 3: no negative (both skipped); row 2: 2 positives × 2 negatives
    t4 = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    warp_rows = torch.tensor([3 * harmonic(3), 0.0, 4 * harmonic(3), 0.0])
    for red, expect in (("none", warp_rows), ("sum", warp_rows.sum()), ("mean", warp_rows.sum() / 2)):
        got = warp_loss(torch.zeros(4, 4), t4, generator=torch.Generator().manual_seed(0), reduction=red)
        torch.testing.assert_close(got, expect, msg=red)


# ------------------------------------------------------------- edges the mutation tool found untested
def test_pairwise_negative_exactly_at_the_margin_is_not_a_violator():
    # s_j − m = 1 − 1 = 0 = s_k exactly: the hinge max(0, m − s_j + s_k) is 0 with relu's zero gradient there;
    # counting the tie as a violator would add 0 to the value but −1/+1 to the gradients of s_j/s_k
    s = torch.tensor([[1.0, 0.0, 0.5, -3.0]], requires_grad=True)
    t = torch.tensor([[1, 0, 0, 0]])
    loss = pairwise_ranking_loss(s, t, margin=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.5)  # only the 0.5 negative violates: 1 − 1 + 0.5
    assert s.grad.tolist() == [[-1.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize("form, expected", [
    # one violator (0.5) among n = 3 negatives, two ties at exactly s_j − m (not violators): the draw that
    # finds it is uniform over positions 1..3, so r = ⌊3/N⌋ ∈ {3, 1, 1}; the paper form pays L(r) · Σ hinges
    # (0.5), the sampled pair L(r) · 0.5 too; E = (H(3) + 1 + 1) / 3 · 0.5
    ("paper", (harmonic(3) + 2) / 3 * 0.5),
    ("sampled_pair", (harmonic(3) + 2) / 3 * 0.5),
])
def test_warp_ties_at_the_margin_are_not_violators(form, expected):
    rows = 4000
    s = torch.tensor([[1.0, 0.0, 0.0, 0.5]]).repeat(rows, 1)
    t = torch.tensor([[1, 0, 0, 0]]).repeat(rows, 1)
    per_row = warp_loss(s, t, margin=1.0, generator=torch.Generator().manual_seed(0), reduction="none", form=form)
    assert per_row.unique().tolist() == pytest.approx([0.5, 0.5 * harmonic(3)])  # never a tie's zero hinge
    assert per_row.mean().item() == pytest.approx(expected, abs=0.02)  # counting ties: always r = 3 (0.917)


def test_inputs_must_both_be_tensors_and_margin_zero_is_allowed():
    for loss in (PairwiseRankingLoss(), MultilabelSoftmaxLoss(), WARPLoss(3)):
        with pytest.raises(UserError, match="must be tensors"):
            loss(torch.zeros(1, 3), [[1, 0, 0]])
        with pytest.raises(UserError, match="must be tensors"):
            loss([[0.0, 0.0, 0.0]], torch.tensor([[1, 0, 0]]))
    s, t = torch.tensor([[1.0, 0.0, 1.5]]), torch.tensor([[1, 0, 0]])
    assert pairwise_ranking_loss(s, t, margin=0.0).item() == pytest.approx(0.5)  # max(0, 0 − 1 + 1.5)
    assert PairwiseRankingLoss(margin=0).margin == 0.0 and WARPLoss(3, margin=0).margin == 0.0


def test_warp_module_repr_and_no_saved_state():
    loss = WARPLoss(7, margin=0.5, max_trials=3, form="sampled_pair")
    assert repr(loss) == "WARPLoss(num_labels=7, margin=0.5, max_trials=3, form='sampled_pair')"
    # the rank-weight table is derived from num_labels: not saved, so checkpoints hold no loss state
    assert loss.state_dict() == {} and loss.rank_weights.tolist() == warp_rank_weights(7).tolist()

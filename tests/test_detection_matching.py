"""Priors, box coding, matching and the MultiBox loss against closed forms, brute force and torchvision."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from vislearn.detection import (
    BoxCoder,
    bipartite_match,
    centered_iou,
    fit_coder_stats,
    grid_priors,
    iou_match,
    kmeans_box_shapes,
    match_batch,
    multibox_cost,
    num_grid_priors,
    prior_match_frequency,
    rank_priors_by_frequency,
    sanitize_boxes,
)
from vislearn.errors import UserError
from vislearn.losses import MultiBoxLoss


def _rand_boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.7
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    return torch.cat([xy, xy + wh], 1)


def test_default_grid_has_1420_priors_in_head_order():
    p = grid_priors()
    assert p.shape == (1420, 4) and num_grid_priors() == 1420
    assert (p >= 0).all() and (p <= 1).all()
    # first prior: cell (0,0) of the 8×8 grid, ratio 1/4 -> w = 1/8·0.5, h = 1/8·2 (clipped at 0)
    w, h = 0.125 * 0.5, 0.125 * 2
    torch.testing.assert_close(p[0], torch.tensor([0.0625 - w / 2, 0.0, 0.0625 + w / 2, 0.0625 + h / 2]))
    torch.testing.assert_close(p[-1], torch.tensor([0.0, 0.0, 1.0, 1.0]))  # the 1×1 grid: whole image
    ctr = (p[:, :2] + p[:, 2:]) / 2
    assert torch.allclose(ctr[11 * 9: 11 * 10, 0], torch.full((11,), 1.5 / 8))  # cell (1, 1) of 8×8


def test_centered_iou_closed_form_and_kmeans_recovers_clusters():
    a = torch.tensor([[2.0, 1.0]])
    b = torch.tensor([[1.0, 2.0], [2.0, 1.0], [4.0, 2.0]])
    torch.testing.assert_close(centered_iou(a, b), torch.tensor([[1 / 3, 1.0, 0.25]]))
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([[0.05, 0.05], [0.3, 0.1], [0.1, 0.4], [0.6, 0.6]])
    wh = true.repeat_interleave(50, 0) * (1 + 0.05 * torch.randn(200, 2, generator=g))
    c = kmeans_box_shapes(wh, 4)
    best = centered_iou(c, true).max(1).values
    assert (best > 0.9).all()
    with pytest.raises(UserError, match="at least"):
        kmeans_box_shapes(wh[:3], 4)


def test_prior_frequency_ranking():
    priors = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1.0]])
    gts = [torch.tensor([[0.5, 0.5, 1, 0.95], [0.55, 0.5, 1, 1]]), torch.zeros(0, 4), torch.tensor([[0, 0, 0.9, 1.0]])]
    assert prior_match_frequency(priors, gts).tolist() == [0, 2, 1]
    assert rank_priors_by_frequency(priors, gts).tolist() == [1, 2, 0]


@pytest.mark.parametrize("mode", ["corner", "center"])
def test_coder_round_trip_and_whitening(mode):
    priors = _rand_boxes(300, 1)
    gt = _rand_boxes(300, 2)
    mean, std = fit_coder_stats(gt, priors, mode)
    coder = BoxCoder(mean, std, mode)
    code = coder.encode(gt, priors)
    torch.testing.assert_close(coder.decode(code, priors), gt, atol=1e-5, rtol=0)
    torch.testing.assert_close(code.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(code.std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    if mode == "corner":  # closed form
        torch.testing.assert_close(code, (gt - priors - mean) / std)
    with pytest.raises(UserError):
        BoxCoder(std=(1, 0, 1, 1))


def _brute_force(cost):
    P, G = cost.shape
    best, arg = math.inf, None
    for perm in itertools.permutations(range(P), G):
        c = sum(float(cost[p, j]) for j, p in enumerate(perm))
        if c < best - 1e-12:
            best, arg = c, perm
    return best, arg


def _objective(preds, gts, logits, alpha, assignment):
    """Erhan et al.'s F for ``assignment`` (gt j -> prediction assignment[j]), straight from eq. 1-3."""
    c = torch.sigmoid(logits.double())
    matched = set(assignment)
    f = sum(0.5 * alpha * float(((preds[p].double() - gts[j].double()) ** 2).sum()) - math.log(float(c[p]))
            for j, p in enumerate(assignment))
    return f - sum(math.log(1 - float(c[i])) for i in range(len(preds)) if i not in matched)


@pytest.mark.parametrize("seed", range(8))
def test_bipartite_minimises_multibox_objective_by_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    P, G = 6, int(torch.randint(1, 5, (1,), generator=g))
    preds, gts = _rand_boxes(P, seed + 10), _rand_boxes(G, seed + 20)
    logits = torch.randn(P, generator=g) * 2
    m = bipartite_match(preds, gts, logits, alpha=0.3)
    cost = multibox_cost(preds, gts, logits, alpha=0.3)
    # the per-pair cost by hand for one entry: α/2‖l−g‖² − log c + log(1 − c)
    c2 = float(torch.sigmoid(logits[2].double()))
    ref = 0.15 * float(((preds[2] - gts[0]) ** 2).sum()) - math.log(c2) + math.log(1 - c2)
    assert abs(float(cost[2, 0]) - ref) < 1e-6
    assert (m >= 0).sum() == G and sorted(m[m >= 0].tolist()) == list(range(G))
    ours = [int((m == j).nonzero()) for j in range(G)]
    best = min(_objective(preds, gts, logits, 0.3, perm) for perm in itertools.permutations(range(P), G))
    assert abs(_objective(preds, gts, logits, 0.3, ours) - best) < 1e-9


def test_confidence_only_cost_picks_a_worse_assignment():
    # One box, two predictions: an exact but unconfident one and a confident one 0.3 off in each
    # corner coordinate. Minimising α/2‖l−g‖² − log c alone keeps the exact box; Erhan et al.'s F,
    # where the unmatched prediction pays −log(1 − c), is lower with the confident one matched.
    preds = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.8, 0.8]])
    gts = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    logits = torch.tensor([-1.0, 1.0])
    alpha = 10.0  # α/2·‖Δ‖² = 1.8 for the confident box
    assert bipartite_match(preds, gts, logits, alpha=alpha).tolist() == [-1, 0]
    f_exact = _objective(preds, gts, logits, alpha, [0])
    f_confident = _objective(preds, gts, logits, alpha, [1])
    assert f_confident == pytest.approx(1.8 + 2 * math.log1p(math.exp(-1.0)))
    assert f_exact == pytest.approx(2 * math.log1p(math.exp(1.0)))
    assert f_confident < f_exact
    only_log_c = [0.5 * alpha * float(((preds[i] - gts[0]) ** 2).sum()) - float(F.logsigmoid(logits[i]))
                  for i in range(2)]
    assert only_log_c[0] < only_log_c[1]  # the cost without the unmatched terms would keep the exact box


def test_iou_match_equals_torchvision_ssd_matcher():
    from torchvision.models.detection._utils import SSDMatcher

    priors = grid_priors()
    for seed in range(3):
        gts = _rand_boxes(7, seed)
        ref = SSDMatcher(0.5)(box_iou(gts, priors))
        assert torch.equal(iou_match(priors, gts, 0.5, force_best=True), ref)
    no_force = iou_match(priors, gts, 0.5, force_best=False)
    iou = box_iou(gts, priors)
    assert torch.equal(no_force >= 0, iou.max(0).values >= 0.5)
    assert (iou_match(priors, torch.zeros(0, 4)) == -1).all()


def test_match_batch_handles_zero_box_images():
    priors = grid_priors(grids=(2, 1), aspect_ratios=(1.0,))
    out = match_batch(priors, [torch.zeros(0, 4), torch.tensor([[0, 0, 0.5, 0.5]])])
    assert out.shape == (2, 5) and (out[0] == -1).all() and out[1].tolist() == [0, -1, -1, -1, -1]


def test_multibox_loss_by_hand():
    # 2 priors, 1 image with one gt box; bipartite on priors matches prior 0
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    gt = [torch.tensor([[0.1, 0.0, 0.5, 0.6]])]
    coder = BoxCoder((0, 0, 0, 0), (0.1, 0.1, 0.1, 0.1))
    loc = torch.tensor([[[0.5, 0.0, 0.0, 0.5], [1.0, 1.0, 1.0, 1.0]]])
    logits = torch.tensor([[1.0, -2.0]])
    out = MultiBoxLoss(alpha=0.3)(loc, logits, priors, gt, coder)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])  # (gt - prior0) / 0.1
    l2 = 0.5 * float(((loc[0, 0] - target) ** 2).sum())  # 0.5 * (0.25 + 0.25) = 0.25
    conf = math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))  # -log σ(1) - log(1-σ(-2))
    assert abs(l2 - 0.25) < 1e-12
    assert float(out["loc"]) == pytest.approx(l2)
    assert float(out["conf"]) == pytest.approx(conf)
    assert float(out["loss"]) == pytest.approx(0.3 * l2 + conf)
    assert float(out["matched"]) == 1


def test_multibox_loss_zero_boxes_and_missing_label_weight():
    priors = grid_priors(grids=(2, 1), aspect_ratios=(1.0,))
    coder = BoxCoder()
    loc = torch.zeros(2, 5, 4, requires_grad=True)
    logits = torch.zeros(2, 5, requires_grad=True)
    gts = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 0.5, 0.5]])]
    out = MultiBoxLoss()(loc, logits, priors, gts, coder)
    # all 10 logits at 0: BCE log 2 each; one positive with zero localisation error
    assert float(out["conf"]) == pytest.approx(10 * math.log(2) / 2)
    assert float(out["loc"]) == 0.0
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()
    # missing-label option: negatives overlapping no labelled box get weight 0.1.
    # image 0 (no boxes): all 5 negatives lonely; image 1: priors 1, 2 and 3 overlap nothing, prior 4 (whole image) does
    out2 = MultiBoxLoss(missing_label_weight=0.1)(loc, logits, priors, gts, coder)
    expect = math.log(2) * (5 * 0.1 + 1 + 3 * 0.1 + 1) / 2
    assert float(out2["conf"]) == pytest.approx(expect)
    # all-empty batch
    out3 = MultiBoxLoss(matching="iou")(loc, logits, priors, [torch.zeros(0, 4)] * 2, coder)
    assert float(out3["matched"]) == 0 and float(out3["loc"]) == 0


def test_loss_validates_arguments():
    with pytest.raises(UserError, match="alpha"):
        MultiBoxLoss(alpha=-1)
    with pytest.raises(UserError, match="matching"):
        MultiBoxLoss(matching="greedy")
    with pytest.raises(UserError, match="missing_label_weight"):
        MultiBoxLoss(missing_label_weight=2)
    with pytest.raises(UserError, match="box lists"):
        MultiBoxLoss()(torch.zeros(2, 5, 4), torch.zeros(2, 5), grid_priors((2, 1), (1.0,)), [torch.zeros(0, 4)],
                       BoxCoder())


def test_match_on_predictions_uses_confidence():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]])
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]])]
    loc = torch.zeros(1, 2, 4)
    logits = torch.tensor([[-3.0, 3.0]])  # identical boxes: the confident prediction must be matched
    m = match_batch(priors, gt, pred_boxes=priors[None], logits=logits)
    assert m.tolist() == [[-1, 0]]
    out = MultiBoxLoss(match_on="predictions")(loc, logits, priors, gt, BoxCoder())
    assert float(out["conf"]) == pytest.approx(2 * math.log1p(math.exp(-3.0)))


def test_sanitize_boxes_counts():
    b = torch.tensor([[-5.0, 0, 10, 10], [3, 3, 3, 8], [200, 200, 300, 300], [float("nan"), 0, 1, 1], [1, 1, 5, 5]])
    kept, keep, counts = sanitize_boxes(b, (100, 100))
    assert keep.tolist() == [True, False, False, False, True]
    assert counts == {"clipped": 1, "dropped_degenerate": 2, "dropped_nonfinite": 1}
    assert kept[0].tolist() == [0, 0, 10, 10]


def test_center_coder_equals_torchvision_box_coder():
    # torchvision's Faster R-CNN coder with unit weights is the centre parameterisation, no whitening;
    # its decode clamps log-sizes at log(1000/16), far outside these offsets
    from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

    priors = _rand_boxes(200, 5).double()
    gt = _rand_boxes(200, 6).double()
    tv = TVBoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    ours = BoxCoder(mode="center")
    ref = tv.encode_single(gt, priors)
    torch.testing.assert_close(ours.encode(gt, priors), ref, rtol=1e-12, atol=1e-12)
    codes = torch.randn(200, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    torch.testing.assert_close(ours.decode(codes, priors), tv.decode_single(codes, priors), rtol=1e-12, atol=1e-12)
    # whitening: code = (offset − mean)/std, decode inverts it, checked against the same oracle
    mean, std = torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.tensor([0.5, 2.0, 1.5, 0.25])
    white = BoxCoder(mean, std, mode="center")
    torch.testing.assert_close(white.encode(gt, priors), (ref - mean.double()) / std.double(), rtol=1e-6, atol=1e-6)


# --- edges found by mutation testing (tests/MUTANTS.md, `make mutants`) ---

def test_iou_match_threshold_is_inclusive_and_validated():
    # prior 0 is the left half of the gt box [0, 0, 1, 1]: IoU exactly 0.5; prior 1 overlaps it by 0.25
    priors = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.25, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert iou_match(priors, gt, 0.5, force_best=False).tolist() == [0, -1]
    assert iou_match(priors, gt, 0.25, force_best=False).tolist() == [0, 0]
    assert iou_match(priors, gt, 0.0, force_best=False).tolist() == [0, 0]
    assert iou_match(priors, gt, 1.0, force_best=False).tolist() == [-1, -1]
    assert iou_match(priors, gt, 1.0, force_best=True).tolist() == [0, -1]  # its best prior is forced
    for bad in (-0.5, 1.5):
        with pytest.raises(UserError, match="threshold"):
            iou_match(priors, gt, bad)


def test_matchers_with_one_or_no_prior_and_one_box():
    box = torch.tensor([[0.1, 0.1, 0.6, 0.6]])
    for match in (iou_match, bipartite_match):
        assert match(box.clone(), box).tolist() == [0]  # one prediction, one box
        assert match(torch.zeros(0, 4), box).shape == (0,)  # no prediction at all
        assert match(box.clone(), torch.zeros(0, 4)).tolist() == [-1]
    assert match_batch(grid_priors((2, 1), (1.0,)), []).shape == (0, 5)  # an empty batch


def test_iou_matching_forces_the_best_prior_by_default():
    # the only prior overlaps the box by IoU 0.25 < 0.5: matched only because force_best defaults to True
    prior = torch.tensor([[0.0, 0.0, 0.25, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert iou_match(prior, gt).tolist() == [0]
    assert match_batch(prior, [gt], method="iou").tolist() == [[0]]
    assert match_batch(prior, [gt], method="iou", force_best=False).tolist() == [[-1]]


# ------------------------------------------------------------- edges the mutation tool found untested
def _two_priors_case():
    # prior 1 IS the box; prior 0's prediction decodes exactly onto it (corner coder, std 0.1), prior 1's
    # prediction decodes onto prior 0's square: matching on priors picks prior 1, on predictions prior 0
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    coder = BoxCoder((0, 0, 0, 0), (0.1, 0.1, 0.1, 0.1))
    loc = torch.tensor([[5.0] * 4, [-5.0] * 4]).expand(2, 2, 4).contiguous()  # two identical images
    logits = torch.zeros(2, 2)
    gts = [torch.tensor([[0.5, 0.5, 1.0, 1.0]])] * 2
    return priors, coder, loc, logits, gts


@pytest.mark.parametrize("match_on, missing_label_weight, loc_term", [
    ("priors", 1.0, 50.0),       # prior 1 matched: target 0, ½‖(−5, −5, −5, −5)‖² = 50 per image
    ("priors", 0.5, 50.0),       # the missing-label option decodes predictions but still matches priors
    ("predictions", 1.0, 0.0),   # prior 0 matched: its prediction equals its target (5, 5, 5, 5)
])
def test_multibox_loss_two_images_by_hand(match_on, missing_label_weight, loc_term):
    priors, coder, loc, logits, gts = _two_priors_case()
    out = MultiBoxLoss(alpha=0.3, match_on=match_on, missing_label_weight=missing_label_weight)(
        loc, logits, priors, gts, coder)
    # averaged over the 2 images; every logit 0: BCE log 2 for each of the 2 predictions per image, and the
    # unmatched one overlaps the box after decoding (not "missing"), so no weight changes
    assert float(out["loc"]) == pytest.approx(loc_term)
    assert float(out["conf"]) == pytest.approx(2 * math.log(2))
    assert float(out["loss"]) == pytest.approx(0.3 * loc_term + 2 * math.log(2))
    assert float(out["matched"]) == 2


def test_iou_matching_in_the_loss_forces_the_best_prior_by_default():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    gt = [torch.tensor([[0.0, 0.0, 0.25, 0.25]])]  # IoU 0.25 with prior 0, 0 with prior 1
    args = (torch.zeros(1, 2, 4), torch.zeros(1, 2), priors, gt, BoxCoder())
    assert float(MultiBoxLoss(matching="iou")(*args)["matched"]) == 1  # below the threshold, matched by force
    assert float(MultiBoxLoss(matching="iou", force_best=False)(*args)["matched"]) == 0


def test_loss_arguments_at_their_bounds_and_shapes():
    for ok in (dict(alpha=0.0), dict(matching="iou", iou_threshold=0.0), dict(matching="iou", iou_threshold=1.0),
               dict(missing_label_weight=0.0), dict(missing_label_weight=1.0), dict(missing_label_iou=0.0),
               dict(missing_label_iou=0.99)):
        MultiBoxLoss(**ok)
    for name, value in (("alpha", -0.01), ("iou_threshold", -0.01), ("iou_threshold", 1.01),
                        ("missing_label_weight", -0.01), ("missing_label_weight", 1.01),
                        ("missing_label_iou", 1.0), ("missing_label_iou", -0.01)):
        with pytest.raises(UserError, match=name):
            MultiBoxLoss(**{name: value})
    priors = grid_priors((2, 1), (1.0,))
    for loc, logits in ((torch.zeros(1, 5, 3), torch.zeros(1, 5)), (torch.zeros(1, 5, 4), torch.zeros(1, 4)),
                        (torch.zeros(5, 4), torch.zeros(1, 5))):
        with pytest.raises(UserError, match="expected loc N×P×4 and logits N×P"):
            MultiBoxLoss()(loc, logits, priors, [torch.zeros(0, 4)], BoxCoder())

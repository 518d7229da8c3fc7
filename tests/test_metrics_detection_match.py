"""vislearn.metrics.detection_match: the pair IoU bit for bit against pycocotools' maskUtils.iou; the matching's
edge cases (IoU at a threshold, threshold 0, ranks past int16, candidate blocks) against pycocotools' COCOeval."""

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from test_metrics_detection import _random_scene
from vislearn.metrics import detection_match
from vislearn.metrics.detection import evaluate_coco, evaluate_detections, to_coco_json
from vislearn.metrics.detection_match import pair_iou, xywh


def test_pair_iou_equals_pycocotools_bit_for_bit_with_crowds():
    rng = np.random.default_rng(0)
    n = 4000
    xy = np.round(rng.uniform(0, 600, (n, 2)), 2)
    g = np.concatenate([xy, xy + np.round(rng.uniform(0.5, 80, (n, 2)), 2)], 1)
    d = g + np.round(rng.normal(0, 8, (n, 4)), 3)
    d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
    crowd = rng.uniform(size=n) < 0.3
    ours = pair_iou(xywh(d), xywh(g), crowd)
    ref = np.array([mask_utils.iou(xywh(d[i:i + 1]), xywh(g[i:i + 1]), [int(crowd[i])])[0, 0] for i in range(n)])
    np.testing.assert_array_equal(ours, ref)
    assert (ours > 0.5).sum() > n // 4 and (ours == 0).sum() > 10  # overlapping and disjoint pairs both occur
    # the crowd IoU is intersection over the detection's area: above the plain IoU where a box sits inside
    inside = np.array([[10.0, 10.0, 20.0, 20.0]])
    region = np.array([[0.0, 0.0, 100.0, 100.0]])
    assert pair_iou(xywh(inside), xywh(region), np.array([True]))[0] == 1.0
    assert pair_iou(xywh(inside), xywh(region), np.array([False]))[0] == 0.01


# --- edge cases found by mutation testing (tests/mutants/detection_match_review.md) -----------------------------

def _t(*rows):
    return torch.tensor(np.array(rows, np.float64).reshape(-1, 4))


def _labels(n):
    return torch.zeros(n, dtype=torch.int64)


def _coco(gtb, gtl, dtb, dts, dtl, n_cls, crowd=None, iou_thrs=None, max_dets=None, area_rng=None):
    """pycocotools' COCOeval on the same lists → (precision ``T×R×K×M``, recall ``T×K×M``) of its first area range."""
    dataset, res = to_coco_json(gtb, gtl, dtb, dts, dtl, n_cls, image_size=(100, 100), gt_iscrowd=crowd)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = np.array(iou_thrs, np.float64)
        if max_dets is not None:
            ev.params.maxDets = list(max_dets)
        if area_rng is not None:
            ev.params.areaRng, ev.params.areaRngLbl = [list(area_rng)], ["x"]
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, :], ev.eval["recall"][:, :, 0, :]


def test_pair_iou_of_small_and_overflowing_boxes_equals_pycocotools():
    # boxes under one unit: the union is below 1 and must still count as a union
    rng = np.random.default_rng(1)
    g = np.concatenate([xy := rng.uniform(0, 2, (500, 2)), xy + rng.uniform(0.05, 0.9, (500, 2))], 1)
    d = g + rng.normal(0, 0.05, (500, 4))
    d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
    crowd = rng.uniform(size=500) < 0.3
    ours = pair_iou(xywh(d), xywh(g), crowd)
    ref = np.array([mask_utils.iou(xywh(d[i:i + 1]), xywh(g[i:i + 1]), [int(crowd[i])])[0, 0] for i in range(500)])
    np.testing.assert_array_equal(ours, ref)
    assert (ours > 0.5).sum() > 100
    # boxes touching along one side are disjoint (IoU 0, as bbIou's `w <= 0` / `h <= 0`) even where the other
    # side overflows to inf (2e308 tall or wide): 0 · inf would be NaN
    d = np.array([[0, -1e308, 10, 1e308], [-1e308, 0, 1e308, 10]] * 2)
    g = np.array([[10, -1e308, 20, 1e308], [-1e308, 10, 1e308, 20]] * 2)
    crowd = np.array([True, True, False, False])
    with np.errstate(all="ignore"):
        ours = pair_iou(xywh(d), xywh(g), crowd)
        ref = np.array([mask_utils.iou(xywh(d[i:i + 1]), xywh(g[i:i + 1]), [int(crowd[i])])[0, 0] for i in range(4)])
    np.testing.assert_array_equal(ours, ref)
    assert ours.tolist() == [0.0] * 4


def test_boxes_whose_areas_underflow_have_iou_zero_and_match_at_threshold_zero_as_cocoeval():
    # 1e-170 wide and tall: w·h underflows to 0, so the union is 0. Our IoU is 0 (pycocotools divides 0/0 → NaN),
    # with no warning; at IoU threshold 0 it matches, as COCOeval's `NaN < 0` is false.
    b = _t([0, 0, 1e-170, 1e-170])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pair_iou(xywh(b.numpy()), xywh(b.numpy()), np.array([False])).tolist() == [0.0]
        assert pair_iou(xywh(b.numpy()), xywh(b.numpy()), np.array([True])).tolist() == [0.0]
        ev = evaluate_detections([b], [torch.ones(1, dtype=torch.float64)], [b], [_labels(1)], [_labels(1)],
                                 iou_thresholds=[0.0])
    p, r = _coco([b], [_labels(1)], [b], [torch.ones(1, dtype=torch.float64)], [_labels(1)], 1, iou_thrs=[0.0])
    np.testing.assert_array_equal(ev.recall, r)
    np.testing.assert_array_equal(ev.precision, p)
    assert ev.recall.ravel().tolist() == [1.0, 1.0, 1.0]


def test_iou_exactly_at_a_threshold_matches_as_cocoeval():
    # COCOeval skips a pair only when IoU < t: an IoU equal to a threshold matches, in both matching paths.
    # image 0: one candidate, IoU 50/200 = 0.25 exactly (the lowest threshold: the candidate cut-off);
    # image 1: the detection has two candidates, IoU 50/100 = 0.5 (A) and 50/200 = 0.25 (B): rank by rank.
    gtb = [_t([0, 0, 10, 20]), _t([0, 0, 10, 10], [0, 0, 10, 20])]
    dtb = [_t([0, 0, 10, 5]), _t([0, 0, 10, 5])]
    dts = [torch.tensor([0.9], dtype=torch.float64), torch.tensor([0.8], dtype=torch.float64)]
    gtl, dtl = [_labels(1), _labels(2)], [_labels(1), _labels(1)]
    ev = evaluate_detections(dtb, dts, gtb, dtl, gtl, iou_thresholds=[0.25, 0.5], max_dets=[10])
    p, r = _coco(gtb, gtl, dtb, dts, dtl, 1, iou_thrs=[0.25, 0.5], max_dets=[10])
    np.testing.assert_array_equal(ev.recall, r)
    np.testing.assert_array_equal(ev.precision, p)
    # by hand: at 0.25 both detections match (image 1's takes A, the higher IoU): 2 of 3; at 0.5 only A: 1 of 3
    assert ev.recall[:, 0, 0].tolist() == [2 / 3, 1 / 3]
    assert ev.precision[1, :34, 0, 0].tolist() == [0.5] * 34 and (ev.precision[1, 34:, 0, 0] == 0).all()


def test_threshold_zero_matches_crowds_with_iou_zero_as_cocoeval():
    # at IoU threshold 0 every pair qualifies (COCOeval: `iou < 0` is never true); a detection disjoint from two
    # crowd regions (IoU 0, rank by rank since it has two candidates) is matched to one and so ignored, not a
    # false positive that would halve the precision of the true positive it outscores
    gtb = [_t([0, 0, 10, 10]), _t([0, 0, 10, 10], [20, 20, 30, 30])]
    crowd = [torch.tensor([False]), torch.tensor([True, True])]
    dtb = [_t([0, 0, 10, 10]), _t([50, 50, 60, 60])]
    dts = [torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64)]
    gtl, dtl = [_labels(1), _labels(2)], [_labels(1), _labels(1)]
    ev = evaluate_detections(dtb, dts, gtb, dtl, gtl, iou_thresholds=[0.0], gt_iscrowd=crowd)
    p, r = _coco(gtb, gtl, dtb, dts, dtl, 1, crowd=crowd, iou_thrs=[0.0])
    np.testing.assert_array_equal(ev.precision, p)
    np.testing.assert_array_equal(ev.recall, r)
    assert ev.precision == pytest.approx(np.ones_like(p), abs=1e-12) and (ev.recall == 1.0).all()


def test_area_range_with_a_single_detection_in_the_first_category_as_cocoeval():
    # category 0 has exactly one detection, outside the range (40×40 > 32²), so category 1's detections start at
    # pooled position 1: the out-of-range count before them (1) must be taken off theirs
    gtb = [_t([0, 0, 10, 10])]
    dtb = [_t([0, 0, 40, 40], [0, 0, 10, 10])]
    dts = [torch.tensor([0.9, 0.8], dtype=torch.float64)]
    gtl, dtl = [torch.tensor([1])], [torch.tensor([0, 1])]
    ev = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=2, area_range=(0.0, 32.0**2))
    p, r = _coco(gtb, gtl, dtb, dts, dtl, 2, area_rng=(0.0, 32.0**2))
    np.testing.assert_array_equal(ev.precision, p)
    np.testing.assert_array_equal(ev.recall, r)
    assert ev.precision[:, :, 1] == pytest.approx(np.ones_like(p[:, :, 1]), abs=1e-12)
    assert (ev.precision[:, :, 0] == -1.0).all()  # no ground truth


def test_categories_without_ground_truth_are_minus_one_and_raise_no_warning():
    # an area range or category with no ground truth: COCOeval's -1, computed without dividing by its zero count
    gtb, gtl, dtb, dts, dtl = _random_scene(8, 3, 2)
    gtl = [torch.where(g == 2, 0, g) for g in gtl]  # category 2 has detections but no ground truth
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=3)
    assert (ev.areas["all"].precision[:, :, 2] == -1).all() and (ev.areas["all"].precision[:, :, :2] >= 0).all()
    p, r = _coco(gtb, gtl, dtb, dts, dtl, 3)
    np.testing.assert_array_equal(ev.areas["all"].precision, p)
    np.testing.assert_array_equal(ev.areas["all"].recall, r)


@pytest.mark.parametrize("last", [2**15, 2**15 + 1])
def test_ranks_beyond_int16_are_matched_in_rank_order(last):
    # one image with last + 1 detections: ranks 0, 1 and `last` lie on ground truth A and B (IoU 1 and 0.9, two
    # candidates each: rank by rank), the rest far away. Ranks 0 and 1 take A and B; rank `last` comes too late.
    # The rank sort casts to int16 only below 2**15: 2**15 would wrap to -2**15 and go first.
    n = last + 1
    d = np.tile([50.0, 50, 60, 60], (n, 1))
    d[[0, 1, last]] = [0, 0, 10, 10]
    dtb, dts, dtl = [torch.tensor(d)], [torch.linspace(1, 0, n, dtype=torch.float64)], [_labels(n)]
    gtb, gtl = [_t([0, 0, 10, 10], [0, 0, 10, 9])], [_labels(2)]
    ev = evaluate_detections(dtb, dts, gtb, dtl, gtl, iou_thresholds=[0.5], max_dets=[n])
    p, r = _coco(gtb, gtl, dtb, dts, dtl, 1, iou_thrs=[0.5], max_dets=[n])
    np.testing.assert_array_equal(ev.precision, p)
    np.testing.assert_array_equal(ev.recall, r)
    assert (ev.precision == 1.0).all() and ev.recall.item() == 1.0  # by hand: true positives at ranks 0 and 1


def _blocks(cnt, per_chunk):
    """Pair counts of the blocks: from each start, as many whole detections as fit in per_chunk pairs, at least one."""
    out, lo = [], 0
    while lo < len(cnt):
        s, hi = cnt[lo], lo + 1
        while hi < len(cnt) and s + cnt[hi] <= per_chunk:
            s, hi = s + cnt[hi], hi + 1
        out.append(int(s))
        lo = hi
    return out


def test_candidates_in_blocks_of_at_most_the_chunk_size_equal_one_block_and_cocoeval(monkeypatch):
    rng = np.random.default_rng(3)
    n_groups = 7
    g_group = np.sort(rng.integers(0, n_groups - 1, 60))  # groups of up to 14 boxes; the last one empty
    xy = rng.uniform(0, 50, (60, 2))
    gx = np.concatenate([xy, rng.uniform(2, 30, (60, 2))], 1)
    src = rng.integers(0, 60, 150)
    dx = np.abs(gx[src] + rng.normal(0, 3, (150, 4)))
    d_group = np.where(rng.uniform(size=150) < 0.8, g_group[src], rng.integers(0, n_groups, 150))
    crowd = rng.uniform(size=60) < 0.2
    cnt = np.bincount(g_group, minlength=n_groups)[d_group]
    assert cnt.max() > 10 and (cnt == 0).any()
    # the oracle: every same-group pair in (detection, ground truth) order, IoU by pair_iou, kept at >= 0.3
    bd, bg = zip(*[(i, j) for i in range(150) for j in np.flatnonzero(g_group == d_group[i])], strict=True)
    bd, bg = np.array(bd), np.array(bg)
    biou = pair_iou(dx[bd], gx[bg], crowd[bg])
    keep = biou >= 0.3
    one = detection_match.candidates(dx, d_group, gx, g_group, crowd, n_groups, 0.3)
    for got, want in zip(one, (bd[keep], bg[keep], biou[keep]), strict=True):
        np.testing.assert_array_equal(got, want)

    sizes, original = [], detection_match._iou_of_edges

    def counted(d, g, c):
        assert len(sizes) < 10_000, "the blocks do not advance"
        sizes.append(len(c))
        return original(d, g, c)

    monkeypatch.setattr(detection_match, "_iou_of_edges", counted)
    monkeypatch.setattr(detection_match, "_PAIRS_PER_CHUNK", 10)
    chunked = detection_match.candidates(dx, d_group, gx, g_group, crowd, n_groups, 0.3)
    for got, want in zip(chunked, one, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sizes == _blocks(cnt, 10) and len(sizes) > 20 and max(sizes) > 10  # one detection alone over the size
    # the evaluator with small blocks still equals COCOeval
    gtb, gtl, dtb, dts, dtl = _random_scene(20, 3, 4)
    ev = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=3)
    p, r = _coco(gtb, gtl, dtb, dts, dtl, 3)
    np.testing.assert_allclose(ev.precision, p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ev.recall, r, rtol=0, atol=1e-12)

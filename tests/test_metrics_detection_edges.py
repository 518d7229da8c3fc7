"""vislearn.metrics.detection at its edges: argument checks, input types and values exactly on a boundary.

Each case is checked against pycocotools' COCOeval (the json written by hand where the code under test
would otherwise be its own oracle) or a hand count. The mutation run of issue 19 found these untested
(tests/MUTANTS.md, "metrics/detection.py: the survivors").
"""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from test_metrics_detection import _random_scene
from vislearn.errors import UserError
from vislearn.metrics.detection import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    DetectionEvaluator,
    evaluate_coco,
    evaluate_detections,
    to_coco_json,
)


def _coco(gt, dt, n_cls=1, iou_thrs=(0.5,), max_dets=(100,), area_rngs=None):
    """COCOeval on hand-written annotations: ``gt``: (image, label, xywh, area, iscrowd); ``dt``: (image,
    label, xywh, score). Images ``0..max``, category ids ``label + 1``."""
    n_img = 1 + max([g[0] for g in gt] + [d[0] for d in dt])
    dataset = {"images": [{"id": i + 1, "width": 100, "height": 100} for i in range(n_img)],
               "categories": [{"id": c + 1, "name": str(c)} for c in range(n_cls)],
               "annotations": [{"id": n + 1, "image_id": i + 1, "category_id": c + 1, "bbox": list(b), "area": a,
                                "iscrowd": int(cr)} for n, (i, c, b, a, cr) in enumerate(gt)]}
    res = [{"image_id": i + 1, "category_id": c + 1, "bbox": list(b), "score": s} for i, c, b, s in dt]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = dataset
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(res), "bbox")
        ev.params.iouThrs = np.array(iou_thrs, np.float64)
        ev.params.maxDets = list(max_dets)
        area_rngs = [COCO_AREA_RANGES["all"]] if area_rngs is None else area_rngs
        ev.params.areaRng = [list(r) for r in area_rngs]
        ev.params.areaRngLbl = [str(k) for k in range(len(area_rngs))]
        ev.evaluate()
        ev.accumulate()
    return ev


def _xyxy(b):
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


def _ours(gt, dt, n_cls=1, iou_thrs=(0.5,), max_dets=(100,), area_rngs=None):
    """The same annotations through evaluate_coco (per-image xyxy lists)."""
    n_img = 1 + max([g[0] for g in gt] + [d[0] for d in dt])
    gtb = [torch.tensor([_xyxy(g[2]) for g in gt if g[0] == i], dtype=torch.float64).reshape(-1, 4)
           for i in range(n_img)]
    gtl = [torch.tensor([g[1] for g in gt if g[0] == i], dtype=torch.int64) for i in range(n_img)]
    area = [torch.tensor([g[3] for g in gt if g[0] == i], dtype=torch.float64) for i in range(n_img)]
    crowd = [torch.tensor([bool(g[4]) for g in gt if g[0] == i], dtype=torch.bool) for i in range(n_img)]
    dtb = [torch.tensor([_xyxy(d[2]) for d in dt if d[0] == i], dtype=torch.float64).reshape(-1, 4)
           for i in range(n_img)]
    dtl = [torch.tensor([d[1] for d in dt if d[0] == i], dtype=torch.int64) for i in range(n_img)]
    dts = [torch.tensor([d[3] for d in dt if d[0] == i], dtype=torch.float64) for i in range(n_img)]
    rngs = {str(k): tuple(r) for k, r in enumerate(area_rngs or [COCO_AREA_RANGES["all"]])}
    ev = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=n_cls, iou_thresholds=list(iou_thrs),
                       max_dets=max_dets, area_ranges=rngs, gt_iscrowd=crowd, gt_areas=area)
    return (np.stack([e.precision for e in ev.areas.values()], 3), np.stack([e.recall for e in ev.areas.values()], 2))


def _assert_same(gt, dt, **kw):
    ref = _coco(gt, dt, **kw)
    p, r = _ours(gt, dt, **kw)
    np.testing.assert_array_equal(p, ref.eval["precision"])
    np.testing.assert_array_equal(r, ref.eval["recall"])
    return p, r


def test_constants_are_cocoevals_params():
    params = Params(iouType="bbox")
    np.testing.assert_array_equal(COCO_IOU_THRESHOLDS, params.iouThrs)
    assert list(COCO_AREA_RANGES) == params.areaRngLbl
    assert [list(r) for r in COCO_AREA_RANGES.values()] == params.areaRng


def test_ap_and_ar_leave_out_categories_without_ground_truth_as_summarize():
    # category 2 has detections and no ground truth: its -1 entries must not enter the means
    gtb, gtl, dtb, dts, dtl = _random_scene(20, 2, 4)
    dtl = [torch.where(torch.arange(len(lab)) % 3 == 0, torch.full_like(lab, 2), lab) for lab in dtl]
    dataset, res = to_coco_json(gtb, gtl, dtb, dts, dtl, 3, image_size=(100, 100))
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = dataset
        cg.createIndex()
        ref = COCOeval(cg, cg.loadRes(res), "bbox")
        ref.evaluate(), ref.accumulate(), ref.summarize()
    ours = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=3)
    assert (ours.precision[:, :, 2] == -1).all() and (ours.recall[:, 2] == -1).all()
    assert ours.ap() == pytest.approx(ref.stats[0], abs=1e-12) and ours.ap() > 0
    assert ours.ar() == pytest.approx(ref.stats[8], abs=1e-12) and ours.ar() > 0
    assert ours.ap(iou=0.5) == pytest.approx(ref.stats[1], abs=1e-12)
    assert ours.per_category_ap()[2] == -1.0
    for name in ("ap", "ar", "per_category_ap"):
        with pytest.raises(UserError, match="IoU 0.3 was not evaluated"):
            getattr(ours, name)(iou=0.3)


def test_numpy_list_and_mixed_inputs_equal_tensor_inputs():
    gtb, gtl, dtb, dts, dtl = _random_scene(16, 3, 2)
    ref = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=3)
    assert (ref.precision[0, :, :, -1] > 0).any()
    as_np = [[x.numpy() for x in lst] for lst in (dtb, dts, gtb, dtl, gtl)]
    as_list = [[x.tolist() for x in lst] for lst in (dtb, dts, gtb, dtl, gtl)]
    mixed = [[x if i % 2 else x.numpy() for i, x in enumerate(lst)] for lst in (dtb, dts, gtb, dtl, gtl)]
    assert any(len(b) == 0 for b in as_list[2])  # images without ground truth, given as empty lists
    for args in (as_np, as_list, mixed):
        ev = evaluate_detections(*args[:3], *args[3:], num_classes=3)
        np.testing.assert_array_equal(ev.precision, ref.precision)
        np.testing.assert_array_equal(ev.recall, ref.recall)
    # scores and labels given as K×1 columns are read as K values
    col = evaluate_detections(dtb, [s[:, None] for s in dts], gtb, [x[:, None] for x in dtl], gtl, num_classes=3)
    np.testing.assert_array_equal(col.precision, ref.precision)
    # no image at all: every entry -1 (no category has ground truth)
    empty = evaluate_detections([], [], [], [], [], num_classes=2)
    assert empty.precision.shape == (10, 101, 2, 3) and (empty.precision == -1).all() and empty.ap() == -1.0


@pytest.mark.parametrize("make", [torch.tensor, np.array])
def test_malformed_inputs_are_reported_by_name_and_image(make):
    ok = make([[0.0, 0.0, 5.0, 5.0]])
    one = make([0.5])

    def run(boxes, scores=None):
        scores = [one] * len(boxes) if scores is None else scores
        return evaluate_detections(boxes, scores, [ok] * len(boxes))

    with pytest.raises(UserError, match=r"dt_boxes\[1\]: expected K×4, got shape \(1, 5\)"):
        run([ok, make([[0.0, 0.0, 5.0, 5.0, 1.0]])])
    with pytest.raises(UserError, match=r"dt_boxes\[0\]: expected K×4, got shape \(1, 5\)"):
        run([make([[0.0, 0.0, 5.0, 5.0, 1.0]])] * 2)  # every image the same wrong width
    with pytest.raises(UserError, match=r"dt_boxes\[0\]: expected K×4, got shape \(4,\)"):
        run([make([0.0, 0.0, 5.0, 5.0])] * 2)  # one box given without its row axis
    with pytest.raises(UserError, match=r"dt_scores\[0\]: complex values"):
        run([ok], [make([0.5 + 1j])])
    with pytest.raises(UserError, match="image 1: 1 detection boxes but 2 scores"):
        run([ok, ok], [one, make([0.5, 0.4])])


def test_to_coco_json_checks_each_image_and_takes_empty_lists():
    box = [[0.0, 0.0, 5.0, 5.0]]
    dataset, res = to_coco_json([box, []], [[0], []], [[], box], [[], [0.5]], [[], [0]], 1)
    assert [a["image_id"] for a in dataset["annotations"]] == [1] and [r["image_id"] for r in res] == [2]
    assert dataset["annotations"][0]["bbox"] == [0.0, 0.0, 5.0, 5.0] and dataset["annotations"][0]["area"] == 25.0
    with pytest.raises(UserError, match=r"gt_boxes\[0\]: expected K×4, got shape \(1, 1\)"):
        to_coco_json([[[1.0]]], [[0]], [[]], [[]], [[]], 1)
    with pytest.raises(UserError, match=r"gt_boxes\[0\]: expected K×4, got shape \(4,\)"):
        to_coco_json([[0.0, 0.0, 5.0, 5.0]], [[0]], [[]], [[]], [[]], 1)
    with pytest.raises(UserError, match="image 1: 1 ground-truth boxes but 2 labels"):
        to_coco_json([box, box], [[0], [0, 0]], [[], []], [[], []], [[], []], 1)
    with pytest.raises(UserError, match="image 0: 1 detection boxes but 2 scores"):
        to_coco_json([box], [[0]], [box], [[0.5, 0.4]], [[0]], 1)
    with pytest.raises(UserError, match="image 0: 1 detection boxes but 0 labels"):
        to_coco_json([box], [[0]], [box], [[0.5]], [[]], 1)


def test_zero_size_boxes_and_areas_on_and_inside_the_bounds():
    # a zero-width ground truth and a zero-height detection are valid boxes (IoU 0), as in pycocotools;
    # areas 0 and 0.5 are valid annotation areas
    gt = [(0, 0, (10, 10, 0, 20), 0.0, 0), (0, 0, (40, 40, 20, 20), 0.5, 0), (0, 0, (70, 10, 20, 20), 400.0, 0)]
    dt = [(0, 0, (10, 10, 20, 0), 0.9), (0, 0, (41, 40, 20, 20), 0.8), (0, 0, (70, 12, 20, 20), 0.7)]
    p, r = _assert_same(gt, dt, iou_thrs=(0.5, 0.9), area_rngs=[(0.0, 1e10), (1.0, 1e10)])
    assert r[:, 0, 0, 0].tolist() == [2 / 3, 1 / 3]  # the zero-width box is never matched
    b = [torch.tensor([[0.0, 0.0, 5.0, 5.0]])]
    s = [torch.ones(1)]
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(UserError, match="gt_areas must be finite and non-negative"):
            evaluate_detections(b, s, b, gt_areas=[torch.tensor([bad])])


def test_areas_given_for_some_images_default_to_box_areas_for_the_others():
    gtb, gtl, dtb, dts, dtl = _random_scene(12, 2, 6)
    rng = np.random.default_rng(0)
    given = [torch.tensor(rng.uniform(0, 1500, len(g))) if i in (0, 5) else None for i, g in enumerate(gtb)]
    filled = [a if a is not None else (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
              for a, g in zip(given, gtb, strict=True)]
    assert sum(len(g) for g in gtb[1:5]) > 0 and sum(len(g) for g in gtb[6:]) > 0
    ranges = {"a": (0.0, 500.0), "b": (500.0, 1e10)}
    ours = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=2, gt_areas=given, area_ranges=ranges)
    ref = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=2, gt_areas=filled, area_ranges=ranges)
    for k in ranges:
        np.testing.assert_array_equal(ours.areas[k].precision, ref.areas[k].precision)
        np.testing.assert_array_equal(ours.areas[k].num_gt, ref.areas[k].num_gt)
    assert ours.areas["a"].num_gt.sum() > 0 and ours.areas["b"].num_gt.sum() > 0


def test_threshold_and_max_det_bounds():
    gt = [(0, 0, (10, 10, 20, 20), 400.0, 0), (0, 0, (60, 60, 10, 10), 100.0, 0)]
    dt = [(0, 0, (10, 10, 20, 20), 0.9), (0, 0, (0, 80, 5, 5), 0.8), (0, 0, (62, 60, 10, 10), 0.7)]
    # threshold 0: any pair matches, even without overlap (COCOeval compares iou < t); threshold 1: exact only
    p, r = _assert_same(gt, dt, iou_thrs=(0.0, 1.0), max_dets=(1, 3))
    assert r[:, 0, 0, :].tolist() == [[0.5, 1.0], [0.5, 0.5]]
    b, s = [torch.tensor([[0.0, 0.0, 5.0, 5.0]])], [torch.ones(1)]
    for thr in ([], [-0.5], [1.5], [0.5, 2.0]):
        with pytest.raises(UserError, match="IoU thresholds must be in"):
            evaluate_detections(b, s, b, iou_thresholds=thr)
    for md in ([], [0], [-1, 5]):
        with pytest.raises(UserError, match="max_dets must be positive"):
            evaluate_detections(b, s, b, max_dets=md)


def test_threshold_one_is_capped_as_cocoeval():
    # IoU 1/(1 + 1e-11) < 1: COCOeval caps the threshold 1.0 at 1 - 1e-10, so this is a match
    gt = [(0, 0, (0.0, 0.0, 1.0 + 1e-11, 1.0), 1.0, 0)]
    dt = [(0, 0, (0.0, 0.0, 1.0, 1.0), 0.9)]
    p, r = _assert_same(gt, dt, iou_thrs=(1.0,))
    assert r[0, 0, 0, 0] == 1.0


def test_areas_exactly_on_a_range_bound_are_inside_it():
    # COCOeval ignores ground truth with area < lo or > hi and unmatched detections likewise: area exactly 32²
    # is in both "small" and "medium"
    gt = [(0, 0, (0, 0, 32, 32), 1024.0, 0), (0, 0, (50, 50, 20, 20), 400.0, 0)]
    dt = [(0, 0, (0, 0, 32, 32), 0.9), (0, 0, (60, 0, 32, 32), 0.8), (0, 0, (50, 50, 20, 20), 0.7)]
    rngs = [COCO_AREA_RANGES[k] for k in ("small", "medium")]
    p, r = _assert_same(gt, dt, area_rngs=rngs)
    assert r[0, 0, :, 0].tolist() == [1.0, 1.0]
    # small: 2 true positives and the unmatched 32×32 detection inside the range is a false positive
    assert p[0, -1, 0, 0, 0] == pytest.approx(2 / 3)


def test_labels_on_one_side_only_are_refused():
    b, s, lab = [torch.tensor([[0.0, 0.0, 5.0, 5.0]])], [torch.ones(1)], [torch.zeros(1, dtype=torch.int64)]
    for dl, gl in ((lab, None), (None, lab)):
        with pytest.raises(UserError, match="pass both dt_labels and gt_labels"):
            evaluate_detections(b, s, b, dl, gl)
    ev = DetectionEvaluator(num_classes=1)
    for dl, gl in ((lab, None), (None, lab)):
        with pytest.raises(UserError, match="needs dt_labels and gt_labels"):
            ev.update(b, s, b, dl, gl)


def test_labels_outside_the_categories_are_dropped_as_cocoeval():
    # num_classes=3: label 5 (above every category) on a detection and on a ground truth box is not
    # evaluated, like a category id missing from COCOeval's categories
    gt = [(0, 0, (10, 10, 20, 20), 400.0, 0), (0, 2, (50, 50, 20, 20), 400.0, 0), (1, 1, (5, 5, 30, 30), 900.0, 0)]
    dt = [(0, 0, (11, 10, 20, 20), 0.6), (0, 2, (50, 52, 20, 20), 0.5), (1, 1, (5, 5, 28, 30), 0.4),
          (1, 0, (60, 60, 10, 10), 0.3)]
    extra_gt = [(0, 5, (80, 80, 10, 10), 100.0, 0), (1, 5, (5, 5, 30, 30), 900.0, 0)]
    # (the first extra detection also lies on image 0's category-2 box: an unknown label must not reach it)
    extra_dt = [(0, 5, (50, 50, 20, 20), 0.99), (0, 5, (80, 80, 10, 10), 0.9), (1, 5, (5, 5, 30, 30), 0.95)]
    ref = _coco(gt, dt, n_cls=3, iou_thrs=(0.5, 0.75))
    p, r = _ours(gt + extra_gt, dt + extra_dt, n_cls=3, iou_thrs=(0.5, 0.75))
    np.testing.assert_array_equal(p, ref.eval["precision"])
    np.testing.assert_array_equal(r, ref.eval["recall"])
    assert r[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]  # every category's box found at IoU 0.5


def test_evaluator_takes_crowd_lists_with_missing_images():
    gtb, gtl, dtb, dts, dtl = _random_scene(8, 2, 9)
    crowd = [None if i % 2 else torch.arange(len(g)) == 0 for i, g in enumerate(gtb)]
    acc = DetectionEvaluator(num_classes=2)
    acc.update(dtb, dts, gtb, dtl, gtl, gt_iscrowd=crowd)
    ref = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=2,
                              gt_iscrowd=[torch.zeros(len(g), dtype=torch.bool) if c is None else c
                                          for c, g in zip(crowd, gtb, strict=True)])
    np.testing.assert_array_equal(acc.compute().precision, ref.precision)
    assert sum(int(c.sum()) for c in crowd if c is not None) > 0

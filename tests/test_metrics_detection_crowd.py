"""Crowd regions and annotation areas in vislearn.metrics.detection, against pycocotools' COCOeval and
faster-coco-eval's COCOeval_faster on a generated COCO file (every area range, full arrays)."""

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vislearn.errors import UserError
from vislearn.metrics.detection import (
    DetectionEvaluator,
    coco_map,
    detection_map,
    evaluate_detections,
    proposal_ap,
    proposal_recall,
    to_coco_json,
)

SIZE = 640
N_CLS = 3


def _xyxy(xy, wh):
    return np.concatenate([xy, xy + wh], 1)


def _crowd_scene(n_img, seed):
    """Regular boxes of all COCO sizes, crowd regions (some holding regular boxes), segment areas below w·h.

    Detections: jittered copies of the regular boxes, boxes lying on crowd regions (fully inside or
    sticking out) and random boxes.
    """
    rng = np.random.default_rng(seed)
    gtb, gtl, crowd, area, dtb, dts, dtl = [], [], [], [], [], [], []
    for i in range(n_img):
        k = int(rng.integers(0, 7)) if i % 9 else 0
        c = int(rng.integers(0, 3))
        wh = np.exp(rng.uniform(np.log(6), np.log(300), (k, 2)))
        reg = _xyxy(rng.uniform(0, SIZE - wh), wh)
        cwh = rng.uniform(80, 300, (c, 2))
        crw = _xyxy(rng.uniform(0, SIZE - cwh), cwh)
        inside = rng.uniform(size=k) < 0.3  # some regular boxes sit on a crowd region
        if c and inside.any():
            host = crw[rng.integers(0, c, int(inside.sum()))]
            small = np.minimum(wh[inside], (host[:, 2:] - host[:, :2]) * 0.6)
            reg[inside] = _xyxy(host[:, :2] + rng.uniform(0, 1, small.shape) * (host[:, 2:] - host[:, :2] - small),
                                small)
        g = np.concatenate([reg, crw])
        lab = rng.integers(0, N_CLS, len(g))
        is_crowd = np.r_[np.zeros(k, bool), np.ones(c, bool)]
        # segment areas: 30–100 % of the box, so a box's size bucket and its area's bucket can differ
        a = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) * rng.uniform(0.3, 1.0, len(g))
        src = rng.integers(0, max(k, 1), int(rng.integers(0, 25)) if k else 0)
        jit = reg[src] + rng.normal(0, 3, (len(src), 4)) * np.maximum(wh[src] / 20, 0.5).repeat(2, 1)
        jl = np.where(rng.uniform(size=len(src)) < 0.8, lab[src], rng.integers(0, N_CLS, len(src)))
        on, ol = [np.zeros((0, 4))], [np.zeros(0, np.int64)]
        for j in range(c):  # boxes on the crowd region, inside it or sticking out
            m = int(rng.integers(1, 6))
            w = crw[j, 2:] - crw[j, :2]
            bwh = w * rng.uniform(0.1, 0.7, (m, 2))
            on.append(_xyxy(crw[j, :2] + rng.uniform(-0.2, 1.0, (m, 2)) * (w - bwh), bwh))
            # mostly the crowd's category, so the class-aware evaluation sees them on it
            ol.append(np.where(rng.uniform(size=m) < 0.8, lab[k + j], rng.integers(0, N_CLS, m)))
        on, ol = np.concatenate(on), np.concatenate(ol)
        nr = int(rng.integers(0, 6))
        rwh = rng.uniform(5, 150, (nr, 2))
        rnd = _xyxy(rng.uniform(0, SIZE - rwh), rwh)
        d = np.concatenate([jit, on, rnd])
        d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
        gtb.append(torch.tensor(g)), gtl.append(torch.tensor(lab))
        crowd.append(torch.tensor(is_crowd)), area.append(torch.tensor(a))
        dtb.append(torch.tensor(d)), dts.append(torch.tensor(rng.uniform(0, 1, len(d))))
        dtl.append(torch.tensor(np.concatenate([jl, ol, rng.integers(0, N_CLS, nr)]).astype(np.int64)))
    return gtb, gtl, crowd, area, dtb, dts, dtl


def _run_oracle(coco_cls, eval_cls, dataset, results, use_cats=True):
    """evaluate + accumulate of a COCOeval-compatible class on deep copies (loadRes edits its input)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        ev = eval_cls(gt, dt, "bbox")
        ev.params.useCats = int(use_cats)
        ev.evaluate()
        ev.accumulate()
    return ev


@pytest.fixture(scope="module", params=[3, 11])
def scene(request):
    gtb, gtl, crowd, area, dtb, dts, dtl = _crowd_scene(60, seed=request.param)
    dataset, results = to_coco_json(gtb, gtl, dtb, dts, dtl, N_CLS, image_size=(SIZE, SIZE), gt_iscrowd=crowd,
                                    gt_areas=area)
    oracles = {"pycocotools": _run_oracle(COCO, COCOeval, dataset, results),
               "faster_coco_eval": _run_oracle(FasterCOCO, COCOeval_faster, dataset, results)}
    return (gtb, gtl, crowd, area, dtb, dts, dtl), dataset, oracles


def test_json_carries_crowd_and_area(scene):
    (gtb, _, crowd, area, *_), dataset, _ = scene
    anns = dataset["annotations"]
    assert [a["iscrowd"] for a in anns] == [int(x) for c in crowd for x in c.tolist()]
    assert [a["area"] for a in anns] == [x for a in area for x in a.tolist()]
    n_crowd = sum(int(c.sum()) for c in crowd)
    assert n_crowd > 20 and len(anns) - n_crowd > 100


@pytest.mark.parametrize("oracle", ["pycocotools", "faster_coco_eval"])
def test_all_area_ranges_match_cocoeval_with_crowds_and_segment_areas(scene, oracle):
    (gtb, gtl, crowd, area, dtb, dts, dtl), _, oracles = scene
    ref = oracles[oracle]
    precision, recall = np.asarray(ref.eval["precision"]), np.asarray(ref.eval["recall"])
    assert precision.shape[3] == 4  # all, small, medium, large
    for a, rng in enumerate(ref.params.areaRng):
        ours = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=N_CLS, area_range=tuple(rng),
                                   gt_iscrowd=crowd, gt_areas=area)
        np.testing.assert_allclose(ours.precision, precision[:, :, :, a, :], rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours.recall, recall[:, :, a, :], rtol=0, atol=1e-12)
        # the crowds and the areas change the numbers: without them the comparison would fail
        if a == 0:
            plain = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=N_CLS, area_range=tuple(rng))
            no_crowd = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=N_CLS, gt_areas=area)
            assert np.abs(no_crowd.precision - precision[:, :, :, a, :]).max() > 0.05
            assert plain.ap() != pytest.approx(ours.ap(), abs=1e-3)
        else:
            box_area = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=N_CLS, area_range=tuple(rng),
                                           gt_iscrowd=crowd)
            assert np.abs(box_area.precision - precision[:, :, :, a, :]).max() > 0.05
    with contextlib.redirect_stdout(io.StringIO()):
        ref.summarize()
    stats = np.asarray(ref.stats)
    assert coco_map(dtb, dts, dtl, gtb, gtl, num_classes=N_CLS, gt_iscrowd=crowd, gt_areas=area) == pytest.approx(
        stats[0], abs=1e-12)
    assert detection_map(dtb, dts, dtl, gtb, gtl, num_classes=N_CLS, gt_iscrowd=crowd,
                         gt_areas=area) == pytest.approx(stats[1], abs=1e-12)


def test_class_agnostic_with_crowds_matches_cocoeval_usecats0(scene):
    (gtb, gtl, crowd, area, dtb, dts, dtl), dataset, _ = scene
    _, results = to_coco_json(gtb, gtl, dtb, dts, dtl, N_CLS, image_size=(SIZE, SIZE))
    ref = _run_oracle(COCO, COCOeval, dataset, results, use_cats=False)
    ours = evaluate_detections(dtb, dts, gtb, gt_iscrowd=crowd, gt_areas=area)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"][:, :, :, 0, :], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"][:, :, 0, :], rtol=0, atol=1e-12)
    rec = proposal_recall(dtb, dts, gtb, iou=0.5, num_proposals=(1, 10, 100), gt_iscrowd=crowd, gt_areas=area)
    assert [rec[n] for n in (1, 10, 100)] == pytest.approx(ref.eval["recall"][0, 0, 0, :].tolist(), abs=1e-12)
    ap = proposal_ap(dtb, dts, gtb, iou=0.5, max_dets=100, gt_iscrowd=crowd, gt_areas=area)
    assert ap == pytest.approx(ref.eval["precision"][0, :, 0, 0, -1].mean(), abs=1e-12)


def test_evaluator_passes_crowds_and_areas(scene):
    (gtb, gtl, crowd, area, dtb, dts, dtl), _, oracles = scene
    ev = DetectionEvaluator(num_classes=N_CLS)
    ev.update(dtb[:20], dts[:20], gtb[:20], dtl[:20], gtl[:20], gt_iscrowd=crowd[:20], gt_areas=area[:20])
    ev.update(dtb[20:], dts[20:], gtb[20:], dtl[20:], gtl[20:], gt_iscrowd=crowd[20:], gt_areas=area[20:])
    ref = oracles["pycocotools"].eval
    np.testing.assert_allclose(ev.compute().precision, ref["precision"][:, :, :, 0, :], rtol=0, atol=1e-12)
    small = ev.compute(area_range=(0, 32**2))
    np.testing.assert_allclose(small.precision, ref["precision"][:, :, :, 1, :], rtol=0, atol=1e-12)
    # images given without crowds/areas default to none / w·h, as if passed explicitly
    mixed = DetectionEvaluator(num_classes=N_CLS)
    mixed.update(dtb[:20], dts[:20], gtb[:20], dtl[:20], gtl[:20])
    mixed.update(dtb[20:], dts[20:], gtb[20:], dtl[20:], gtl[20:], gt_iscrowd=crowd[20:], gt_areas=area[20:])
    boxes_area = [(g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) for g in gtb[:20]]
    full = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=N_CLS, area_range=(0, 32**2),
                               gt_iscrowd=[torch.zeros(len(g), dtype=torch.bool) for g in gtb[:20]] + crowd[20:],
                               gt_areas=boxes_area + area[20:])
    np.testing.assert_array_equal(mixed.compute(area_range=(0, 32**2)).precision, full.precision)


def test_hand_case_detection_on_a_crowd_region_is_ignored():
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 100.0, 100.0]])]
    crowd = [torch.tensor([False, True])]
    hit = torch.tensor([[0.0, 0.0, 10.0, 9.0]])  # IoU 0.9 with the regular box
    on_crowd = torch.tensor([[50.0, 50.0, 70.0, 70.0], [60.0, 60.0, 90.0, 80.0]])  # inside the crowd region
    # both boxes on the crowd score above the true hit; box IoU with the region is only 400/3600 and 600/3600,
    # the crowd IoU (intersection / detection area) is 1
    dt = [torch.cat([hit, on_crowd])]
    sc = [torch.tensor([0.5, 0.9, 0.8])]
    alone = evaluate_detections([hit], [torch.tensor([0.5])], gt, iou_thresholds=[0.5], max_dets=[10],
                                gt_iscrowd=crowd)
    with_crowd = evaluate_detections(dt, sc, gt, iou_thresholds=[0.5], max_dets=[10], gt_iscrowd=crowd)
    assert alone.ap() == with_crowd.ap() == pytest.approx(1.0)  # ignored: AP as without them
    assert with_crowd.recall[0, 0, 0] == 1.0 and with_crowd.num_gt.tolist() == [1]
    # counted (the crowd dropped from the ground truth, as before): two false positives ahead of the hit
    counted = evaluate_detections(dt, sc, [gt[0][:1]], iou_thresholds=[0.5], max_dets=[10])
    assert counted.ap() == pytest.approx(1 / 3)
    # a crowd is no regular box: as one, both detections miss it (box IoU < 0.5) and the region is a miss
    as_regular = evaluate_detections(dt, sc, gt, iou_thresholds=[0.5], max_dets=[10])
    assert as_regular.recall[0, 0, 0] == 0.5
    # a detection on both a regular box (IoU 0.8) and a crowd region holding it (crowd IoU 1) takes the regular
    gt2 = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 100.0, 100.0]])]
    ev = evaluate_detections([torch.tensor([[0.0, 0.0, 10.0, 8.0]])], [torch.ones(1)], gt2, iou_thresholds=[0.5],
                             max_dets=[10], gt_iscrowd=[torch.tensor([False, True])])
    assert ev.recall[0, 0, 0] == 1.0 and ev.ap() == pytest.approx(1.0)


def test_annotation_area_moves_boxes_between_ranges():
    # a 40×40 box (w·h 1600: "medium") whose segment covers 900 px ("small")
    gt = [torch.tensor([[0.0, 0.0, 40.0, 40.0]])]
    dt, sc = [torch.tensor([[0.0, 0.0, 40.0, 40.0]])], [torch.ones(1)]
    small, medium = (0, 32**2), (32**2, 96**2)
    by_box = [evaluate_detections(dt, sc, gt, area_range=r).num_gt.tolist() for r in (small, medium)]
    by_seg = [evaluate_detections(dt, sc, gt, area_range=r, gt_areas=[torch.tensor([900.0])]).num_gt.tolist()
              for r in (small, medium)]
    assert by_box == [[0], [1]] and by_seg == [[1], [0]]


def test_crowd_and_area_errors():
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    dt, sc = [torch.zeros(0, 4)], [torch.zeros(0)]
    with pytest.raises(UserError, match="gt_iscrowd"):
        evaluate_detections(dt, sc, gt, gt_iscrowd=[torch.tensor([True, False])])
    with pytest.raises(UserError, match="gt_areas has 2 images"):
        evaluate_detections(dt, sc, gt, gt_areas=[torch.ones(1), torch.ones(1)])
    with pytest.raises(UserError, match="gt_areas"):
        evaluate_detections(dt, sc, gt, gt_areas=[torch.tensor([float("nan")])])

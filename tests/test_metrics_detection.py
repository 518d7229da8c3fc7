"""vislearn.metrics.detection against pycocotools' COCOeval on random and synthetic data."""

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

from test_metrics_detection_crowd import _crowd_scene
from vislearn.errors import UserError
from vislearn.metrics.detection import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    DetectionEvaluator,
    coco_map,
    detection_map,
    evaluate_coco,
    evaluate_detections,
    proposal_ap,
    proposal_recall,
    to_coco_json,
)


def _random_scene(n_img, n_cls, seed, max_gt=6, max_dt=30, size=100.0):
    """Ground truth plus jittered copies and random boxes as detections, some images empty."""
    rng = np.random.default_rng(seed)
    gtb, gtl, dtb, dts, dtl = [], [], [], [], []
    for i in range(n_img):
        k = int(rng.integers(0, max_gt + 1)) if i % 7 else 0
        xy = rng.uniform(0, size * 0.7, (k, 2))
        wh = rng.uniform(2, size * 0.4, (k, 2))
        g = np.concatenate([xy, xy + wh], 1)
        lab = rng.integers(0, n_cls, k)
        src = rng.integers(0, max(k, 1), int(rng.integers(0, max_dt)))
        jit = g[src] + rng.normal(0, 4, (len(src), 4)) if k else np.zeros((0, 4))
        nr = int(rng.integers(0, 8))
        rxy = rng.uniform(0, size * 0.8, (nr, 2))
        rnd = np.concatenate([rxy, rxy + rng.uniform(1, 40, (nr, 2))], 1)
        d = np.concatenate([jit, rnd])
        d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
        jl = lab[src] if k else np.zeros(0, np.int64)
        jl = np.where(rng.uniform(size=len(jl)) < 0.8, jl, rng.integers(0, n_cls, len(jl)))
        gtb.append(torch.tensor(g)), gtl.append(torch.tensor(lab))
        dtb.append(torch.tensor(d)), dts.append(torch.tensor(rng.uniform(0, 1, len(d))))
        dtl.append(torch.tensor(np.concatenate([jl, rng.integers(0, n_cls, nr)])))
    return gtb, gtl, dtb, dts, dtl


def _cocoeval(gtb, gtl, dtb, dts, dtl, n_cls, use_cats=True, iou_thrs=None, max_dets=None, area_rng=None):
    dataset, res = to_coco_json(gtb, gtl, dtb, dts, dtl, n_cls, image_size=(100, 100))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(res) if res else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.useCats = int(use_cats)
        if iou_thrs is not None:
            ev.params.iouThrs = np.array(iou_thrs)
        if max_dets is not None:
            ev.params.maxDets = list(max_dets)
        if area_rng is not None:
            ev.params.areaRng = [area_rng]
            ev.params.areaRngLbl = ["x"]
        ev.evaluate()
        ev.accumulate()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_matches_cocoeval(seed):
    gtb, gtl, dtb, dts, dtl = _random_scene(40, 4, seed)
    ev = _cocoeval(gtb, gtl, dtb, dts, dtl, 4)
    ours = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=4)
    # full precision/recall arrays (area "all" is COCOeval's area index 0)
    np.testing.assert_allclose(ours.precision, ev.eval["precision"][:, :, :, 0, :], atol=1e-9)
    np.testing.assert_allclose(ours.recall, ev.eval["recall"][:, :, 0, :], atol=1e-9)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    assert abs(coco_map(dtb, dts, dtl, gtb, gtl, num_classes=4) - ev.stats[0]) < 1e-3
    assert abs(detection_map(dtb, dts, dtl, gtb, gtl, num_classes=4) - ev.stats[1]) < 1e-3
    assert abs(ours.ar(max_det=100) - ev.stats[8]) < 1e-3


def test_area_range_matches_cocoeval():
    gtb, gtl, dtb, dts, dtl = _random_scene(30, 3, 5)
    rng = (0.0, 20.0**2)
    ev = _cocoeval(gtb, gtl, dtb, dts, dtl, 3, area_rng=list(rng))
    ours = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=3, area_range=rng)
    np.testing.assert_allclose(ours.precision, ev.eval["precision"][:, :, :, 0, :], atol=1e-9)
    np.testing.assert_allclose(ours.recall, ev.eval["recall"][:, :, 0, :], atol=1e-9)


@pytest.mark.parametrize("seed", [0, 3])
def test_proposal_recall_and_ap_match_cocoeval_usecats0(seed):
    gtb, gtl, dtb, dts, dtl = _random_scene(50, 3, seed, max_dt=60)
    ns = (1, 5, 10, 50)
    ev = _cocoeval(gtb, gtl, dtb, dts, dtl, 3, use_cats=False, iou_thrs=[0.5], max_dets=ns)
    rec = proposal_recall(dtb, dts, gtb, iou=0.5, num_proposals=ns)
    for m, n in enumerate(ns):
        assert abs(rec[n] - ev.eval["recall"][0, 0, 0, m]) < 1e-9
    ap = proposal_ap(dtb, dts, gtb, iou=0.5, max_dets=50)
    ref = ev.eval["precision"][0, :, 0, 0, -1]
    assert abs(ap - ref.mean()) < 1e-3
    # recall at 50 equals matched/total counted by hand: each image's top-50 detections by score, in
    # order, each taking the best-overlapping unmatched ground truth with IoU >= 0.5
    from torchvision.ops import box_iou

    matched = total = 0
    for g, d, s in zip(gtb, dtb, dts, strict=True):
        total += len(g)
        free = torch.ones(len(g), dtype=torch.bool)
        for i in torch.argsort(torch.as_tensor(s), descending=True, stable=True)[:50]:
            if len(g) == 0:
                break
            iou = box_iou(torch.as_tensor(d)[i:i + 1].float(), torch.as_tensor(g).float())[0]
            iou[~free] = -1
            j = int(iou.argmax())
            if iou[j] >= 0.5:
                free[j] = False
                matched += 1
    assert total > 0 and matched > 0
    assert rec[50] == pytest.approx(matched / total, abs=1e-12)


def test_hand_case_recall_and_greedy_order():
    # one gt, two dets overlapping it: only the higher-scored one matches; the other is a false positive
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    dt = [torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 10.0]])]
    sc = [torch.tensor([0.9, 0.8])]
    assert proposal_recall(dt, sc, gt, num_proposals=(1, 2)) == {1: 1.0, 2: 1.0}
    ev = evaluate_detections(dt, sc, gt, iou_thresholds=[0.5, 0.95], max_dets=[2])
    # IoU of the first det is 0.9: matched at 0.5 (AP 1), unmatched at 0.95 -> second det matches at rank 2:
    # precision 0.5 at recall 1
    assert ev.ap(iou=0.5) == pytest.approx(1.0)
    assert ev.ap(iou=0.95) == pytest.approx(0.5)


def test_empty_inputs_and_errors():
    gt = [torch.zeros(0, 4), torch.tensor([[0.0, 0, 5, 5]])]
    dt = [torch.zeros(0, 4), torch.zeros(0, 4)]
    sc = [torch.zeros(0), torch.zeros(0)]
    assert proposal_recall(dt, sc, gt, num_proposals=(10,)) == {10: 0.0}
    assert proposal_ap(dt, sc, [torch.zeros(0, 4)] * 2) == -1.0  # no ground truth at all
    with pytest.raises(UserError, match="negative size"):
        proposal_recall([torch.tensor([[5.0, 5, 1, 1]])], [torch.ones(1)], [torch.zeros(0, 4)])
    with pytest.raises(UserError, match="scores"):
        proposal_recall([torch.ones(2, 4)], [torch.ones(3)], [torch.zeros(0, 4)])
    with pytest.raises(UserError, match="images"):
        proposal_recall([torch.ones(2, 4)], [torch.ones(2)], [torch.zeros(0, 4)] * 2)


def test_evaluator_accumulates():
    gtb, gtl, dtb, dts, dtl = _random_scene(12, 2, 7)
    ev = DetectionEvaluator(num_classes=2)
    ev.update(dtb[:5], dts[:5], gtb[:5], dtl[:5], gtl[:5])
    ev.update(dtb[5:], dts[5:], gtb[5:], dtl[5:], gtl[5:])
    a = ev.compute().ap()
    b = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=2).ap()
    assert a == b
    assert len(COCO_IOU_THRESHOLDS) == 10


def test_class_agnostic_evaluator_and_per_category_ap_match_cocoeval():
    gtb, gtl, dtb, dts, dtl = _random_scene(30, 3, 11)
    # class-agnostic: COCOeval with useCats=0, every label ignored
    ev = DetectionEvaluator(class_agnostic=True)
    ev.update(dtb[:10], dts[:10], gtb[:10])
    ev.update(dtb[10:], dts[10:], gtb[10:])
    ref = _cocoeval(gtb, gtl, dtb, dts, dtl, 3, use_cats=False)
    np.testing.assert_allclose(ev.compute().precision, ref.eval["precision"][:, :, :, 0, :], atol=1e-9)
    # per-category AP at IoU 0.5 and 100 detections: COCOeval's precision curve of each category, averaged
    ours = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=3).per_category_ap(iou=0.5, max_det=100)
    coco = _cocoeval(gtb, gtl, dtb, dts, dtl, 3)
    p = coco.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all areas, the last maxDets (100)
    assert sorted(ours) == [0, 1, 2]
    for k in range(3):
        assert ours[k] == pytest.approx(float(p[:, k].mean()), abs=1e-9), k
    assert len({round(v, 6) for v in ours.values()}) == 3  # the categories are told apart


STATS = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR@1", "AR@10", "AR@100", "AR_small",
         "AR_medium", "AR_large"]


@pytest.mark.parametrize("seed", [3, 4])
def test_evaluate_coco_equals_pycocotools_and_faster_coco_eval_with_crowds_all_areas(seed):
    """evaluate + accumulate + summarize over COCOeval's four area ranges in one pass, with crowd regions and
    segment areas: pycocotools' arrays exactly, faster-coco-eval's to its C++ rounding, the twelve stats."""
    gtb, gtl, crowd, area, dtb, dts, dtl = _crowd_scene(60, seed)
    dataset, results = to_coco_json(gtb, gtl, dtb, dts, dtl, 3, image_size=(640, 640), gt_iscrowd=crowd,
                                    gt_areas=area)
    ours = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=3, gt_iscrowd=crowd, gt_areas=area)
    assert list(ours.areas) == ["all", "small", "medium", "large"]
    precision = np.stack([e.precision for e in ours.areas.values()], 3)  # COCOeval's T×R×K×A×M
    recall = np.stack([e.recall for e in ours.areas.values()], 2)
    stats = ours.stats()
    assert list(stats) == STATS
    for coco_cls, eval_cls in ((COCO, COCOeval), (FasterCOCO, COCOeval_faster)):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = coco_cls()
            gt.dataset = copy.deepcopy(dataset)
            gt.createIndex()
            ev = eval_cls(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ref_p, ref_r = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])
        if eval_cls is COCOeval:
            np.testing.assert_array_equal(precision, ref_p)
            np.testing.assert_array_equal(recall, ref_r)
        np.testing.assert_allclose(precision, ref_p, rtol=0, atol=1e-12)
        np.testing.assert_allclose(recall, ref_r, rtol=0, atol=1e-12)
        assert list(stats.values()) == pytest.approx(np.asarray(ev.stats[:12]).tolist(), abs=1e-12)
    # a real case: every size has ground truth, the sizes differ, nothing is -1
    assert (recall > -1).all() and (recall[0, :, :, -1] > 0).all()
    assert len({round(stats[f"AP_{s}"], 6) for s in ("small", "medium", "large")}) == 3
    # the one pass equals one evaluate_detections call per range
    for name, rng in COCO_AREA_RANGES.items():
        one = evaluate_detections(dtb, dts, gtb, dtl, gtl, num_classes=3, area_range=rng, gt_iscrowd=crowd,
                                  gt_areas=area)
        np.testing.assert_array_equal(one.precision, ours.areas[name].precision)
        np.testing.assert_array_equal(one.num_gt, ours.areas[name].num_gt)
    # the evaluator passes everything on
    acc = DetectionEvaluator(num_classes=3)
    acc.update(dtb[:25], dts[:25], gtb[:25], dtl[:25], gtl[:25], gt_iscrowd=crowd[:25], gt_areas=area[:25])
    acc.update(dtb[25:], dts[25:], gtb[25:], dtl[25:], gtl[25:], gt_iscrowd=crowd[25:], gt_areas=area[25:])
    assert acc.compute_coco().stats() == stats


def test_evaluate_coco_custom_ranges_and_thresholds():
    gtb, gtl, dtb, dts, dtl = _random_scene(30, 3, 8)
    ev = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=3, iou_thresholds=[0.5, 0.6], max_dets=[5, 20],
                       area_ranges={"all": (0, 1e10), "tiny": (0, 10.0**2)})
    ref = _cocoeval(gtb, gtl, dtb, dts, dtl, 3, iou_thrs=[0.5, 0.6], max_dets=[5, 20], area_rng=[0, 10.0**2])
    np.testing.assert_array_equal(ev.areas["tiny"].precision, ref.eval["precision"][:, :, :, 0, :])
    stats = ev.stats()  # no 0.75 threshold: no AP75; sizes not evaluated: -1
    assert "AP75" not in stats and stats["AP50"] == ev.areas["all"].ap(iou=0.5) and stats["AP_small"] == -1.0
    assert list(stats)[-5:] == ["AR@5", "AR@20", "AR_small", "AR_medium", "AR_large"]
    with pytest.raises(UserError, match="area_ranges"):
        evaluate_coco(dtb, dts, gtb, dtl, gtl, area_ranges={})


def test_equal_iou_goes_to_the_later_box_as_cocoeval():
    # the first detection has IoU 100/120 with both boxes: COCOeval gives it the later one (B), which leaves A,
    # at IoU 0.92, to the second detection; taking A first would leave it only B at 0.67 < 0.7
    gt = [torch.tensor([[0.0, 0.0, 10.0, 12.0], [0.0, 0.0, 12.0, 10.0]])]
    dt = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 13.0]])]
    sc, lab = [torch.tensor([0.9, 0.8])], [torch.tensor([0, 0])]
    ev = evaluate_detections(dt, sc, gt, lab, lab, iou_thresholds=[0.5, 0.7], max_dets=[10])
    ref = _cocoeval(gt, lab, dt, sc, lab, 1, iou_thrs=[0.5, 0.7], max_dets=[10])
    np.testing.assert_array_equal(ev.recall, ref.eval["recall"][:, :, 0, :])
    assert ev.recall[:, 0, 0].tolist() == [1.0, 1.0]

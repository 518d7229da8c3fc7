"""COCO-style detection and proposal metrics, vectorised, matching pycocotools' ``COCOeval`` exactly.

The protocol is COCOeval's (``pycocotools/cocoeval.py``), which the tests use as the oracle:

* per image (and per category unless class-agnostic), detections are sorted by score (stable) and
  cut to the largest ``max_dets``; each detection in turn takes the still-unmatched ground truth
  with the highest IoU ``>= t`` (ties: the later box; ground truth outside the area range is
  "ignored" and taken only when no regular box qualifies; a detection matched to an ignored box,
  or unmatched and outside the area range, is ignored);
* crowd regions (``iscrowd``, COCO's ignore regions) are ignored ground truth that is never used up:
  any number of detections can match one, and their IoU is ``intersection / area(detection)``
  (pycocotools' ``maskUtils.iou`` with the crowd flag), so detections lying on a crowd are ignored
  instead of counted as false positives; crowds never count as ground truth to recall;
* the area range tests each ground truth's annotation ``area`` (COCO's is the segment's area, not the
  box's; default ``w·h``) and each unmatched detection's box ``w·h``;
* per category and ``max_dets``: the first ``max_dets`` detections of every image are pooled,
  sorted by score (stable, image order breaks ties), precision is made monotone and read at the 101
  recall points ``0, 0.01, …, 1`` (interpolated AP); recall is matched/ground-truth count;
* AP is the mean of precision over IoU thresholds, recall points and categories that have ground
  truth; categories without ground truth are left out (COCOeval's ``-1``).

What differs from pycocotools is only how it is computed (pycocotools loops in Python over images,
categories, area ranges, thresholds, detections and boxes): every image, category, threshold and area
range at once, in :mod:`vislearn.metrics.detection_match`, with the same floating-point operations
where they decide a comparison, so the precision/recall arrays are equal to pycocotools' bit for bit in
the tests. :func:`evaluate_coco` evaluates COCOeval's four area ranges in one pass (``.stats()`` is
``summarize``); :func:`evaluate_detections` one range. IoU is the COCO box IoU (``w·h`` areas, no +1).

Inputs are per-image lists: boxes ``K×4`` xyxy (tensors or arrays), scores ``K``, labels ``K``; for
the ground truth optionally ``gt_iscrowd`` (bool ``K``) and ``gt_areas`` (float ``K``), where a ``None``
entry (or list) means no crowds / ``w·h`` areas for that image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vislearn.errors import UserError
from vislearn.metrics.detection_match import accumulate, candidates, greedy_match, xywh

__all__ = ["COCO_AREA_RANGES", "COCO_IOU_THRESHOLDS", "CocoEvaluation", "DetectionEvaluation", "DetectionEvaluator",
           "coco_map", "detection_map", "evaluate_coco", "evaluate_detections", "proposal_ap", "proposal_recall",
           "to_coco_json"]

# COCOeval's defaults: IoU 0.50:0.05:0.95 and 101 recall points (np.linspace as pycocotools builds them).
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
# COCOeval's areaRng / areaRngLbl (the segment's area for ground truth, w·h for detections)
COCO_AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
                    "large": (96.0**2, 1e5**2)}


@dataclass
class DetectionEvaluation:
    """COCOeval's ``precision`` (``T×R×K×M``) and ``recall`` (``T×K×M``) arrays for one area range.

    ``-1`` marks a category without ground truth. :meth:`ap` and :meth:`ar` are COCOeval's
    ``summarize`` for the area range evaluated.
    """

    precision: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    max_dets: tuple[int, ...]
    categories: np.ndarray
    num_gt: np.ndarray  # per category, non-ignored ground truth

    def _sel(self, iou: float | None, max_det: int | None) -> tuple[np.ndarray, int]:
        m = len(self.max_dets) - 1 if max_det is None else self.max_dets.index(max_det)
        if iou is None:
            return np.arange(len(self.iou_thresholds)), m
        t = np.where(np.abs(self.iou_thresholds - iou) < 1e-9)[0]
        if len(t) == 0:
            raise UserError(f"IoU {iou} was not evaluated; thresholds: {self.iou_thresholds.tolist()}")
        return t, m

    def ap(self, iou: float | None = None, max_det: int | None = None) -> float:
        """Mean precision over IoU thresholds (or the one given), recall points and categories."""
        t, m = self._sel(iou, max_det)
        s = self.precision[t, :, :, m]
        s = s[s > -1]
        return float(s.mean()) if s.size else -1.0

    def ar(self, iou: float | None = None, max_det: int | None = None) -> float:
        """Mean recall over IoU thresholds (or the one given) and categories."""
        t, m = self._sel(iou, max_det)
        s = self.recall[t, :, m]
        s = s[s > -1]
        return float(s.mean()) if s.size else -1.0

    def per_category_ap(self, iou: float | None = None, max_det: int | None = None) -> dict[int, float]:
        t, m = self._sel(iou, max_det)
        out = {}
        for k, c in enumerate(self.categories):
            s = self.precision[t, :, k, m]
            out[int(c)] = float(s.mean()) if (s > -1).all() else -1.0
        return out


def _as_np(x, shape_last: int | None, where: str, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if shape_last is not None:
        if a.size == 0:
            return a.reshape(0, shape_last)
        if a.ndim != 2 or a.shape[1] != shape_last:
            raise UserError(f"{where}: expected K×{shape_last}, got shape {a.shape}")
    else:
        a = a.reshape(-1)
    return a


def _check_lists(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, gt_iscrowd=None, gt_areas=None) -> None:
    n = len(gt_boxes)
    for name, lst in (("dt_boxes", dt_boxes), ("dt_scores", dt_scores), ("dt_labels", dt_labels),
                      ("gt_labels", gt_labels), ("gt_iscrowd", gt_iscrowd), ("gt_areas", gt_areas)):
        if lst is not None and len(lst) != n:
            raise UserError(f"{name} has {len(lst)} images but gt_boxes has {n}")


def _per_gt(values, i: int, n: int, name: str, dtype) -> np.ndarray | None:
    """Image ``i``'s entry of an optional per-ground-truth list (``None``: not given)."""
    if values is None or values[i] is None:
        return None
    a = _as_np(values[i], None, f"{name}[{i}]", dtype)
    if len(a) != n:
        raise UserError(f"image {i}: {n} ground-truth boxes but {len(a)} {name} values")
    return a


_TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.int64): torch.int64, np.dtype(bool): torch.bool}


def _cat(lst: Sequence, name: str, last: int | None, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-image tensors or arrays → ``(flat array, per-image lengths)``, shapes validated."""
    to = _TORCH_DTYPES[np.dtype(dtype)]
    if lst and all(isinstance(x, torch.Tensor) for x in lst):  # fast path: one torch.cat, which checks the shapes
        with torch.no_grad():
            parts = lst if last is not None else [x if x.ndim == 1 else x.reshape(-1) for x in lst]
            try:
                flat = torch.cat(parts)
            except RuntimeError:  # shapes or devices differ: the loop below says which
                flat = None
            if flat is not None and flat.ndim == (1 if last is None else 2) and (last is None or flat.shape[1] == last):
                lens = np.fromiter((len(p) for p in parts), np.int64, len(parts))
                if lens.sum() == len(flat) and not flat.is_complex():
                    return flat.to(to).cpu().numpy(), lens
    parts = []
    for i, x in enumerate(lst):
        # checked before converting: np.asarray(x, float) would drop the imaginary part with only a warning
        if x.is_complex() if isinstance(x, torch.Tensor) else np.iscomplexobj(x):
            raise UserError(f"{name}[{i}]: complex values (expected real numbers)")
        t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x, dtype=dtype))
        if last is None:
            t = t.reshape(-1)
        elif t.numel() == 0:
            t = t.reshape(0, last)
        elif t.ndim != 2 or t.shape[1] != last:
            raise UserError(f"{name}[{i}]: expected K×{last}, got shape {tuple(t.shape)}")
        parts.append(t)
    lens = np.fromiter((len(t) for t in parts), np.int64, len(parts))
    if not parts:
        return np.zeros((0, last) if last else (0,), dtype), lens
    return torch.cat([t.to(to) for t in parts]).numpy(), lens


def _same_counts(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str) -> None:
    """Per-image counts ``a`` and ``b`` must agree; the error names the first image where they do not."""
    bad = np.flatnonzero(a != b)
    if bad.size:
        i = int(bad[0])
        raise UserError(f"image {i}: {a[i]} {what_a} but {b[i]} {what_b}")


def _flatten(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, gt_iscrowd=None, gt_areas=None):
    """Concatenate per-image lists into flat arrays with image indices; validate shapes and boxes.

    Returns ``(dt boxes, scores, labels, image, gt boxes, labels, image, crowd, area)``; the labels are
    ``None`` when not given, crowd ``None`` when no image has a crowd region, area ``None`` when no
    image gives areas (``w·h`` fills the images without).
    """
    n = len(gt_boxes)
    db, nd = _cat(dt_boxes, "dt_boxes", 4, np.float64)
    ds, ns = _cat(dt_scores, "dt_scores", None, np.float64)
    _same_counts(nd, ns, "detection boxes", "scores")
    gb, ng = _cat(gt_boxes, "gt_boxes", 4, np.float64)
    dl = gl = None
    if dt_labels is not None:
        dl, nl = _cat(dt_labels, "dt_labels", None, np.int64)
        _same_counts(nd, nl, "detection boxes", "labels")
    if gt_labels is not None:
        gl, nl = _cat(gt_labels, "gt_labels", None, np.int64)
        _same_counts(ng, nl, "ground-truth boxes", "labels")
    for what, b in (("detection", db), ("ground-truth", gb)):
        if not np.isfinite(b).all():
            raise UserError(f"{what} boxes contain NaN or infinite coordinates")
        if len(b) and ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
            raise UserError(f"{what} boxes with negative size (x2 < x1 or y2 < y1): boxes must be xyxy")
    if not np.isfinite(ds).all():
        raise UserError("detection scores contain NaN or infinite values")
    g_start = np.cumsum(ng) - ng
    crowd = _per_gt_flat(gt_iscrowd, ng, "gt_iscrowd", bool, lambda i: np.zeros(ng[i], bool))
    if crowd is not None and not crowd.any():
        crowd = None
    area = _per_gt_flat(gt_areas, ng, "gt_areas", np.float64, lambda i: _box_area(gb[g_start[i]:g_start[i] + ng[i]]))
    if area is not None and (not np.isfinite(area).all() or (area < 0).any()):
        raise UserError("gt_areas must be finite and non-negative")
    return db, ds, dl, np.repeat(np.arange(n), nd), gb, gl, np.repeat(np.arange(n), ng), crowd, area


def _per_gt_flat(values, ng: np.ndarray, name: str, dtype, default) -> np.ndarray | None:
    """An optional per-ground-truth list, flat (``None`` entries filled by ``default(i)``; ``None``: not given)."""
    if values is None or all(v is None for v in values):
        return None
    flat, lens = _cat([default(i) if v is None else v for i, v in enumerate(values)], name, None, dtype)
    _same_counts(ng, lens, "ground-truth boxes", f"{name} values")
    return flat


def _box_area(b: np.ndarray) -> np.ndarray:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _argsort_descending(x: np.ndarray) -> np.ndarray:
    """Stable descending argsort (ties keep input order); a quicksort when there are no ties, which is the same."""
    o = np.argsort(-x)
    xs = x[o]
    return np.argsort(-x, kind="stable") if (xs[1:] == xs[:-1]).any() else o


def _check_params(iou_thresholds, max_dets) -> tuple[np.ndarray, tuple[int, ...]]:
    max_dets = tuple(sorted(int(m) for m in max_dets))
    if not max_dets or max_dets[0] < 1:
        raise UserError(f"max_dets must be positive integers, got {max_dets}")
    thr = np.asarray(iou_thresholds, np.float64).reshape(-1)
    if thr.size == 0 or ((thr < 0) | (thr > 1)).any():
        raise UserError(f"IoU thresholds must be in [0, 1], got {thr.tolist()}")
    return thr, max_dets


def _evaluate(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, num_classes, iou_thresholds, max_dets,
              area_ranges: Sequence[tuple[float, float]], gt_iscrowd, gt_areas) -> list[DetectionEvaluation]:
    """:func:`evaluate_detections` for several area ranges at once (one matching pass, one accumulation)."""
    use_cats = dt_labels is not None or gt_labels is not None
    if use_cats and (dt_labels is None or gt_labels is None):
        raise UserError("pass both dt_labels and gt_labels (or neither, for class-agnostic evaluation)")
    _check_lists(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, gt_iscrowd, gt_areas)
    thr, max_dets = _check_params(iou_thresholds, max_dets)
    ranges = np.asarray([(float(lo), float(hi)) for lo, hi in area_ranges], np.float64).reshape(-1, 2)
    db, ds, dl, di, gb, gl, gi, gc, g_area = _flatten(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels,
                                                      gt_iscrowd, gt_areas)
    n_img = len(gt_boxes)
    if use_cats:
        cats = np.arange(num_classes) if num_classes is not None else np.unique(gl)
    else:
        cats = np.array([-1])
        dl, gl = np.full(len(db), -1, np.int64), np.full(len(gb), -1, np.int64)
    K = len(cats)

    def cat_index(labels):  # −1: not evaluated, dropped as COCOeval drops detections of unknown categories
        pos = np.searchsorted(cats, labels)
        ok = (pos < K) & (cats[np.minimum(pos, K - 1)] == labels) if K else np.zeros(len(labels), bool)
        return np.where(ok, pos, -1)

    dk, gk = cat_index(dl), cat_index(gl)
    gc = np.zeros(len(gb), bool) if gc is None else gc
    g_area = _box_area(gb) if g_area is None else g_area
    # rank: place within the (category, image) group by score (stable: input order on ties), cut at max_dets;
    # the detections are then kept in COCOeval's pooled order: category, score, image, rank
    d_group = dk * n_img + di
    by_score = _argsort_descending(ds)
    by_score = by_score[dk[by_score] >= 0]
    by_group = by_score[np.argsort(d_group[by_score], kind="stable")]
    sorted_group = d_group[by_group]
    d_rank = np.zeros(len(ds), np.int64)
    d_rank[by_group] = np.arange(len(by_group)) - np.searchsorted(sorted_group, sorted_group, side="left")
    pooled = by_score[np.argsort(dk[by_score], kind="stable")]
    pooled = pooled[d_rank[pooled] < max_dets[-1]]
    db, ds, dk, di, d_group, d_rank = db[pooled], ds[pooled], dk[pooled], di[pooled], d_group[pooled], d_rank[pooled]
    g_order = np.flatnonzero(gk >= 0)
    g_group = gk[g_order] * n_img + gi[g_order]
    g_order = g_order[np.argsort(g_group, kind="stable")]
    gb, gk, gc, g_area = gb[g_order], gk[g_order], gc[g_order], g_area[g_order]
    g_group = gk * n_img + gi[g_order]
    lo, hi = ranges[:, :1], ranges[:, 1:]
    g_ign = (g_area[None] < lo) | (g_area[None] > hi) | gc[None]  # A×G
    d_area = _box_area(db)[None]
    thr_c = np.minimum(thr, 1 - 1e-10)
    pd, pg, piou = candidates(xywh(db), d_group, xywh(gb), g_group, gc, K * n_img, float(thr_c.min()))
    dtm, matched_ignored = greedy_match(pd, pg, piou, d_group, d_rank, gc, g_ign, thr_c, len(db))
    npig = np.stack([np.bincount(gk[~ign], minlength=K) for ign in g_ign]) if len(ranges) else np.zeros((0, K))
    precision, recall = accumulate(dtm, matched_ignored, (d_area < lo) | (d_area > hi), dk, d_rank, npig, max_dets, K)
    return [DetectionEvaluation(precision[:, :, :, a], recall[:, :, a], thr, max_dets, cats, npig[a])
            for a in range(len(ranges))]


def evaluate_detections(dt_boxes: Sequence, dt_scores: Sequence, gt_boxes: Sequence,
                        dt_labels: Sequence | None = None, gt_labels: Sequence | None = None, *,
                        num_classes: int | None = None, iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
                        max_dets: Sequence[int] = (1, 10, 100), area_range: tuple[float, float] | None = None,
                        gt_iscrowd: Sequence | None = None, gt_areas: Sequence | None = None) -> DetectionEvaluation:
    """COCOeval's ``evaluate()`` + ``accumulate()`` for boxes, vectorised, for one area range.

    Args:
        dt_boxes, dt_scores: per-image detections (``K×4`` xyxy, ``K``).
        gt_boxes: per-image ground truth ``K×4`` xyxy (``K`` may be 0).
        dt_labels, gt_labels: per-image category ids; both ``None`` → class-agnostic
            (COCOeval ``useCats=0``).
        num_classes: categories ``0..C-1`` (default: the labels present in the ground truth; the
            result is the same since categories without ground truth are skipped).
        iou_thresholds: COCO's ``0.5:0.05:0.95`` by default.
        max_dets: detections per image considered (COCOeval ``maxDets``; sorted ascending).
        area_range: ``(lo, hi)`` on ground-truth area (COCO "small" is ``(0, 32²)``, "medium"
            ``(32², 96²)``, "large" ``(96², 1e10)``); default all. :func:`evaluate_coco` evaluates
            several at once (COCOeval's four), faster than one call each.
        gt_iscrowd: per-image bool ``K``: crowd regions (COCO ``iscrowd``), ignored ground truth on
            which detections are ignored; default none.
        gt_areas: per-image ground-truth areas ``K`` for ``area_range`` (COCO's annotation ``area``);
            default ``w·h`` of the box.
    """
    rng = COCO_AREA_RANGES["all"] if area_range is None else area_range
    return _evaluate(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, num_classes, iou_thresholds, max_dets,
                     [rng], gt_iscrowd, gt_areas)[0]


@dataclass
class CocoEvaluation:
    """One :class:`DetectionEvaluation` per area range (COCOeval's ``areaRng`` axis); :meth:`stats` is
    COCOeval's ``summarize``."""

    areas: dict[str, DetectionEvaluation]

    def stats(self) -> dict[str, float]:
        """COCOeval's ``stats`` by name, in its order: AP, AP50, AP75, AP_small/medium/large (at the largest
        ``max_dets``), AR@m for each ``max_dets`` m, AR_small/medium/large. AP50/AP75 appear when those
        IoUs were evaluated; an area range not evaluated (or without ground truth) gives ``-1``."""
        ev = self.areas["all"] if "all" in self.areas else next(iter(self.areas.values()))
        out = {"AP": ev.ap()}
        for name, iou in (("AP50", 0.5), ("AP75", 0.75)):
            if np.isclose(ev.iou_thresholds, iou, rtol=0, atol=1e-9).any():
                out[name] = ev.ap(iou=iou)
        sized = ("small", "medium", "large")
        out.update({f"AP_{s}": self.areas[s].ap() if s in self.areas else -1.0 for s in sized})
        out.update({f"AR@{m}": ev.ar(max_det=m) for m in ev.max_dets})
        out.update({f"AR_{s}": self.areas[s].ar() if s in self.areas else -1.0 for s in sized})
        return out


def evaluate_coco(dt_boxes: Sequence, dt_scores: Sequence, gt_boxes: Sequence, dt_labels: Sequence | None = None,
                  gt_labels: Sequence | None = None, *, num_classes: int | None = None,
                  iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS, max_dets: Sequence[int] = (1, 10, 100),
                  area_ranges: dict[str, tuple[float, float]] | None = None, gt_iscrowd: Sequence | None = None,
                  gt_areas: Sequence | None = None) -> CocoEvaluation:
    """COCOeval's ``evaluate()`` + ``accumulate()`` over all its area ranges (default
    :data:`COCO_AREA_RANGES`: all, small, medium, large) in one pass; ``.stats()`` is ``summarize()``.

    Arguments as :func:`evaluate_detections`. Example::

        stats = evaluate_coco(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels).stats()
        stats["AP"], stats["AP50"], stats["AR@100"]
    """
    area_ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
    if not area_ranges:
        raise UserError("area_ranges is empty")
    evs = _evaluate(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, num_classes, iou_thresholds, max_dets,
                    list(area_ranges.values()), gt_iscrowd, gt_areas)
    return CocoEvaluation(dict(zip(area_ranges, evs, strict=True)))


def proposal_recall(boxes: Sequence, scores: Sequence, gt_boxes: Sequence, iou: float = 0.5,
                    num_proposals: Sequence[int] = (10, 50, 100, 1000), *, gt_iscrowd: Sequence | None = None,
                    gt_areas: Sequence | None = None) -> dict[int, float]:
    """Class-agnostic recall of the top-``n`` proposals per image at IoU ``iou`` → ``{n: recall}``.

    Recall = ground-truth boxes matched (greedily by score, as COCOeval with ``useCats=0``,
    ``iouThrs=[iou]``, ``maxDets=num_proposals``) / all ground-truth boxes that are not crowd regions.
    """
    ev = evaluate_detections(boxes, scores, gt_boxes, iou_thresholds=[iou], max_dets=num_proposals,
                             gt_iscrowd=gt_iscrowd, gt_areas=gt_areas)
    return {int(n): float(ev.recall[0, 0, m]) for m, n in enumerate(ev.max_dets)}


def proposal_ap(boxes: Sequence, scores: Sequence, gt_boxes: Sequence, iou: float | None = 0.5,
                max_dets: int = 100, *, gt_iscrowd: Sequence | None = None, gt_areas: Sequence | None = None) -> float:
    """Class-agnostic AP of ranked proposals (COCOeval ``useCats=0``) at IoU ``iou``
    (``None``: averaged over 0.5:0.95), with ``max_dets`` proposals per image."""
    thr = COCO_IOU_THRESHOLDS if iou is None else [iou]
    return evaluate_detections(boxes, scores, gt_boxes, iou_thresholds=thr, max_dets=[max_dets],
                               gt_iscrowd=gt_iscrowd, gt_areas=gt_areas).ap()


def detection_map(dt_boxes: Sequence, dt_scores: Sequence, dt_labels: Sequence, gt_boxes: Sequence,
                  gt_labels: Sequence, iou: float = 0.5, max_dets: int = 100, num_classes: int | None = None, *,
                  gt_iscrowd: Sequence | None = None, gt_areas: Sequence | None = None) -> float:
    """Mean over categories of AP at one IoU (``0.5``: the PASCAL/ILSVRC-style mAP@0.5, COCO's AP50)."""
    return evaluate_detections(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, num_classes=num_classes,
                               iou_thresholds=[iou], max_dets=[max_dets], gt_iscrowd=gt_iscrowd,
                               gt_areas=gt_areas).ap()


def coco_map(dt_boxes: Sequence, dt_scores: Sequence, dt_labels: Sequence, gt_boxes: Sequence,
             gt_labels: Sequence, max_dets: int = 100, num_classes: int | None = None, *,
             gt_iscrowd: Sequence | None = None, gt_areas: Sequence | None = None) -> float:
    """COCO mAP@[.5:.95] (COCOeval's first ``stats`` entry)."""
    return evaluate_detections(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, num_classes=num_classes,
                               max_dets=[max_dets], gt_iscrowd=gt_iscrowd, gt_areas=gt_areas).ap()


def to_coco_json(gt_boxes: Sequence, gt_labels: Sequence, dt_boxes: Sequence, dt_scores: Sequence,
                 dt_labels: Sequence, num_classes: int, image_size: tuple[int, int] = (640, 640), *,
                 gt_iscrowd: Sequence | None = None, gt_areas: Sequence | None = None) -> tuple[dict, list[dict]]:
    """Per-image xyxy lists in COCO's json layout: ``(ground-truth dataset, detection results)``.

    Image ``i`` gets id ``i + 1`` and label ``c`` category id ``c + 1``; boxes become ``[x, y, w, h]``
    with ``iscrowd`` from ``gt_iscrowd`` (default 0) and ``area`` from ``gt_areas`` (default ``w·h``).
    The dataset can be given to ``pycocotools.coco.COCO`` (``dataset`` + ``createIndex``) and the
    results to its ``loadRes``, to check our evaluator against the official one.
    """
    _check_lists(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, gt_iscrowd, gt_areas)
    height, width = image_size
    images = [{"id": i + 1, "width": width, "height": height} for i in range(len(gt_boxes))]
    anns, results = [], []
    gts = [(_as_np(b, 4, f"gt_boxes[{i}]").tolist(), _as_np(c, None, f"gt_labels[{i}]", np.int64).tolist())
           for i, (b, c) in enumerate(zip(gt_boxes, gt_labels, strict=True))]
    dts = [(_as_np(b, 4, f"dt_boxes[{i}]").tolist(), _as_np(s, None, f"dt_scores[{i}]").tolist(),
            _as_np(c, None, f"dt_labels[{i}]", np.int64).tolist())
           for i, (b, s, c) in enumerate(zip(dt_boxes, dt_scores, dt_labels, strict=True))]
    _same_counts(*(np.array([len(x[k]) for x in gts], np.int64) for k in (0, 1)), "ground-truth boxes", "labels")
    nd, ns, nl = (np.array([len(x[k]) for x in dts], np.int64) for k in (0, 1, 2))
    _same_counts(nd, ns, "detection boxes", "scores")
    _same_counts(nd, nl, "detection boxes", "labels")
    for i, (boxes, labels) in enumerate(gts):
        crowd = _per_gt(gt_iscrowd, i, len(boxes), "gt_iscrowd", bool)
        areas = _per_gt(gt_areas, i, len(boxes), "gt_areas", np.float64)
        for n, (b, c) in enumerate(zip(boxes, labels, strict=True)):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "iscrowd": int(crowd[n]) if crowd is not None else 0,
                         "bbox": [b[0], b[1], w, h], "area": float(areas[n]) if areas is not None else w * h})
    for i, (boxes, scores, labels) in enumerate(dts):
        for b, sc, c in zip(boxes, scores, labels, strict=True):
            results.append({"image_id": i + 1, "category_id": int(c) + 1,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": sc})
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": categories}, results


class DetectionEvaluator:
    """Accumulates per-image detections and ground truth; :meth:`compute` runs :func:`evaluate_detections`.

    Example::

        ev = DetectionEvaluator(class_agnostic=True)
        for images, targets in loader:
            boxes, scores = proposals(images)
            ev.update(boxes, scores, [t["boxes"] for t in targets])
        result = ev.compute(iou_thresholds=[0.5], max_dets=(10, 100))
    """

    def __init__(self, class_agnostic: bool = False, num_classes: int | None = None) -> None:
        self.class_agnostic, self.num_classes = class_agnostic, num_classes
        self.dt_boxes: list = []
        self.dt_scores: list = []
        self.dt_labels: list = []
        self.gt_boxes: list = []
        self.gt_labels: list = []
        self.gt_iscrowd: list = []  # per image, None when not given
        self.gt_areas: list = []

    def update(self, dt_boxes: Sequence, dt_scores: Sequence, gt_boxes: Sequence,
               dt_labels: Sequence | None = None, gt_labels: Sequence | None = None, *,
               gt_iscrowd: Sequence | None = None, gt_areas: Sequence | None = None) -> None:
        """Add a batch of images; ``gt_iscrowd``/``gt_areas`` as in :func:`evaluate_detections`."""
        if not self.class_agnostic and (dt_labels is None or gt_labels is None):
            raise UserError("a class-aware DetectionEvaluator needs dt_labels and gt_labels")
        _check_lists(dt_boxes, dt_scores, gt_boxes, dt_labels, gt_labels, gt_iscrowd, gt_areas)
        for given, store in ((gt_iscrowd, self.gt_iscrowd), (gt_areas, self.gt_areas)):
            store += [None if given is None or x is None else torch.as_tensor(x).detach().cpu()
                      for x in (given if given is not None else [None] * len(gt_boxes))]
        self.dt_boxes += [torch.as_tensor(b).detach().cpu() for b in dt_boxes]
        self.dt_scores += [torch.as_tensor(s).detach().cpu() for s in dt_scores]
        self.gt_boxes += [torch.as_tensor(b).detach().cpu() for b in gt_boxes]
        if not self.class_agnostic:
            self.dt_labels += [torch.as_tensor(x).cpu() for x in dt_labels]
            self.gt_labels += [torch.as_tensor(x).cpu() for x in gt_labels]

    def compute(self, **kwargs) -> DetectionEvaluation:
        """:func:`evaluate_detections` on everything added (keyword arguments passed on)."""
        return self._run(evaluate_detections, kwargs)

    def compute_coco(self, **kwargs) -> CocoEvaluation:
        """:func:`evaluate_coco` on everything added: all area ranges; ``.stats()`` is COCOeval's summary."""
        return self._run(evaluate_coco, kwargs)

    def _run(self, fn, kwargs):
        kwargs = {"gt_iscrowd": self.gt_iscrowd, "gt_areas": self.gt_areas, **kwargs}
        if self.class_agnostic:
            return fn(self.dt_boxes, self.dt_scores, self.gt_boxes, **kwargs)
        return fn(self.dt_boxes, self.dt_scores, self.gt_boxes, self.dt_labels, self.gt_labels,
                  num_classes=self.num_classes, **kwargs)

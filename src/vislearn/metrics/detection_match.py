"""The two inner loops of COCOeval, vectorised: greedy matching (``evaluateImg``) and ``accumulate``.

:func:`vislearn.metrics.detection.evaluate_detections` prepares flat arrays and calls these; the
protocol (what is matched, ignored and counted) is described there. This module is about doing it fast
and bit-for-bit like pycocotools, for every area range in one pass:

* IoU is computed only for (detection, ground truth) pairs of the same image and category, as
  pycocotools' ``maskUtils.iou`` does (boxes as ``x, y, w, h``: the right edge is ``x + w``), and only
  pairs with IoU at or above the lowest threshold are kept ("candidates");
* a group (image, category) where no detection has two candidates is matched in closed form: each
  ground truth goes to the first detection, by score rank, that reaches the threshold (a crowd region
  to all of them), which does not depend on the area range;
* the other groups are matched rank by rank, all of them at once, over ``areas × thresholds ×
  candidate pairs``; regular ground truth beats ignored, then the higher IoU, then the later box,
  compared as integers (the IoU's float bits with a flag above them) so that no rounding decides;
* ``accumulate`` sorts once; precision at the 101 recall points is read by integer search on the true
  positive counts, which gives the same index as pycocotools' float ``searchsorted`` on ``tp / npig``.
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = []

REC_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_PAIRS_PER_CHUNK = 1 << 22


def xywh(b: np.ndarray) -> np.ndarray:
    """``N×4`` xyxy → ``x, y, w, h`` (as to_coco_json writes them for pycocotools)."""
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)


def _edges(b: np.ndarray) -> tuple[np.ndarray, ...]:
    """``x, y, w, h`` boxes → contiguous columns ``x1, y1, x + w, y + h, w·h`` (pycocotools' edges and area)."""
    return (np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1]), b[:, 2] + b[:, 0], b[:, 3] + b[:, 1],
            b[:, 2] * b[:, 3])


def _iou_of_edges(d, g, crowd: np.ndarray) -> np.ndarray:
    w = np.minimum(d[2], g[2]) - np.maximum(d[0], g[0])
    h = np.minimum(d[3], g[3]) - np.maximum(d[1], g[1])
    inter = w * h
    union = np.where(crowd, d[4], d[4] + g[4] - inter)
    ok = (w > 0) & (h > 0) & (union > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def pair_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired ``P×4`` xywh boxes, pycocotools' ``bbIou`` operation for operation (crowd: ``∩ / area(d)``)."""
    return _iou_of_edges(_edges(d), _edges(g), crowd)


def candidates(dx, d_group, gx, g_group, g_crowd, num_groups: int, min_thr: float):
    """``(det, gt, iou)`` of all same-group pairs with IoU ``>= min_thr``, ordered by detection then ground truth.

    ``dx``/``gx``: xywh boxes; the ground truth must be sorted by group.
    """
    g_start = np.searchsorted(g_group, np.arange(num_groups))
    cnt = np.bincount(g_group, minlength=num_groups)[d_group]
    ends = np.cumsum(cnt)
    de, ge = _edges(dx), _edges(gx)
    out_d, out_g, out_iou = [], [], []
    lo = 0
    while lo < len(dx):  # detections in blocks of about _PAIRS_PER_CHUNK pairs
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + _PAIRS_PER_CHUNK, side="right")))
        c = cnt[lo:hi]
        pd = np.repeat(np.arange(lo, hi), c)
        pg = np.repeat(g_start[d_group[lo:hi]] - (np.cumsum(c) - c), c) + np.arange(len(pd))
        iou = _iou_of_edges([x[pd] for x in de], [x[pg] for x in ge], g_crowd[pg])
        keep = np.flatnonzero(iou >= min_thr)
        out_d.append(pd[keep]), out_g.append(pg[keep]), out_iou.append(iou[keep])
        lo = hi
    if not out_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def greedy_match(pd, pg, piou, d_group, d_rank, g_crowd, g_ign, thr, n_det: int):
    """COCOeval's matching for every area range at once → ``(matched, matched_ignored)``.

    ``matched`` is ``A×T×N`` bool; ``matched_ignored(a, t, det)`` says, for matched entries, whether the
    ground truth taken is ignored (index arrays in, bool array out). ``pd, pg, piou``: :func:`candidates`;
    ``g_ign``: ``A×G`` ignored ground truth per area range (crowds included); ``thr``: the IoU thresholds
    already capped at ``1 - 1e-10`` as COCOeval does.
    """
    A, T = g_ign.shape[0], len(thr)
    dtm = np.zeros((A, T, n_det), bool)
    dig = np.zeros((A, T, n_det), bool)  # written for the rank-by-rank groups only
    single_gt = np.full(n_det, -1, np.int64)  # the one candidate of a detection in a closed-form group

    def matched_ignored(a, t, det):
        g = single_gt[det]
        return np.where(g >= 0, g_ign[a, np.maximum(g, 0)], dig[a, t, det])

    if len(pd) == 0:
        return dtm, matched_ignored
    n_cand = np.bincount(pd, minlength=n_det)
    hard = np.zeros(int(d_group.max()) + 1, bool)
    hard[d_group[n_cand >= 2]] = True
    h = hard[d_group[pd]]
    single_gt[pd[~h]] = pg[~h]
    _match_single_candidate(pd[~h], pg[~h], piou[~h], g_crowd, thr, dtm)
    if h.any():
        _match_rank_by_rank(pd[h], pg[h], piou[h], d_rank, g_crowd, g_ign, thr, dtm, dig)
    return dtm, matched_ignored


def _match_single_candidate(pd, pg, piou, g_crowd, thr, dtm) -> None:
    """Groups where each detection has at most one candidate: the first detection (by rank, which is
    the detection order within a group) reaching the threshold takes the box; crowds take them all.
    The same for every area range."""
    if len(pd) == 0:
        return
    o = np.argsort(pg, kind="stable")
    pd, pg, piou = pd[o], pg[o], piou[o]
    new = np.r_[True, pg[1:] != pg[:-1]]
    seg_start = np.flatnonzero(new)
    seg_id = np.cumsum(new) - 1
    valid = piou[None, :] >= thr[:, None]  # T×P
    cs = np.cumsum(valid, axis=1, dtype=np.int32)
    before = np.where(seg_start > 0, cs[:, np.maximum(seg_start - 1, 0)], 0)
    dtm[0][:, pd] = valid & (g_crowd[pg][None, :] | (cs - before[:, seg_id] == 1))
    dtm[1:] = dtm[0]


def _match_rank_by_rank(pd, pg, piou, d_rank, g_crowd, g_ign, thr, dtm, dig) -> None:
    """The other groups: all detections of one rank at a time, each taking its best free candidate."""
    A, T, G = g_ign.shape[0], len(thr), g_ign.shape[1]
    rank = d_rank[pd]
    o = np.argsort(rank.astype(np.int16) if rank.max() < 2**15 else rank, kind="stable")  # pairs stay (det, gt)
    pd, pg, piou, rank = pd[o], pg[o], piou[o], rank[o]
    # regular before ignored, then IoU, compared exactly: non-negative float64 bits order like the floats
    key_all = piou.view(np.int64)[None, :] + np.where(g_ign[:, pg], 0, np.int64(1) << 62)  # A×P
    taken = np.zeros((A, T, G), bool)
    a_ix = np.arange(A)[:, None, None]
    bounds = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1], True])
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        d_s, g_s = pd[r0:r1], pg[r0:r1]
        seg = np.flatnonzero(np.r_[True, d_s[1:] != d_s[:-1]])
        lens = np.diff(np.r_[seg, len(d_s)])
        free = (piou[None, r0:r1] >= thr[:, None])[None] & ~taken[:, :, g_s]  # A×T×P
        key = np.where(free, key_all[:, None, r0:r1], -1)
        best = np.maximum.reduceat(key, seg, axis=2)  # A×T×S
        hit = key == np.repeat(best, lens, axis=2)
        j = np.maximum.reduceat(np.where(hit, np.arange(len(g_s)), -1), seg, axis=2)  # the last best
        ok = best >= 0
        g_sel = g_s[j]
        dets = d_s[seg]
        dtm[:, :, dets] = ok
        dig[:, :, dets] = ok & g_ign[a_ix, g_sel]
        ai, ti, si = np.nonzero(ok & ~g_crowd[g_sel])
        taken[ai, ti, g_sel[ai, ti, si]] = True


def accumulate(dtm, matched_ignored, d_out, cat, rank, npig, max_dets, num_cats: int):
    """COCOeval's ``accumulate`` → precision ``T×R×K×A×M`` and recall ``T×K×A×M`` (``-1``: no ground truth).

    The detections must be in COCOeval's pooled order (category, score descending, image, rank): per
    category, the first ``max_det`` detections of each image pooled in image order and merge-sorted by
    score. ``dtm``, ``matched_ignored``: :func:`greedy_match`'s matches and whether they took ignored ground truth;
    ``d_out``: ``A×N`` detections outside the area range (ignored when unmatched); ``npig``: ``A×K``
    non-ignored ground truth.

    Only the matched detections are visited: precision can only rise at a true positive, so the
    precision envelope at recall point ``r`` is the largest ``j / (seen_j + eps)`` over the true
    positives ``j >= c(r)``, where ``seen_j`` counts the non-ignored detections up to the ``j``-th true
    positive and ``c(r)`` is the least count with ``c / npig >= r`` (pycocotools' ``searchsorted`` index).
    """
    A, T, _ = dtm.shape
    K, R, M = num_cats, len(REC_THRESHOLDS), len(max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    ea, et, ep = np.nonzero(dtm)  # matches, sorted by (area, threshold, pooled position)
    e_ign = matched_ignored(ea, et, ep)
    need = np.maximum(np.broadcast_to(_first_count_reaching(npig)[:, None], (A, T, K, R)).reshape(-1, R), 1)
    has = npig > 0
    for m, md in enumerate(max_dets):
        keep = rank < md
        a, t, p, ign = ea, et, ep, e_ign
        cat_m, out_m = cat, d_out
        if not keep.all():
            ek = keep[ep]
            a, t, p, ign = ea[ek], et[ek], (np.cumsum(keep) - 1)[ep[ek]], e_ign[ek]
            cat_m, out_m = cat[keep], d_out[:, keep]
        n_m = len(cat_m)
        start = np.searchsorted(cat_m, np.arange(K + 1))[cat_m[p]]
        cum_out = np.cumsum(out_m, axis=1).ravel()  # A×N_m, flat
        n_out = cum_out[a * n_m + p] - np.where(start > 0, cum_out[a * n_m + np.maximum(start - 1, 0)], 0)
        gid = (a * T + t) * K + cat_m[p]  # (area, threshold, category): contiguous runs
        first = _run_starts(gid)
        # ignored up to here = matched to ignored + (outside the range − outside the range and matched)
        ignored = _cum_in_run(ign, first) + n_out - _cum_in_run(out_m.ravel()[a * n_m + p], first)
        tp = ~ign
        gid, seen = gid[tp], (p - start + 1 - ignored)[tp]
        j = np.arange(len(gid)) - _run_starts(gid) + 1
        pr = j / (seen.astype(np.float64) + np.spacing(1))  # pycocotools' tp / (fp + tp + eps)
        n_tp = np.bincount(gid, minlength=A * T * K)
        ok = need <= n_tp[:, None]
        block = np.zeros(ok.shape)
        if ok.any():  # max of pr between consecutive recall points' first true positives, then suffix max
            g0 = np.cumsum(n_tp) - n_tp
            block[ok] = np.maximum.reduceat(pr, (g0[:, None] + need - 1)[ok])
        q = np.maximum.accumulate(block[:, ::-1], axis=1)[:, ::-1].reshape(A, T, K, R)
        rc = n_tp.reshape(A, T, K) / np.maximum(npig, 1)[:, None, :]
        precision[..., m] = np.where(has[:, None, :, None], q, -1.0).transpose(1, 3, 2, 0)
        recall[..., m] = np.where(has[:, None, :], rc, -1.0).transpose(1, 2, 0)
    return precision, recall


def _run_starts(key: np.ndarray) -> np.ndarray:
    """For each element of a sequence of runs of equal keys, the index where its run starts."""
    new = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
    return np.maximum.accumulate(np.where(new, np.arange(len(key)), 0)) if len(key) else np.zeros(0, np.int64)


def _cum_in_run(flag: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Inclusive count of ``flag`` from the start of each element's run (``first``: :func:`_run_starts`)."""
    c = np.cumsum(flag, dtype=np.int64)
    return c - c[first] + flag[first]


def _first_count_reaching(npig: np.ndarray) -> np.ndarray:
    """``A×K×R``: the least count ``c`` with ``c / npig >= r`` for each recall point ``r`` (float division,
    as pycocotools' ``rc = tp / npig``), so ``searchsorted(rc, r)`` is the first index where tp reaches it."""
    cache: dict[int, np.ndarray] = {}
    out = np.zeros((*npig.shape, len(REC_THRESHOLDS)), np.int64)
    for (a, k), n in np.ndenumerate(npig):
        if n > 0:
            if n not in cache:
                cache[n] = np.searchsorted(np.arange(n + 1) / n, REC_THRESHOLDS, side="left")
            out[a, k] = cache[n]
    return out

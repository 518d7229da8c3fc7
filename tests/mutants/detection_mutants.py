"""The hand-applied mutants of metrics/detection.py (tests/MUTANTS.md), located by the text of their line.

python tests/mutants/detection_mutants.py /tmp/det.json
PYTHONPATH=src:tests python tests/mutants/handmut_batch.py /tmp/det.json -- tests/test_metrics_detection_edges.py \
    tests/test_metrics_detection.py tests/test_metrics_detection_match.py
"""
import json
import sys

P = "src/vislearn/metrics/detection.py"
src = open(P).read().splitlines()
def at(ctx):
    k, ctx0 = 0, ctx
    if "#" in ctx[-3:]:
        ctx, k = ctx[:-2], int(ctx[-1])
    hits = [i + 1 for i, l in enumerate(src) if ctx in l]
    assert len(hits) == 1 or "#" in ctx0, (ctx, hits)
    return hits[k]
M = []
def m(ctx, old, new, nth=1, label=""):
    M.append([P, at(ctx), old, new, nth, label])
m('"all": (0.0, 1e5**2)', "1e5**2", "1e5*2", 1, "52")
m('"all": (0.0, 1e5**2)', "32.0**2", "32.0*2", 1, "52")
m('"large": (96.0**2', "96.0**2", "96.0*2", 1, "53")
m('"large": (96.0**2', "1e5**2", "1e5*2", 1, "53")
m("if len(t) == 0:", "== 0", "== -1", 1, "76")
m("s = s[s > -1]#0", "s > -1", "s >= -1", 1, "84 ap")
m("s = s[s > -1]#1", "s > -1", "s >= -1", 1, "91 ar")
m("if a.size == 0:", "== 0", "== 1", 1, "108")
m("if a.size == 0:", "== 0", "== -1", 1, "108")
m("if a.ndim != 2 or a.shape[1]", " or ", " and ", 1, "110")
m("if lst and all(isinstance", "lst and", "lst or", 1, "141")
m("if flat is not None and flat.ndim", "flat is not None and", "flat is not None or", 1, "148")
m("if flat is not None and flat.ndim", "flat.ndim ==", "flat.ndim !=", 1, "148")
m("if flat is not None and flat.ndim", "flat.shape[1] == last", "flat.shape[1] != last", 1, "148")
m("if lens.sum() == len(flat) and not", "and not flat", "or not flat", 1, "150")
m("if lens.sum() == len(flat) and not", "not flat.is_complex()", "flat.is_complex()", 1, "150")
m("elif t.numel() == 0:", "== 0", "!= 0", 1, "159")
m("elif t.numel() == 0:", "== 0", "== 1", 1, "159")
m("elif t.numel() == 0:", "== 0", "== -1", 1, "159")
m("elif t.ndim != 2 or t.shape[1] != last", "t.ndim != 2", "t.ndim == 2", 1, "161")
m("elif t.ndim != 2 or t.shape[1] != last", "t.shape[1] != last", "t.shape[1] == last", 1, "161")
m("elif t.ndim != 2 or t.shape[1] != last", " or ", " and ", 1, "161")
m("elif t.ndim != 2 or t.shape[1] != last", "!= 2", "!= 3", 1, "161")
m("elif t.ndim != 2 or t.shape[1] != last", "!= 2", "!= 1", 1, "161")
m("    if not parts:", "if not parts", "if parts", 1, "165")
R166 = "return np.zeros((0, last) if last else (0,), dtype), lens"
R167 = "return torch.cat([t.to(to) for t in parts]).numpy(), lens"
m(R166, R166, "return None", 1, "166")
m(R167, R167, "return None", 1, "167")
m("((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))", "b[:, 2] < b[:, 0]", "b[:, 2] <= b[:, 0]", 1, "199")
m("((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))", "b[:, 3] < b[:, 1]", "b[:, 3] <= b[:, 1]", 1, "199")
m("g_start = np.cumsum(ng) - ng", "- ng", "+ ng", 1, "203")
m("g_start[i] + ng[i]", "g_start[i] + ng[i]", "g_start[i] - ng[i]", 1, "207")
m("(area < 0).any()", "area < 0", "area <= 0", 1, "208")
m("(area < 0).any()", "area < 0", "area < 1", 1, "208")
m("(area < 0).any()", "area < 0", "area < -1", 1, "208")
m("(area < 0).any()", ".all() or (", ".all() and (", 1, "208")
m("if not max_dets or max_dets[0] < 1", "< 1", "< 0", 1, "235")
m("if not max_dets or max_dets[0] < 1", " or ", " and ", 1, "235")
m("if thr.size == 0 or", "size == 0", "size == -1", 1, "238")
m("if thr.size == 0 or", "thr < 0", "thr <= 0", 1, "238")
m("if thr.size == 0 or", "thr < 0", "thr < -1", 1, "238")
m("if thr.size == 0 or", "thr > 1", "thr >= 1", 1, "238")
m("if thr.size == 0 or", "thr > 1", "thr > 2", 1, "238")
m("if thr.size == 0 or", "size == 0 or", "size == 0 and", 1, "238")
m("use_cats = dt_labels is not None or gt_labels", " or ", " and ", 1, "246")
m("if use_cats and (dt_labels is None or gt_labels is None)", " or ", " and ", 1, "247")
m("ok = (pos < K) & (cats[np.minimum(pos, K - 1)]", "K - 1", "K + 1", 1, "264")

m("by_score = by_score[dk[by_score] >= 0]", ">= 0", ">= -1", 1, "274")
m("g_order = np.flatnonzero(gk >= 0)", ">= 0", ">= -1", 1, "282")
m("g_ign = (g_area[None] < lo)", "g_area[None] < lo", "g_area[None] <= lo", 1, "288")
m("g_ign = (g_area[None] < lo)", "g_area[None] > hi", "g_area[None] >= hi", 1, "288")
m("thr_c = np.minimum(thr, 1 - 1e-10)", "1 - 1e-10", "1 + 1e-10", 1, "290")
m("(d_area < lo) | (d_area > hi)", "d_area < lo", "d_area <= lo", 1, "294")
m("(d_area < lo) | (d_area > hi)", "d_area > hi", "d_area >= hi", 1, "294")
m("if not self.class_agnostic and (dt_labels is None or", " or ", " and ", 1, "469")
m("store += [None if given is None or x is None", " or ", " and ", 1, "473")
# expected equivalent (should SURVIVE)
m("np.abs(self.iou_thresholds - iou) < 1e-9", "< 1e-9", "<= 1e-9", 1, "75 EQUIV")
m("out[int(c)] = float(s.mean()) if (s > -1).all()", "s > -1", "s >= -1", 1, "99 EQUIV")
m("parts = lst if last is not None else [x if x.ndim == 1", "x.ndim == 1", "x.ndim != 1", 1, "143 EQUIV")
m("if lens.sum() == len(flat) and not", "lens.sum() == len(flat)", "lens.sum() != len(flat)", 1, "150 EQUIV")
m("if (xs[1:] == xs[:-1])", "xs[1:] == xs[:-1]", "xs[1:] != xs[:-1]", 1, "230 EQUIV")
m("ok = (pos < K) & (cats[np.minimum(pos, K - 1)]", "pos < K", "pos <= K", 1, "264 EQUIV")
m("pooled = pooled[d_rank[pooled] < max_dets[-1]]", "< max_dets", "<= max_dets", 1, "280 EQUIV")
m("return CocoEvaluation(dict(zip(area_ranges, evs, strict=True)))", "strict=True", "strict=False", 1, "369 EQUIV")

m("parts = lst if last is not None else [x if x.ndim == 1", "x.ndim == 1", "x.ndim == 0", 1, "143 EQUIV")
m("parts = lst if last is not None else [x if x.ndim == 1", "x.ndim == 1", "x.ndim == 2", 1, "143 EQUIV")
m("enumerate(zip(gt_boxes, gt_labels, strict=True))", "strict=True", "strict=False", 1, "425 EQUIV")
m("for n, (b, c) in enumerate(zip(boxes, labels, strict=True))", "strict=True", "strict=False", 1, "429 EQUIV")
m("enumerate(zip(dt_boxes, dt_scores, dt_labels, strict=True))", "strict=True", "strict=False", 1, "434 EQUIV")
m("for b, sc, c in zip(boxes, scores, labels, strict=True)", "strict=True", "strict=False", 1, "436 EQUIV")
json.dump(M, open(sys.argv[1], "w"))
print(len(M), "mutants written to", sys.argv[1])

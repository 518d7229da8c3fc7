"""MSC-MultiBox hot paths: proposal inference, matching, and our COCO evaluator vs faster-coco-eval and pycocotools.

1. images/s of proposal inference (network + decode + batched NMS + top 100) for the quick model
   (``multibox_tiny``, 128 px) and the paper model (``inception_v3``, 299 px; skipped by ``--quick``);
2. matching 100 ground-truth boxes to 1,420 priors: our bipartite matching (scipy Hungarian on the
   MultiBox cost) and our IoU matching vs torchvision's ``SSDMatcher`` (the peer);
3. COCO bbox evaluation, the full ``evaluate`` + ``accumulate`` + ``summarize`` (four area ranges, IoU
   0.5:0.95, maxDets 1/10/100): our :func:`vislearn.metrics.evaluate_coco` vs faster-coco-eval's
   ``COCOeval_faster`` (C++, the fast peer) and pycocotools' ``COCOeval`` on 1,000 and 5,000 synthetic
   images (5 categories, up to 11 boxes of all COCO sizes, crowd regions on a third of the images,
   segment areas below ``w·h``, 100 detections per image), with the largest precision/recall/stats
   difference. Times are CPU seconds of this process (``time.process_time``, one thread: the peers are
   single-threaded), measured in alternation; ours starts from the per-image tensors, the peers from COCO
   objects built beforehand (their json conversion and index are not timed).

Run: ``.venv/bin/python benchmarks/multibox.py`` (writes ``results/bench_multibox.json``); ``--quick``
for a smoke run (small image counts, no Inception-v3).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import numpy as np
import torch
from _common import add_common_args, apply_common_args, goal_row, interleaved, write_bench

N_CLS = 5


def synthetic(n_img: int, n_cls: int = N_CLS, dets: int = 100, seed: int = 0):
    """Per-image ground truth (up to 11 boxes, sides log-uniform 6–300 px so every COCO size occurs; on a third
    of the images 1–2 crowd regions) with segment areas 50–100 % of ``w·h``, and ``dets`` detections: jittered
    copies of the boxes (70 % with the box's label), 10 on each crowd region, random boxes on empty images.

    Returns ``(gt boxes, gt labels, dt boxes, dt scores, dt labels, gt iscrowd, gt areas)`` lists of tensors."""
    rng = np.random.default_rng(seed)
    gtb, gtl, dtb, dts, dtl, crowd, area = [], [], [], [], [], [], []
    for _ in range(n_img):
        k = int(rng.integers(0, 12))
        c = int(rng.integers(1, 3)) if rng.uniform() < 1 / 3 else 0
        wh = np.exp(rng.uniform(np.log(6), np.log(300), (k, 2)))
        xy = rng.uniform(0, 640 - wh)
        cwh = rng.uniform(80, 300, (c, 2))
        cxy = rng.uniform(0, 640 - cwh)
        g = np.concatenate([np.concatenate([xy, xy + wh], 1), np.concatenate([cxy, cxy + cwh], 1)])
        lab = rng.integers(0, n_cls, k + c)
        n_on = 10 * c
        src = rng.integers(0, max(k, 1), dets - n_on)
        if k:
            d = g[src] + rng.normal(0, 1, (len(src), 4)) * np.maximum(wh[src] / 10, 1).repeat(2, 1)
            dl = np.where(rng.uniform(size=len(src)) < 0.7, lab[src], rng.integers(0, n_cls, len(src)))
        else:
            rxy = rng.uniform(0, 590, (len(src), 2))
            d, dl = np.concatenate([rxy, rxy + 50], 1), rng.integers(0, n_cls, len(src))
        host = np.repeat(np.arange(c), 10)
        owh = cwh[host] * rng.uniform(0.1, 0.6, (n_on, 2))
        oxy = cxy[host] + rng.uniform(0, 1, (n_on, 2)) * (cwh[host] - owh)
        d = np.concatenate([d, np.concatenate([oxy, oxy + owh], 1)])
        dl = np.concatenate([dl, lab[k + host]])
        d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
        gtb.append(torch.tensor(g)), gtl.append(torch.tensor(lab))
        crowd.append(torch.tensor(np.r_[np.zeros(k, bool), np.ones(c, bool)]))
        area.append(torch.tensor((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) * rng.uniform(0.5, 1.0, k + c)))
        dtb.append(torch.tensor(d)), dts.append(torch.tensor(rng.uniform(size=dets))), dtl.append(torch.tensor(dl))
    return gtb, gtl, dtb, dts, dtl, crowd, area


def coco_objects(coco_cls, dataset, results):
    """A COCO ground-truth object and its loaded results (``coco_cls``: pycocotools' or faster-coco-eval's)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
    return gt, dt


def bench_coco_eval(n_images: int, rounds: int) -> dict:
    """Ours vs faster-coco-eval (``rounds`` alternating rounds) and pycocotools (one round: it takes minutes)."""
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vislearn.metrics.detection import evaluate_coco, to_coco_json

    gtb, gtl, dtb, dts, dtl, crowd, area = synthetic(n_images)
    dataset, results = to_coco_json(gtb, gtl, dtb, dts, dtl, N_CLS, image_size=(640, 640), gt_iscrowd=crowd,
                                    gt_areas=area)
    peers = {"faster_coco_eval": (coco_objects(FasterCOCO, dataset, results), COCOeval_faster),
             "pycocotools": (coco_objects(COCO, dataset, results), COCOeval)}
    last: dict = {}

    def ours():
        ev = evaluate_coco(dtb, dts, gtb, dtl, gtl, num_classes=N_CLS, gt_iscrowd=crowd, gt_areas=area)
        last["ours"] = ev, ev.stats()

    def peer(name):
        (gt, dt), cls = peers[name]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = cls(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        last[name] = ev

    t = interleaved({"ours": ours, "faster_coco_eval": lambda: peer("faster_coco_eval")}, warmup=1, rounds=rounds,
                    clock=time.process_time)
    t.update({k: v for k, v in interleaved({"pycocotools": lambda: peer("pycocotools")}, warmup=0, rounds=1,
                                           clock=time.process_time).items()})
    ev, stats = last["ours"]
    precision = np.stack([e.precision for e in ev.areas.values()], 3)  # T×R×K×A×M as COCOeval
    recall = np.stack([e.recall for e in ev.areas.values()], 2)
    diff = {}
    for name in peers:
        ref = last[name]
        diff[name] = {"precision": float(np.abs(precision - np.asarray(ref.eval["precision"])).max()),
                      "recall": float(np.abs(recall - np.asarray(ref.eval["recall"])).max()),
                      "stats": float(np.abs(np.array(list(stats.values())) - np.asarray(ref.stats[:12])).max())}
    n_crowd = sum(int(c.sum()) for c in crowd)
    out = {"images": n_images, "categories": N_CLS, "detections": sum(len(d) for d in dtb),
           "ground_truth": sum(len(g) for g in gtb), "crowd_regions": n_crowd, "cpu_s": t,
           "speedup_vs_faster_coco_eval": t["faster_coco_eval"] / t["ours"],
           "speedup_vs_pycocotools": t["pycocotools"] / t["ours"], "max_abs_diff": diff, "stats_ours": stats,
           "stats_faster_coco_eval": [float(x) for x in last["faster_coco_eval"].stats[:12]]}
    print(f"COCO eval {n_images} images: ours {t['ours']:.3f}s, faster-coco-eval {t['faster_coco_eval']:.3f}s, "
          f"pycocotools {t['pycocotools']:.2f}s (CPU s) -> {out['speedup_vs_faster_coco_eval']:.2f}x / "
          f"{out['speedup_vs_pycocotools']:.1f}x; max |diff| {diff}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    from torchvision.models.detection._utils import SSDMatcher
    from torchvision.ops import box_iou

    from vislearn.detection import bipartite_match, grid_priors, iou_match
    from vislearn.models import create_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 5000], help="COCO evaluation sizes")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds, ours vs faster-coco-eval")
    add_common_args(ap)
    args = ap.parse_args(argv)
    apply_common_args(args)
    torch.set_num_threads(1)
    if args.quick:
        args.images, args.rounds = [50, 100], 1
    numbers: dict = {"torch_threads": 1, "clock": "time.process_time (CPU s of this process)"}
    # 1. proposal inference
    models = [("multibox_tiny_128", dict(backbone="multibox_tiny", image_size=128, head_width=64, context_width=32),
               128, 16, 5)]
    if not args.quick:
        models.append(("inception_v3_299", dict(backbone="inception_v3"), 299, 4, 2))
    for name, kw, size, batch, rounds in models:
        model = create_model("msc_multibox", **kw).eval()
        x = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            t = interleaved({"propose": lambda m=model, x=x: m.propose(x, top_k=100, nms_iou=0.5)},
                            rounds=1 if args.quick else rounds)["propose"]
        numbers[f"proposal_images_per_s_{name}"] = batch / t
        print(f"{name}: {batch / t:.1f} images/s", flush=True)
    # 2. matching 100 boxes × 1,420 priors
    priors = grid_priors()
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * 0.8
    gts = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 0.2 + 0.01], 1)
    matcher = SSDMatcher(0.5)
    assert torch.equal(iou_match(priors, gts), matcher(box_iou(gts, priors)))
    t = interleaved({"bipartite": lambda: bipartite_match(priors, gts),
                     "iou_ours": lambda: iou_match(priors, gts),
                     "iou_torchvision": lambda: matcher(box_iou(gts, priors))}, rounds=3 if args.quick else 20)
    numbers["match_ms"] = {k: 1000 * v for k, v in t.items()}
    print("matching ms:", numbers["match_ms"], flush=True)
    # 3. COCO evaluation vs faster-coco-eval and pycocotools
    numbers["coco_eval"] = {str(n): bench_coco_eval(n, args.rounds) for n in args.images}
    rows = []
    for n, r in numbers["coco_eval"].items():
        detail = {"images": int(n), "clock": "process_time", "cpu_s": r["cpu_s"],
                  "max_abs_precision_diff": r["max_abs_diff"]}
        rows.append(goal_row(f"COCO evaluation, bbox, {int(n):,} images (evaluate+accumulate+summarize)",
                             "faster-coco-eval COCOeval_faster", r["speedup_vs_faster_coco_eval"], ">= 1.0x",
                             r["speedup_vs_faster_coco_eval"] >= 1.0, **detail))
        rows.append(goal_row(f"COCO evaluation, bbox, {int(n):,} images (evaluate+accumulate+summarize)",
                             "pycocotools COCOeval", r["speedup_vs_pycocotools"], "reported", None, **detail))
    ce = ", ".join(f"{int(n):,} images ours {r['cpu_s']['ours']:.2f}s vs faster-coco-eval "
                   f"{r['cpu_s']['faster_coco_eval']:.2f}s ({r['speedup_vs_faster_coco_eval']:.1f}x) vs pycocotools "
                   f"{r['cpu_s']['pycocotools']:.1f}s ({r['speedup_vs_pycocotools']:.0f}x)"
                   for n, r in numbers["coco_eval"].items())
    worst = max(d for r in numbers["coco_eval"].values() for p in r["max_abs_diff"].values() for d in p.values())
    props = f"{numbers['proposal_images_per_s_multibox_tiny_128']:.0f} img/s (tiny 128px)"
    if "proposal_images_per_s_inception_v3_299" in numbers:
        props += f", {numbers['proposal_images_per_s_inception_v3_299']:.1f} img/s (Inception-v3 299px)"
    summary = (f"COCO eval (CPU s, 1 thread): {ce}, max |diff| {worst:.1e}; matching 100x1420: bipartite "
               f"{numbers['match_ms']['bipartite']:.1f} ms, IoU {numbers['match_ms']['iou_ours']:.2f} ms vs "
               f"torchvision {numbers['match_ms']['iou_torchvision']:.2f} ms; proposals {props}")
    write_bench("multibox", summary, numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()

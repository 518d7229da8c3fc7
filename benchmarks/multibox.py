"""MSC-MultiBox hot paths: proposal inference, matching, and our COCO evaluator vs pycocotools.

1. images/s of proposal inference (network + decode + batched NMS + top 100) for the quick model
   (``multibox_tiny``, 128 px) and the paper model (``inception_v3``, 299 px);
2. matching 100 ground-truth boxes to 1,420 priors: our bipartite matching (scipy Hungarian on the
   MultiBox cost) and our IoU matching vs torchvision's ``SSDMatcher`` (the peer);
3. our vectorised COCO evaluator vs pycocotools ``COCOeval`` (``evaluate`` + ``accumulate``) on 5,000
   synthetic images (5 categories, ~6 boxes and 100 detections per image), with the AP difference.

Run: ``.venv/bin/python benchmarks/multibox.py`` (writes ``results/bench_multibox.json``).
"""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import torch
from _common import interleaved, write_bench


def synthetic(n_img: int, n_cls: int = 5, dets: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    gtb, gtl, dtb, dts, dtl = [], [], [], [], []
    for _ in range(n_img):
        k = int(rng.integers(0, 12))
        xy = rng.uniform(0, 400, (k, 2))
        g = np.concatenate([xy, xy + rng.uniform(8, 200, (k, 2))], 1)
        lab = rng.integers(0, n_cls, k)
        src = rng.integers(0, max(k, 1), dets)
        d = g[src] + rng.normal(0, 12, (dets, 4)) if k else np.concatenate([xy := rng.uniform(0, 400, (dets, 2)),
                                                                             xy + 50], 1)
        d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
        dl = np.where(rng.uniform(size=dets) < 0.7, lab[src] if k else 0, rng.integers(0, n_cls, dets))
        gtb.append(torch.tensor(g)), gtl.append(torch.tensor(lab))
        dtb.append(torch.tensor(d)), dts.append(torch.tensor(rng.uniform(size=dets))), dtl.append(torch.tensor(dl))
    return gtb, gtl, dtb, dts, dtl


def coco_objects(gtb, gtl, dtb, dts, dtl, n_cls):
    from pycocotools.coco import COCO

    from vislearn.metrics.detection import to_coco_json

    dataset, res = to_coco_json(gtb, gtl, dtb, dts, dtl, n_cls, image_size=(640, 640))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(res)
    return gt, dt


def main(n_images: int = 5000) -> None:
    from pycocotools.cocoeval import COCOeval
    from torchvision.models.detection._utils import SSDMatcher
    from torchvision.ops import box_iou

    from vislearn.detection import bipartite_match, grid_priors, iou_match
    from vislearn.metrics.detection import evaluate_detections
    from vislearn.models import create_model

    numbers: dict = {}
    # 1. proposal inference
    for name, kw, size, batch, rounds in (
            ("multibox_tiny_128", dict(backbone="multibox_tiny", image_size=128, head_width=64, context_width=32),
             128, 16, 5),
            ("inception_v3_299", dict(backbone="inception_v3"), 299, 4, 2)):
        model = create_model("msc_multibox", **kw).eval()
        x = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            t = interleaved({"propose": lambda m=model, x=x: m.propose(x, top_k=100, nms_iou=0.5)},
                            rounds=rounds)["propose"]
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
                     "iou_torchvision": lambda: matcher(box_iou(gts, priors))}, rounds=20)
    numbers["match_ms"] = {k: 1000 * v for k, v in t.items()}
    print("matching ms:", numbers["match_ms"], flush=True)
    # 3. evaluator vs pycocotools
    data = synthetic(n_images)
    gt, dt = coco_objects(*data, 5)

    last: dict = {}

    def ours():
        last["ours"] = evaluate_detections(data[2], data[3], data[0], data[4], data[1], num_classes=5)

    def peer():
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
        last["peer"] = ev

    t = interleaved({"ours": ours, "pycocotools": peer}, warmup=0, rounds=1)  # pycocotools takes minutes
    ev_ours, ev_peer = last["ours"], last["peer"]
    ap_diff = float(np.abs(ev_ours.precision - ev_peer.eval["precision"][:, :, :, 0, :]).max())
    numbers["eval_s"] = t
    numbers["eval_speedup"] = t["pycocotools"] / t["ours"]
    numbers["eval_max_precision_diff"] = ap_diff
    numbers["eval_images"] = n_images
    numbers["eval_ap"] = {"ours": ev_ours.ap(), "pycocotools_area_all": float(
        np.mean(ev_peer.eval["precision"][:, :, :, 0, 2][ev_peer.eval["precision"][:, :, :, 0, 2] > -1]))}
    summary = (f"COCO eval on {n_images} images: ours {t['ours']:.2f}s vs pycocotools {t['pycocotools']:.2f}s "
               f"({numbers['eval_speedup']:.1f}x, max precision diff {ap_diff:.1e}); matching 100x1420: bipartite "
               f"{numbers['match_ms']['bipartite']:.1f} ms, IoU {numbers['match_ms']['iou_ours']:.2f} ms vs "
               f"torchvision {numbers['match_ms']['iou_torchvision']:.2f} ms; proposals "
               f"{numbers['proposal_images_per_s_multibox_tiny_128']:.0f} img/s (tiny 128px), "
               f"{numbers['proposal_images_per_s_inception_v3_299']:.1f} img/s (Inception-v3 299px)")
    write_bench("multibox", summary, numbers)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)

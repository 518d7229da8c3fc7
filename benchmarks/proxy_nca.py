"""Proxy-NCA hot paths, ours vs pytorch-metric-learning (PML), timed interleaved in one process.

1. Loss forward+backward, batch 256, dim 128, 1k / 10k / 100k classes: ours (paper form, positive
   excluded; and the PML-equivalent form ``exclude_positive=False``) vs PML's ``ProxyNCALoss`` with
   the same proxies. Peak memory of one forward+backward is measured in a fresh subprocess per case
   (peak RSS growth, ``ru_maxrss``), since CPU tensors are not visible to ``tracemalloc``.
2. Retrieval evaluation of N × 128 embeddings (N = 100k by default; labels: N/10 classes of 10):
   our blocked ``retrieval_metrics`` (Recall@1, MAP@R, R-precision) vs PML's ``AccuracyCalculator``
   (precision_at_1, mean_average_precision_at_r, r_precision) with its batched torch k-NN
   (``CustomKNN(LpDistance, batch_size=512)``; faiss is not installed). NMI is left out of the timing:
   both sides would run the same scikit-learn k-means.

Run: ``.venv/bin/python benchmarks/proxy_nca.py [--n 100000] [--rounds 5]``; writes
``results/bench_proxy_nca.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import ROOT, add_common_args, apply_common_args, goal_row, interleaved, write_bench

BATCH, DIM = 256, 128


def _loss_fns(num_classes: int, check: bool = True):
    import torch
    from pytorch_metric_learning.losses import ProxyNCALoss as PML

    from vislearn.losses import ProxyNCALoss

    torch.manual_seed(0)
    pml = PML(num_classes=num_classes, embedding_size=DIM)
    ours = ProxyNCALoss(num_classes, DIM)
    ours_kept = ProxyNCALoss(num_classes, DIM, exclude_positive=False)
    with torch.no_grad():
        ours.proxies.copy_(pml.proxies)
        ours_kept.proxies.copy_(pml.proxies)
    x = torch.randn(BATCH, DIM, requires_grad=True)
    y = torch.randint(0, num_classes, (BATCH,))

    def step(loss_fn):
        def run():
            x.grad = None
            loss_fn.proxies.grad = None
            v = loss_fn(x, y)
            v.backward()
            return v

        return run

    diff = abs(ours_kept(x, y).item() - pml(x, y).item()) if check else None
    return {"ours": step(ours), "ours_positive_kept": step(ours_kept), "pml": step(pml)}, diff


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_child(kind: str, num_classes: int) -> None:
    """Child process: build the losses and inputs, reset the RSS high-water mark (Linux ``clear_refs``),
    run one forward+backward and report how far the peak RSS rose above the RSS before it (MiB)."""
    import gc

    import torch

    torch.set_num_threads(1)
    fns, _ = _loss_fns(num_classes, check=False)
    fn = fns[kind]
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    fn()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def _peak(kind: str, num_classes: int) -> float:
    # a fixed mmap threshold: every large buffer is mapped on allocation and unmapped on free, so the
    # RSS high-water mark sees each one (glibc's adaptive threshold would recycle freed heap memory)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--peak-child", kind, str(num_classes)], capture_output=True,
                         text=True, timeout=600, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def bench_loss(sizes: list[int], rounds: int) -> dict:
    res = {}
    for c in sizes:
        fns, check = _loss_fns(c)
        t = interleaved(fns, warmup=2, rounds=rounds)
        peaks = {k: _peak(k, c) for k in fns}
        res[str(c)] = {"time_s": t, "ratio_ours_vs_pml": t["ours"] / t["pml"],
                       "ratio_ours_positive_kept_vs_pml": t["ours_positive_kept"] / t["pml"],
                       "peak_mib": peaks, "value_diff_positive_kept_vs_pml": check}
        print(f"loss C={c}: ours {t['ours'] * 1e3:.2f} ms, ours(pos kept) {t['ours_positive_kept'] * 1e3:.2f} ms, "
              f"PML {t['pml'] * 1e3:.2f} ms -> ratio {t['ours'] / t['pml']:.2f}; peak MiB {peaks}", flush=True)
    return res


def bench_retrieval(n: int, rounds: int) -> dict:
    import torch
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    from vislearn.metrics.retrieval import retrieval_metrics

    torch.manual_seed(0)
    n_cls = n // 10
    y = torch.arange(n_cls).repeat_interleave(10)
    centers = torch.randn(n_cls, DIM)
    x = centers[y] + 1.5 * torch.randn(n, DIM)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count", device=torch.device("cpu"),
                              knn_func=CustomKNN(LpDistance(normalize_embeddings=False), batch_size=512))
    out = {}

    def ours():
        out["ours"] = retrieval_metrics(x, y, ks=(1,))

    def pml():
        out["pml"] = calc.get_accuracy(x, y)

    t = interleaved({"ours": ours, "pml": pml}, warmup=0, rounds=rounds)
    diffs = {"recall@1": abs(out["ours"]["recall@1"] - out["pml"]["precision_at_1"]),
             "map@r": abs(out["ours"]["map@r"] - out["pml"]["mean_average_precision_at_r"]),
             "r_precision": abs(out["ours"]["r_precision"] - out["pml"]["r_precision"])}
    print(f"retrieval N={n}: ours {t['ours']:.2f} s, PML {t['pml']:.2f} s -> ratio {t['ours'] / t['pml']:.2f}; "
          f"|diff| {diffs}", flush=True)
    return {"n": n, "dim": DIM, "classes": n_cls, "time_s": t, "ratio_ours_vs_pml": t["ours"] / t["pml"],
            "values_ours": out["ours"], "values_pml": out["pml"], "abs_diff": diffs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="retrieval embeddings")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds for the loss")
    ap.add_argument("--retrieval-rounds", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--peak-child", nargs=2, metavar=("KIND", "CLASSES"), help=argparse.SUPPRESS)
    add_common_args(ap)
    args = ap.parse_args(argv)
    apply_common_args(args)
    if args.peak_child:
        _peak_child(args.peak_child[0], int(args.peak_child[1]))
        return
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.sizes, args.rounds, args.n, args.retrieval_rounds = [100], 1, 2000, 1
    loss = bench_loss(args.sizes, args.rounds)
    retr = bench_retrieval(args.n, args.retrieval_rounds)
    ratios = ", ".join(f"{int(c) // 1000}k {v['ratio_ours_vs_pml']:.2f}x" for c, v in loss.items())
    summary = (f"Proxy-NCA fwd+bwd (B={BATCH}, D={DIM}) ours/PML time: {ratios}; "
               f"retrieval {args.n // 1000}k×{DIM} ours/AccuracyCalculator {retr['ratio_ours_vs_pml']:.2f}x "
               f"({retr['time_s']['ours']:.1f}s vs {retr['time_s']['pml']:.1f}s)")
    rows = [goal_row(f"Proxy-NCA loss forward+backward, {int(c):,} classes", "pytorch-metric-learning ProxyNCALoss",
                     1 / v["ratio_ours_vs_pml"], ">= 1.0x", v["ratio_ours_vs_pml"] <= 1.0) for c, v in loss.items()]
    rows.append(goal_row(f"retrieval metrics, {args.n:,} x {DIM}", "pytorch-metric-learning AccuracyCalculator",
                         1 / retr["ratio_ours_vs_pml"], ">= 1.0x", retr["ratio_ours_vs_pml"] <= 1.0))
    write_bench("proxy_nca", summary, {"loss": loss, "retrieval": retr, "torch_threads": 1}, rows=rows,
                quick=args.quick)


if __name__ == "__main__":
    main()

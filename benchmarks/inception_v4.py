"""Inference: vislearn Inception-v4 / Inception-ResNet-v2 vs timm, one process, same weights and inputs.

Four ways to run each network, timed interleaved (``_common.interleaved``) on the same batch:

* ``ours``: our model as built (fp32, contiguous NCHW, BN as separate layers; input validation and
  normalisation inside ``forward``);
* ``ours_fast``: ``vislearn.inference.optimize(ours)`` (BN folded, channels_last, bf16 autocast where
  the CPU has native bf16);
* ``timm``: ``timm.create_model(name)`` in eval mode, fp32, on pre-normalised input;
* ``timm_best``: timm with channels_last weights and inputs under bf16 autocast (what a timm user
  would do for speed; timm has no BN folding);
* ``ours_fused`` (CPU): ``ours_fast`` plus :func:`vislearn.nn.fuse.fuse_conv_act` — every convolution on
  weights packed once for oneDNN, with its ReLU (and the residual blocks' scaled sum and ReLU) fused in;
* ``timm_compiled`` (``--compile``): ``torch.compile(timm_best)`` (inductor), the second peer of issue 20.

Timing: one torch thread by default and ``--clock process`` (this process's CPU seconds), so a shared
machine's load does not enter the ratios; the machine's measured bf16/fp32 peak (``measured_peak``, same
clock) and each configuration's achieved GFLOP/s (2 × MACs of ``count_macs``) give the roofline line.

Ours loads timm's random weights through the registered converter, so the logits are compared too.

Run from the repository root::

    .venv/bin/python benchmarks/inception_v4.py [--models inception_v4 inception_resnet_v2] [--batch 16]
    .venv/bin/python benchmarks/inception_v4.py --quick          # smoke run, seconds, numbers meaningless
    python benchmarks/inception_v4.py --device cuda --batch 32 --clock wall --threads 0 --name inception_v4_cuda

writes ``results/bench_inception_v4.json`` (or ``bench_NAME.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import torch
from _common import (
    CLOCKS,
    add_common_args,
    apply_common_args,
    cpu_flags,
    goal_row,
    interleaved,
    measured_peak,
    roofline,
    write_bench,
)


def bench_model(name: str, batch: int, size: int, rounds: int, device: str = "cpu", *, clock=time.perf_counter,
                compile_peer: bool = False) -> dict:
    """Time ours / ours_fast / ours_fused / timm / timm_best (/ timm_compiled) for one model; logits
    differences, MACs."""
    import timm

    from vislearn.inference import optimize
    from vislearn.models import create_model
    from vislearn.nn.fuse import can_fuse
    from vislearn.nn.profile import count_macs

    torch.manual_seed(0)
    peer = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # non-trivial BN statistics so that folding has something to fold
        for m in peer.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "timm.pth")
        torch.save(peer.state_dict(), path)
        ours = create_model(name, weights=path).eval()
    dev = torch.device(device)
    macs = count_macs(ours, size)
    ours, peer = ours.to(dev), peer.to(dev)
    fast = optimize(ours, fuse=False)
    fused = None
    if dev.type == "cpu" and can_fuse() and fast.dtype in (None, torch.bfloat16):
        fused = optimize(ours)  # optimize() fuses by default on the CPU (vislearn.nn.fuse)
    best = timm.create_model(name, pretrained=False).eval()
    best.load_state_dict(peer.state_dict())
    best = best.to(dev, memory_format=torch.channels_last)

    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dev)
    xn = (x - 0.5) / 0.5  # timm's IMAGENET_INCEPTION mean/std
    xn_cl = xn.contiguous(memory_format=torch.channels_last)
    bf16 = fast.dtype == torch.bfloat16

    def sync(out):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    def run_timm_best():
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return sync(best(xn_cl).float())

    def run(model, inp):
        def f():
            with torch.no_grad():
                return sync(model(inp))
        return f

    fns = {"ours": run(ours, x), "ours_fast": run(fast, x), "timm": run(peer, xn), "timm_best": run_timm_best}
    if fused is not None:
        fns["ours_fused"] = run(fused, x)
    if compile_peer:
        compiled = torch.compile(best)

        def run_timm_compiled():
            ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with torch.no_grad(), ctx:
                return sync(compiled(xn_cl).float())
        fns["timm_compiled"] = run_timm_compiled
    outs = {k: f() for k, f in fns.items()}
    t = interleaved(fns, warmup=1, rounds=rounds, clock=clock)
    ref = outs["timm"]
    gflop = 2 * macs * batch / 1e9
    ours_best = min(("ours_fast", "ours_fused"), key=lambda k: t.get(k, float("inf")))
    return {
        "params_ours": sum(p.numel() for p in ours.parameters()),
        "params_timm": sum(p.numel() for p in peer.parameters()),
        "gmacs": macs / 1e9, "gflop_per_batch": gflop,
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "batch": batch, "image_size": size, "autocast": "bf16" if bf16 else "fp32",
        "seconds": t,
        "images_per_s": {k: batch / v for k, v in t.items()},
        "max_abs_diff_vs_timm_fp32": {k: float((v - ref).abs().max()) for k, v in outs.items() if k != "timm"},
        "ratio_ours_over_timm": t["ours"] / t["timm"],
        "ratio_ours_fast_over_timm_best": t["ours_fast"] / t["timm_best"],  # a time ratio: < 1 is faster
        "speedup_ours_fast_over_ours": t["ours"] / t["ours_fast"],
        "ours_best": ours_best,
        "speedup_over_timm_best": {k: t["timm_best"] / v for k, v in t.items()},  # > 1 is faster than timm_best
        **({"speedup_ours_best_over_timm_compiled": t["timm_compiled"] / t[ours_best]} if compile_peer else {}),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["inception_v4", "inception_resnet_v2"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=299)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="process",
                   help="process: this process's CPU seconds (shared CPU, one thread); wall: elapsed time")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(timm_best) (minutes to compile)")
    p.add_argument("--name", default="inception_v4", help="writes results/bench_NAME.json")
    add_common_args(p)
    args = p.parse_args(argv)
    apply_common_args(args)
    if args.quick:  # a smoke run: one image at the smallest valid size, one round, the first model
        args.batch, args.size, args.rounds, args.models = 1, 75, 1, args.models[:1]
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    peak = measured_peak(args.device, repeat=1 if args.quick else 5, clock=clock)
    numbers = {"threads": torch.get_num_threads(), "clock": args.clock, "peak": peak}
    parts, rows = [], []
    amx = cpu_flags()["amx"] if args.device == "cpu" else None
    for name in args.models:
        r = bench_model(name, args.batch, args.size, args.rounds, args.device, clock=clock,
                        compile_peer=args.compile)
        pk = peak["bf16_gflops"] if r["autocast"] == "bf16" else peak["fp32_gflops"]
        r["roofline"] = {k: roofline(r["gflop_per_batch"], v, pk) for k, v in r["seconds"].items()}
        numbers[name] = r
        best, sp = r["ours_best"], r["speedup_over_timm_best"]
        frac = r["roofline"][best]["fraction_of_peak"]
        parts.append(f"{name}: {best} {sp[best]:.2f}x timm_best (ours_fast {sp['ours_fast']:.2f}x), "
                     f"{frac:.0%} of the measured {r['autocast']} peak (timm_best "
                     f"{r['roofline']['timm_best']['fraction_of_peak']:.0%})")
        if args.device == "cpu":
            goal = ">= 1.3x timm_best (AMX)" if amx else ">= 90% of the bf16 peak (no AMX)"
            met = sp[best] >= 1.3 if amx else frac >= 0.9
        else:
            goal, met = ">= 1.0x timm_best", sp[best] >= 1.0
        rows.append(goal_row(f"{name} inference, batch {args.batch} at {args.size}, {args.device}",
                             "timm channels_last + bf16 eager", sp[best], goal, met,
                             fraction_of_peak=frac, ours=best))
        if args.compile:
            rc = r["speedup_ours_best_over_timm_compiled"]
            rows.append(goal_row(f"{name} inference, batch {args.batch} at {args.size}, {args.device}",
                                 "timm + torch.compile", rc, ">= 1.0x", rc >= 1.0, ours=best))
        print(parts[-1], flush=True)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    summary = (f"batch {args.batch} at {args.size}px, {where}, {numbers['threads']} thread(s), {args.clock} clock: "
               + "; ".join(parts))
    write_bench(args.name, summary, numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()

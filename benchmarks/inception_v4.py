"""Inference: vislearn Inception-v4 / Inception-ResNet-v2 vs timm, one process, same weights and inputs.

Four ways to run each network, timed interleaved (``_common.interleaved``) on the same batch:

* ``ours``: our model as built (fp32, contiguous NCHW, BN as separate layers; input validation and
  normalisation inside ``forward``);
* ``ours_fast``: ``vislearn.inference.optimize(ours)`` (BN folded, channels_last, bf16 autocast where
  the CPU has native bf16);
* ``timm``: ``timm.create_model(name)`` in eval mode, fp32, on pre-normalised input;
* ``timm_best``: timm with channels_last weights and inputs under bf16 autocast (what a timm user
  would do for speed; timm has no BN folding).

Ours loads timm's random weights through the registered converter, so the logits are compared too.

Run from the repository root::

    .venv/bin/python benchmarks/inception_v4.py [--models inception_v4 inception_resnet_v2] [--batch 4]
    python benchmarks/inception_v4.py --device cuda --batch 32 --name inception_v4_cuda   # on a GPU

writes ``results/bench_inception_v4.json`` (or ``bench_NAME.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

import torch
from _common import interleaved, write_bench


def bench_model(name: str, batch: int, size: int, rounds: int, device: str = "cpu") -> dict:
    """Time ours / ours_fast / timm / timm_best for one model name; logits differences and costs."""
    import timm

    from vislearn.inference import optimize
    from vislearn.models import create_model
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
    macs = count_macs(ours, 299)
    ours, peer = ours.to(dev), peer.to(dev)
    fast = optimize(ours)
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
    outs = {k: f() for k, f in fns.items()}
    t = interleaved(fns, warmup=1, rounds=rounds)
    ref = outs["timm"]
    return {
        "params_ours": sum(p.numel() for p in ours.parameters()),
        "params_timm": sum(p.numel() for p in peer.parameters()),
        "gmacs_299": macs / 1e9,
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "batch": batch, "image_size": size, "autocast": "bf16" if bf16 else "fp32",
        "seconds": t,
        "images_per_s": {k: batch / v for k, v in t.items()},
        "max_abs_diff_vs_timm_fp32": {k: float((v - ref).abs().max()) for k, v in outs.items() if k != "timm"},
        "ratio_ours_over_timm": t["ours"] / t["timm"],
        "ratio_ours_fast_over_timm_best": t["ours_fast"] / t["timm_best"],
        "speedup_ours_fast_over_ours": t["ours"] / t["ours_fast"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["inception_v4", "inception_resnet_v2"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=299)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--name", default="inception_v4", help="writes results/bench_NAME.json")
    args = p.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    numbers = {"threads": torch.get_num_threads()}
    parts = []
    for name in args.models:
        r = bench_model(name, args.batch, args.size, args.rounds, args.device)
        numbers[name] = r
        parts.append(f"{name}: ours/timm {r['ratio_ours_over_timm']:.2f}x time, ours_fast/timm_best "
                     f"{r['ratio_ours_fast_over_timm_best']:.2f}x ({r['autocast']}), fast path "
                     f"{r['speedup_ours_fast_over_ours']:.2f}x faster than ours; {r['gmacs_299']:.2f} GMACs")
        print(parts[-1], flush=True)
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    write_bench(args.name, f"batch {args.batch} at {args.size}px, {where}: " + "; ".join(parts), numbers)


if __name__ == "__main__":
    main()

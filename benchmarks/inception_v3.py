"""Inception inference and training throughput: vislearn vs timm, same weights, same inputs, one process.

For each model name (default ``inception_v3``; any name that both vislearn's registry and timm know,
e.g. ``inception_v4``, ``inception_resnet_v2``, and whose timm state dict our converter loads):

* inference, batch ``--batch`` (16) at 299 px, timed interleaved (``_common.interleaved``):
  ``timm`` (fp32, NCHW, on pre-normalised input), ``timm_best`` (channels_last + bf16 autocast),
  ``ours`` (fp32 as built: validation + normalisation inside ``forward``), ``ours_fast``
  (``vislearn.inference.optimize``: BN folded, channels_last, bf16 where the CPU has native bf16);
* agreement: top-1 of ``ours_fast`` vs ours in fp32 on ``--agree`` (256) random inputs, plus the
  number of distinct predicted classes (a vacuous comparison would predict one class for all);
* ``ours_fused``: ``ours_fast`` plus :func:`vislearn.nn.fuse.fuse_conv_act` (CPU: weights packed once for
  oneDNN, ReLU fused into each convolution);
* training step, batch ``--train-batch`` at 299 px: **the engine's** step (``Trainer.train_step`` on the
  recipe's ``ClassifierModule``: label smoothing 0.1, aux head on with weight 0.4, SGD momentum 0.9,
  no clipping/EMA) vs timm's plain loop with the same model weights, loss, aux head and optimizer
  (``zero_grad(set_to_none=True)``), both fp32 NCHW and both channels_last + bf16 autocast; with
  ``--compile`` also the engine's ``compile=True`` step vs ``torch.compile`` of timm's model;
* the data path beside it: decode + the recipe's training augmentation (``benchmarks/data.py``'s
  uint8 path, generated 500×375 JPEGs, one process, CPU time per image) against the training step's
  time per image, i.e. how many loader workers keep this step fed;
* the roofline line: the machine's measured fp32/bf16 peak (``measured_peak``, same clock) and each
  inference configuration's achieved GFLOP/s (2 × MACs).

Timing: ``--threads 1`` and ``--clock process`` (CPU seconds of this process) by default, so the load of
a shared machine stays out of the ratios.

The weights are timm's random initialisation with BN statistics calibrated on one batch (so logits
depend on the input), loaded into ours through the registered converter.

    .venv/bin/python benchmarks/inception_v3.py [--models inception_v3] [--threads 1] [--name NAME] [--compile]
    .venv/bin/python benchmarks/inception_v3.py --quick     # smoke run, well under a minute, numbers meaningless

writes ``results/bench_inception_v3.json`` (or ``bench_NAME.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import torch
import torch.nn as nn
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


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BN's running statistics to those of one batch (a train-mode pass with momentum 1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def train_steps(name: str, batch: int, size: int, rounds: int, dev: torch.device, bf16: bool, clock, g,
                mean: torch.Tensor, std: torch.Tensor, compile_step: bool) -> dict[str, float]:
    """Seconds per training step: the engine's ``Trainer.train_step`` vs timm's plain loop, same settings."""
    import timm
    from torch.utils.data import TensorDataset

    from vislearn.models import create_model
    from vislearn.recipes.classification import ClassifierModule
    from vislearn.train import Task, TrainConfig, Trainer

    smoothing, aux_weight, lr, momentum = 0.1, 0.4, 1e-4, 0.9
    xt = torch.rand(batch, 3, size, size, generator=g)
    yt = torch.randint(0, 1000, (batch,), generator=g)
    xtn = (xt - mean) / std
    init = create_model(name, aux_logits=True).state_dict()

    def engine_step(precision: str, cl: bool, compile: bool = False):
        model = create_model(name, aux_logits=True)
        model.load_state_dict(init)
        cfg = TrainConfig(steps=10**6, batch_size=batch, lr=lr, optimizer="sgd", momentum=momentum,
                          precision=precision, channels_last=cl, compile=compile, device=dev.type,
                          ckpt_minutes=0, log_every=10**6)
        trainer = Trainer(cfg, Task(ClassifierModule(model, smoothing, aux_weight), TensorDataset(xt, yt)),
                          progress=False)
        trainer.module.train()
        return lambda: trainer.train_step([(xt, yt)])

    def timm_step(cl: bool, amp: bool, compile: bool = False):
        m = timm.create_model(name, pretrained=False, aux_logits=True)
        m.load_state_dict(init)
        m = m.to(dev, memory_format=torch.channels_last if cl else torch.contiguous_format).train()
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum)
        run = torch.compile(m) if compile else m
        xin = xtn.to(dev).contiguous(memory_format=torch.channels_last) if cl else xtn.to(dev)
        y = yt.to(dev)

        def step():
            ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
            with ctx:
                out, aux = run(xin)
                loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=smoothing) \
                    + aux_weight * nn.functional.cross_entropy(aux.float(), y, label_smoothing=smoothing)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        return step

    fns = {"ours_fp32": engine_step("fp32", False), "timm_fp32": timm_step(False, False),
           "ours_bf16_cl": engine_step("bf16" if bf16 else "fp32", True), "timm_bf16_cl": timm_step(True, bf16)}
    if compile_step:
        fns["ours_compiled"] = engine_step("bf16" if bf16 else "fp32", True, compile=True)
        fns["timm_compiled"] = timm_step(True, bf16, compile=True)
    return interleaved(fns, warmup=2 if compile_step else 1, rounds=rounds, clock=clock)


def data_path_ms(size: int, quick: bool) -> dict[str, float]:
    """CPU milliseconds per image of decoding + the training augmentation (``benchmarks/data.py``)."""
    from pathlib import Path

    from data import half_ratios, make_folder

    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp), 8, *((64, 48) if quick else (500, 375)))
        return half_ratios(root, size, rounds=1 if quick else 5)


def bench_model(name: str, batch: int, size: int, rounds: int, agree_n: int, train_batch: int,
                device: str = "cpu", *, clock=time.perf_counter, compile_step: bool = False) -> dict:
    import timm

    from vislearn.inference import optimize
    from vislearn.models import create_model
    from vislearn.nn.fuse import can_fuse
    from vislearn.nn.profile import count_macs

    dev = torch.device(device)
    torch.manual_seed(0)
    peer = timm.create_model(name, pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    calibrate_bn(peer, torch.rand(8, 3, size, size, generator=g) * 2 - 1)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "timm.pth")
        torch.save(peer.state_dict(), path)
        try:
            ours = create_model(name, weights=path).eval()
        except ValueError:  # our default has the aux head; timm's default checkpoint has none
            ours = create_model(name, weights=path, aux_logits=False).eval()
    mean = torch.tensor(ours.normalization[0]).view(1, 3, 1, 1)
    std = torch.tensor(ours.normalization[1]).view(1, 3, 1, 1)
    ours, peer = ours.to(dev), peer.to(dev)
    fast = optimize(ours, fuse=False)
    fused = None
    if dev.type == "cpu" and can_fuse() and fast.dtype in (None, torch.bfloat16):
        fused = optimize(ours)  # optimize() fuses by default on the CPU (vislearn.nn.fuse)
    macs = count_macs(ours, size)
    best = timm.create_model(name, pretrained=False).eval()
    best.load_state_dict(peer.state_dict())
    best = best.to(dev, memory_format=torch.channels_last)
    bf16 = fast.dtype == torch.bfloat16

    def sync(out):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    x = torch.rand(batch, 3, size, size, generator=g).to(dev)
    xn = ((x - mean.to(dev)) / std.to(dev))
    xn_cl = xn.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        max_diff = float((ours(x) - _logits(peer(xn))).abs().max())

    def timm_default():
        with torch.no_grad():
            return sync(_logits(peer(xn)))

    def timm_best():
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return sync(_logits(best(xn_cl)).float())

    def ours_default():
        with torch.no_grad():
            return sync(ours(x))

    def ours_fast():
        return sync(fast(x))

    fns = {"timm": timm_default, "timm_best": timm_best, "ours": ours_default, "ours_fast": ours_fast}
    if fused is not None:
        fns["ours_fused"] = lambda: sync(fused(x))
    t = interleaved(fns, warmup=1, rounds=rounds, clock=clock)
    ips = {k: batch / v for k, v in t.items()}

    # top-1 agreement of the fast path with fp32 on random inputs
    agree, classes, n, margins, flip_margins = 0, set(), 0, [], []
    with torch.no_grad():
        for i in range(0, agree_n, batch):
            xi = torch.rand(min(batch, agree_n - i), 3, size, size, generator=g).to(dev)
            z = ours(xi)
            top2 = z.topk(2, 1).values
            margin = (top2[:, 0] - top2[:, 1]) / z.abs().amax(1)  # top-1 lead relative to the logit scale
            ref, got = z.argmax(1), fast(xi).argmax(1)
            agree += int((ref == got).sum())
            classes.update(ref.tolist())
            margins += margin.tolist()
            flip_margins += margin[ref != got].tolist()
            n += xi.shape[0]

    tt = train_steps(name, train_batch, size, rounds, dev, bf16, clock, g, mean, std, compile_step)
    train_ips = {k: train_batch / v for k, v in tt.items()}
    return {
        "images_per_s": ips,
        "fast_vs_timm_best": ips["ours_fast"] / ips["timm_best"],
        "fast_vs_timm": ips["ours_fast"] / ips["timm"],
        "ours_vs_timm": ips["ours"] / ips["timm"],
        "max_abs_logit_diff_ours_vs_timm_fp32": max_diff,
        "top1_agreement_fast_vs_fp32": agree / n, "agreement_inputs": n, "distinct_top1_classes": len(classes),
        "median_relative_top1_margin_fp32": float(torch.tensor(margins).median()),
        "max_relative_top1_margin_of_flips": max(flip_margins, default=0.0),
        "train_images_per_s": train_ips,
        "train_seconds_per_step": tt,
        "train_ours_vs_timm_fp32": train_ips["ours_fp32"] / train_ips["timm_fp32"],
        "train_ours_vs_timm_bf16_cl": train_ips["ours_bf16_cl"] / train_ips["timm_bf16_cl"],
        **({"train_ours_vs_timm_compiled_bf16_cl": train_ips["ours_compiled"] / train_ips["timm_compiled"]}
           if compile_step else {}),
        "inference_seconds": t, "gmacs": macs / 1e9, "gflop_per_batch": 2 * macs * batch / 1e9,
        "fast_precision": str(fast.dtype), "batch": batch, "train_batch": train_batch, "size": size,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["inception_v3"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--agree", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="process",
                    help="process: this process's CPU seconds (shared CPU, one thread); wall: elapsed time")
    ap.add_argument("--compile", action="store_true", help="also time the compiled training steps (minutes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="inception_v3", help="writes results/bench_NAME.json")
    add_common_args(ap)
    args = ap.parse_args(argv)
    apply_common_args(args)
    if args.quick:  # a smoke run: tiny batches (at 299 px: the aux head's 5×5 conv needs a 17×17 map), 1 round
        args.batch, args.rounds, args.agree, args.train_batch = 1, 1, 2, 2  # 2: the aux head BN at 1×1
        args.models = args.models[:1]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    peak = measured_peak(args.device, repeat=1 if args.quick else 5, clock=clock)
    numbers = {m: bench_model(m, args.batch, args.size, args.rounds, args.agree, args.train_batch, args.device,
                              clock=clock, compile_step=args.compile)
               for m in args.models}
    numbers["threads"], numbers["clock"], numbers["peak"] = torch.get_num_threads(), args.clock, peak
    numbers["data_path"] = data_path_ms(args.size, args.quick)
    numbers["goals"] = {"fast_vs_timm_best": ">= 1.4", "top1_agreement_fast_vs_fp32": ">= 0.99",
                        "train_ours_vs_timm_bf16_cl": ">= 1.2"}
    amx = cpu_flags()["amx"] if args.device == "cpu" else None
    parts, rows = [], []
    for m in args.models:
        r = numbers[m]
        ips = r["images_per_s"]
        bf16 = r["fast_precision"] == "torch.bfloat16"
        pk = peak["bf16_gflops"] if bf16 else peak["fp32_gflops"]
        r["roofline"] = {k: roofline(r["gflop_per_batch"], v, pk) for k, v in r["inference_seconds"].items()}
        best = max(("ours_fast", "ours_fused"), key=lambda k: ips.get(k, 0.0))
        sp, frac = ips[best] / ips["timm_best"], r["roofline"][best]["fraction_of_peak"]
        goal = ">= 1.3x timm_best (AMX)" if amx else ">= 90% of the bf16 peak (no AMX)"
        met = (sp >= 1.3 if amx else frac >= 0.9) if args.device == "cpu" else sp >= 1.0
        rows.append(goal_row(f"{m} inference, batch {args.batch} at {args.size}, {args.device}",
                             "timm channels_last + bf16 eager", sp, goal, met, fraction_of_peak=frac, ours=best))
        tr = r["train_ours_vs_timm_bf16_cl"]
        rows.append(goal_row(f"{m} train step, batch {args.train_batch}, bf16 + channels_last, {args.device}",
                             "timm, same settings (eager)", tr, ">= 1.2x", tr >= 1.2, ours="engine train_step"))
        if args.compile:
            tc = r["train_ours_vs_timm_compiled_bf16_cl"]
            rows.append(goal_row(f"{m} train step, batch {args.train_batch}, bf16 + cl, compiled, {args.device}",
                                 "timm + torch.compile, same settings", tc, ">= 1.2x", tc >= 1.2,
                                 ours="engine train_step, compile=True"))
        step_ms = 1e3 * r["train_seconds_per_step"]["ours_bf16_cl"] / args.train_batch
        data_ms = numbers["data_path"]["path_new_ms"]
        r["data_path_workers_to_feed_step"] = data_ms / step_ms
        parts.append(
            f"{m} bs{args.batch}@{args.size} ({args.device}, {numbers['threads']} thr, {args.clock} clock): "
            f"{best}/timm_best {sp:.2f}x, {frac:.0%} of the measured peak (timm_best "
            f"{r['roofline']['timm_best']['fraction_of_peak']:.0%}), fast/timm_best {r['fast_vs_timm_best']:.2f}x, "
            f"top-1 agreement {r['top1_agreement_fast_vs_fp32']:.3f} ({r['distinct_top1_classes']} classes); "
            f"train engine/timm {r['train_ours_vs_timm_fp32']:.2f}x fp32, {tr:.2f}x bf16+cl"
            + (f", {r['train_ours_vs_timm_compiled_bf16_cl']:.2f}x compiled" if args.compile else "")
            + f"; data path {data_ms:.1f} ms/img vs step {step_ms:.0f} ms/img")
    write_bench(args.name, " | ".join(parts), numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()

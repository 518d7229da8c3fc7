"""Inference fast path vs what a speed-minded timm user would do: eager bf16, torch.compile, int8.

For each network (BN-Inception at 224, Inception-v3 / v4 / Inception-ResNet-v2 at 299, batch 16), in
one process, on the same input batch and the same weights (timm's random weights loaded into ours
through the registered converter), timed interleaved (``_common.interleaved``):

* ``peer_bf16``: timm, channels_last weights and input, bf16 autocast, eager (the main peer; timm has
  no BN folding);
* ``peer_compile``: the same model through ``torch.compile`` (inductor, with weight freezing, the
  strongest CPU setting a user can pick);
* ``ours``: ``vislearn.inference.optimize(model)`` (BN folded, channels_last, bf16 autocast), eager;
* ``ours_compile``: ``optimize(model, compile=True)``;
* ``ours_int8``: ``optimize(model, precision="int8", calibration=...)`` (PT2E static quantization,
  compiled), calibrated on 4 random batches.

BN-Inception has no timm twin: its peers are our own unfolded model run the timm way (channels_last +
bf16 autocast, eager and compiled), and ``ours_fp32_nchw`` (eager, fp32, NCHW) is reported beside.

Timing uses ``time.process_time`` (this process's CPU seconds) with one torch thread by default: on a
shared, loaded machine wall time measures the neighbours; CPU time measures the work. Compile time
(the first call of each compiled configuration) is measured separately and reported. The roofline
line divides each configuration's GFLOP/s (2 × MACs from ``count_macs``) by the bf16 peak measured in
this process (``_common.measured_peak``; int8 is compared with the same bf16 peak: the int8 peak is
higher where VNNI/AMX exist, so that fraction can exceed 1).

Accuracy of the reduced precisions (not measurable on random weights, where top-1 agreement is
meaningless): BN-Inception trained by our ``classify`` recipe on the embedded shapes at 32 px (cached
under ``vislearn.metrics.features.cache_dir()/inference`` after the first run), top-1 of fp32, bf16
and int8 on its 1,000-image test set.

Run from the repository root::

    .venv/bin/python benchmarks/inference.py [--models bn_inception inception_v3] [--batch 16] [--quick]

writes ``results/bench_inference.json``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import tempfile
import time
import warnings

import torch
from _common import (
    CLOCKS,
    add_common_args,
    apply_common_args,
    goal_row,
    interleaved,
    measured_peak,
    roofline,
    write_bench,
)

SIZES = {"bn_inception": 224, "inception_v3": 299, "inception_v4": 299, "inception_resnet_v2": 299}
ACCURACY_RECIPE = {"model": "bn_inception", "dataset": "shapes", "image_size": 32, "steps": 400, "batch_size": 64,
                   "lr": 0.1, "optimizer": "sgd", "momentum": 0.9, "schedule": "cosine", "weight_decay": 5e-4,
                   "seed": 0, "log_every": 0}


def _frozen(fn):
    """``fn`` run with inductor's freezing flag (the peer gets the same compile setting as ours)."""
    def call(*a):
        with torch._inductor.config.patch(freezing=True):
            return fn(*a)
    return call


def _random_bn(model: torch.nn.Module) -> None:
    with torch.no_grad():  # non-trivial BN statistics so that folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)


def _models(name: str):
    """(ours, timm's model or None) with the same weights."""
    import timm

    from vislearn.models import create_model

    torch.manual_seed(0)
    if name == "bn_inception":  # no timm twin: the peer is our own model, unfolded, run the timm way
        ours = create_model(name).eval()
        _random_bn(ours)
        return ours, None
    peer = timm.create_model(name, pretrained=False).eval()
    _random_bn(peer)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "timm.pth")
        torch.save(peer.state_dict(), path)
        try:
            ours = create_model(name, weights=path).eval()
        except ValueError:  # our Inception-v3 default has the aux head; timm's has none
            ours = create_model(name, weights=path, aux_logits=False).eval()
    return ours, peer


def _first_call(fn) -> dict[str, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def top_ops(fn, n: int = 6) -> list[dict]:
    """The ``n`` operators with the most self CPU time in one call of ``fn`` (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:n]]


def bench_model(name: str, batch: int, size: int, rounds: int, clock, peak: float, compile_: bool) -> dict:
    from vislearn.inference import agreement, optimize
    from vislearn.nn.profile import count_macs

    ours, peer = _models(name)
    macs = count_macs(ours, size)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g)
    calib = [torch.rand(batch, 3, size, size, generator=g) for _ in range(4)]
    if peer is None:  # the timm way, on our unfolded model: it normalises inside, takes [0, 1] input
        peer_model = copy.deepcopy(ours).to(memory_format=torch.channels_last)
        peer_x = x.contiguous(memory_format=torch.channels_last)
        peer_name = "our unfolded model, channels_last + bf16 autocast (no timm twin)"
    else:
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in ours.normalization)
        peer_model = peer.to(memory_format=torch.channels_last)
        peer_x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        peer_name = "timm channels_last + bf16 autocast"

    def peer_call(model):
        def f():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(peer_x).float()
        return f

    fns = {"peer_bf16": peer_call(peer_model)}
    fast = optimize(ours)
    fns["ours"] = lambda: fast(x)
    compile_times = {}
    if compile_:
        peer_compiled = _frozen(torch.compile(peer_model))
        fns["peer_compile"] = peer_call(peer_compiled)
        fast_c = optimize(ours, compile=True)
        fns["ours_compile"] = lambda: fast_c(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compile=False (--quick) warns that the reference int8 graph is slow
        t0 = time.process_time()
        q = optimize(ours, precision="int8", calibration=calib, compile=compile_)
    compile_times["int8_quantize_cpu_s"] = time.process_time() - t0
    fns["ours_int8"] = lambda: q(x)
    if peer is None:
        fp32 = optimize(ours, fold=False, channels_last=False, precision="fp32")
        fns["ours_fp32_nchw"] = lambda: fp32(x)
    for k in ("peer_compile", "ours_compile", "ours_int8"):
        if k in fns and (k != "ours_int8" or compile_):
            compile_times[k] = _first_call(fns[k])
    reference = optimize(ours, fold=False, channels_last=False, precision="fp32")
    agree = {k: agreement(reference, lambda _x, f=f: f(), [x]) for k, f in fns.items()}
    t = interleaved(fns, warmup=1, rounds=rounds, clock=clock)
    profiles = {k: top_ops(fns[k]) for k in ("peer_bf16", "ours", "ours_compile", "ours_int8") if k in fns}
    gflop = 2 * macs * batch / 1e9
    out = {"batch": batch, "image_size": size, "gmacs_per_image": macs / 1e9, "peer": peer_name,
           "seconds": t, "images_per_s": {k: batch / v for k, v in t.items()},
           "roofline_vs_bf16_peak": {k: roofline(gflop, v, peak) for k, v in t.items()},
           "compile": compile_times, "top_ops": profiles, "agreement_vs_fp32_random_weights": {
               k: {m: a[m] for m in ("max_rel_error", "mean_cosine", "top1_agreement")} for k, a in agree.items()},
           "speedup_ours_over_peer_bf16": t["peer_bf16"] / t["ours"],
           "speedup_int8_over_peer_bf16": t["peer_bf16"] / t["ours_int8"]}
    if compile_:
        out["speedup_ours_compile_over_peer_compile"] = t["peer_compile"] / t["ours_compile"]
        out["speedup_ours_compile_over_peer_bf16"] = t["peer_bf16"] / t["ours_compile"]
    return out


def trained_reference(steps: int | None = None, quick: bool = False):
    """BN-Inception trained by the classify recipe on the embedded shapes (32 px), from the cache or trained now."""
    from vislearn.io import atomic_write_json, save_weights
    from vislearn.metrics.features import cache_dir
    from vislearn.models.registry import create_model_from_weights
    from vislearn.recipes import run

    cfg = dict(ACCURACY_RECIPE, **({"steps": steps} if steps else {}))
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / "inference"
    weights, meta = folder / f"bn_inception_shapes32-{key}.safetensors", folder / f"bn_inception_shapes32-{key}.json"
    if weights.is_file() and meta.is_file() and not quick:
        return create_model_from_weights(weights).eval(), {**json.loads(meta.read_text()), "loaded_from_cache": True}
    t0 = time.process_time()
    result = run("classify", "quick", cfg, progress=False)
    model = result.task.model.eval()
    info = {"recipe": "classify", "config": cfg, "test_top1": float(result.final_metrics["top1"]),
            "train_cpu_s": time.process_time() - t0}
    if not quick:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(model, weights)
        atomic_write_json(meta, info)
    return model, {**info, "loaded_from_cache": False}


def accuracy(quick: bool) -> dict:
    """top-1 of fp32, bf16 (optimize) and int8 (calibrated on 256 train images) on the shapes test set."""
    from vislearn.data import embedded
    from vislearn.inference import agreement, optimize

    model, info = trained_reference(steps=5 if quick else None, quick=quick)
    size = ACCURACY_RECIPE["image_size"]
    train = embedded.shapes_classification("train", image_size=size)
    test = embedded.shapes_classification("test", image_size=size)
    n = 100 if quick else len(test)
    calib = [torch.stack([train[i][0] for i in range(j, j + 64)]) for j in range(0, 64 if quick else 256, 64)]
    batches = [(torch.stack([test[i][0] for i in range(j, min(j + 100, n))]),
                torch.tensor([int(test[i][1]) for i in range(j, min(j + 100, n))])) for j in range(0, n, 100)]
    reference = optimize(model, fold=False, channels_last=False, precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = optimize(model, precision="int8", calibration=calib, compile=not quick)
    out = {"model": info, "test_images": n,
           "bf16": agreement(reference, optimize(model, precision="bf16"), batches),
           "int8": agreement(reference, int8, batches)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SIZES))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="process")
    p.add_argument("--no-accuracy", action="store_true")
    add_common_args(p)
    args = p.parse_args(argv)
    apply_common_args(args)
    torch.set_num_threads(args.threads)
    from _common import cpu_flags

    flags = cpu_flags()
    clock = CLOCKS[args.clock]
    peak = measured_peak(repeat=2 if args.quick else 5, clock=clock)
    numbers: dict = {"clock": "time.process_time (CPU s of this process)" if args.clock == "process" else "wall",
                     "threads": args.threads, "peak": peak, "cpu": flags}
    rows, parts = [], []
    models = ["bn_inception"] if args.quick else args.models
    for name in models:
        size, batch, rounds = (32, 2, 1) if args.quick else (SIZES[name], args.batch, args.rounds)
        r = bench_model(name, batch, size, rounds, clock, peak["bf16_gflops"], compile_=not args.quick)
        numbers[name] = r
        frac = r["roofline_vs_bf16_peak"]
        best = max(("ours", "ours_compile"), key=lambda k: frac[k]["fraction_of_peak"] if k in frac else -1)
        rows.append(goal_row(f"{name} inference, batch {batch} at {size}", r["peer"],
                             frac[best]["fraction_of_peak"], "≥ 90% of the measured bf16 peak (no AMX)",
                             None if flags["amx"] else frac[best]["fraction_of_peak"] >= 0.9,
                             config=best, peer_fraction=frac["peer_bf16"]["fraction_of_peak"]))
        if "speedup_ours_compile_over_peer_compile" in r:
            s = r["speedup_ours_compile_over_peer_compile"]
            rows.append(goal_row(f"{name} inference compiled", "same peer + torch.compile (freezing)", s,
                                 "≥ 1.0× timm+compile", s >= 1.0))
        s8 = r["speedup_int8_over_peer_bf16"]
        rows.append(goal_row(f"{name} inference int8", r["peer"], s8, "≥ 2× timm bf16 eager",
                             s8 >= 2.0 if (flags["vnni"] or flags["amx"]) else None))
        parts.append(f"{name}@{size}: ours {r['speedup_ours_over_peer_bf16']:.2f}x peer bf16"
                     + (f", compiled {r['speedup_ours_compile_over_peer_compile']:.2f}x peer compiled"
                        if "speedup_ours_compile_over_peer_compile" in r else "")
                     + f", int8 {s8:.2f}x peer bf16; best {frac[best]['fraction_of_peak']:.0%} of bf16 peak")
        print(parts[-1], flush=True)
    if not args.no_accuracy:
        acc = accuracy(args.quick)
        numbers["accuracy"] = acc
        for prec in ("bf16", "int8"):
            a = acc[prec]
            what = f"{prec} top-1 drop (BN-Inception trained on shapes, {acc['test_images']} test images)"
            rows.append(goal_row(what, "fp32", a["top1_drop_points"], "≤ 0.5 points", a["top1_drop_points"] <= 0.5,
                                 mean_cosine=a["mean_cosine"]))
        parts.append(f"top-1 fp32 {acc['int8']['top1_reference']:.3f}, bf16 {acc['bf16']['top1_candidate']:.3f}, "
                     f"int8 {acc['int8']['top1_candidate']:.3f}")
    where = f"{flags['cpu']}, {args.threads} thread(s), AMX {'yes' if flags['amx'] else 'no'}, " \
            f"VNNI {'yes' if flags['vnni'] else 'no'}, {args.clock} clock"
    write_bench("inference", f"{where}: " + "; ".join(parts), numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()

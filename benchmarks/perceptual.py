"""Perceptual metric throughput: ours vs ``lpips`` VGG with the same backbone, same images, one process.

Workload: one reference photo (scikit-image's embedded ``astronaut`` at 256×256, ``coffee`` at
1024×768, resized) compared with N mildly distorted copies (noise, blur, JPEG, contrast; N=4 at
256², N=2 at 1024×768), the common case of scoring codec/restoration outputs. Every configuration
gets the same images and the same random VGG-16 trunk (loaded into lpips by the tests' oracle,
``tests/_oracles.py``), timed interleaved in one process. Configurations:

* ``lpips_fp32``: ``lpips.LPIPS(net="vgg")(ref.expand(N), dist, normalize=True)``, as its users run it
  (the reference re-run per pair): the issue's peer;
* ``lpips_bf16_cl``: the same lpips model in channels_last under bf16 autocast (what a performance-minded
  lpips user would try);
* ``ours_fp32``: our fp32 path on the same inputs (equal work: 2N trunk images);
* ``ours_fast`` / ``ours_compiled``: the bf16 fast path, eager / through ``torch.compile`` (inductor, CPU
  freezing), with the reference passed once per call (``metric(ref[:1], dist)``: N + 1 trunk images);
* ``ours_fast_precomputed`` / ``ours_compiled_precomputed``: the reference's features computed once
  beforehand (``metric.reference(ref)``), a stream of distorted images scored against one reference
  (N trunk images per call): the headline number.

Timing: by default one torch thread and ``time.process_time`` (CPU seconds of this process: on a shared,
loaded machine the compute cost, not the wait); ``--threads``/``--clock wall`` change it. Values: the
relative difference of each configuration's distance to lpips fp32's on the same pairs. Roofline: the
trunk's GFLOP (2 × its multiply-adds × the images a call computes) per second against the bf16/fp32
peak :func:`_common.measured_peak` measures in the same process with the same clock. Memory at
1024×768: the rise of the resident memory during one call (sampled every ms) in a fresh subprocess per
configuration (its first call; compiled configurations after the call that compiles); a precomputed
reference's features are held before the call and reported separately. Compile time: wall seconds of
the first call per graph and shape, in a fresh inductor cache (cold).

Run: ``.venv/bin/python benchmarks/perceptual.py`` (CPU, several minutes: lpips at 1024×768 is slow;
writes ``results/bench_perceptual.json``); ``--quick``: tiny sizes, eager only, no memory, seconds.
``--cuda OUT.json`` on a GPU machine and ``--attach OUT.json`` here add GPU numbers to the same file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from _common import (
    CLOCKS,
    ROOT,
    add_common_args,
    apply_common_args,
    goal_row,
    interleaved,
    measured_peak,
    roofline,
    write_bench,
)

sys.path.insert(0, str(ROOT / "tests"))
from _oracles import lpips_vgg_peer  # noqa: E402  (the one VGG-16 → lpips key mapping)

SIZES = {"256x256": (4, 256, 256, "astronaut"), "1024x768": (2, 768, 1024, "coffee")}
QUICK_SIZES = {"64x64": (2, 64, 64, "astronaut"), "64x48": (1, 48, 64, "coffee")}
DISTORTIONS = (("noise", 1), ("blur", 1), ("jpeg", 2), ("contrast", 1))
EAGER = ("lpips_fp32", "lpips_bf16_cl", "ours_fp32", "ours_fast", "ours_fast_precomputed")
COMPILED = ("ours_compiled", "ours_compiled_precomputed")
HEADLINE = "ours_compiled_precomputed"
BF16 = {"lpips_bf16_cl", "ours_fast", "ours_fast_precomputed", "ours_compiled", "ours_compiled_precomputed"}


def _images_per_call(name: str, n: int) -> int:
    """Trunk images one call computes (the roofline's work)."""
    if name.endswith("precomputed"):
        return n
    if name in ("ours_fast", "ours_compiled"):
        return n + 1
    return 2 * n


def _setup(device: str = "cpu", compiled: bool = True, seed: int = 0) -> dict:
    """lpips (fp32 and bf16 channels_last) and ours (fp32, fast, compiled) on one random VGG-16 trunk."""
    import lpips

    from vislearn.metrics.perceptual import create_metric
    from vislearn.models.vgg import VGG16

    torch.manual_seed(seed)
    bb = VGG16(features_only=True)
    lin = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
    peer = lpips_vgg_peer(bb.features).to(device)
    models = {"peer": peer, "peer_cl": copy.deepcopy(peer).to(memory_format=torch.channels_last),
              "ours": create_metric("lpips_vgg", lin_weights=lin, backbone=bb).to(device),
              "fast": create_metric("lpips_vgg", lin_weights=lin, backbone=bb, fast=True).to(device)}
    if compiled:
        models["compiled"] = create_metric("lpips_vgg", lin_weights=lin, backbone=bb, fast=True,
                                           compile=True).to(device)
    return models


def _inputs(n: int, h: int, w: int, photo: str, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """One embedded scikit-image photo resized to h×w and n mild distortions of it."""
    import skimage.data

    from vislearn.data.distortions import distort

    img = torch.from_numpy(getattr(skimage.data, photo)()).permute(2, 0, 1).float().div(255)[None]
    ref = torch.nn.functional.interpolate(img, size=(h, w), mode="bilinear", antialias=True,
                                          align_corners=False).clamp(0, 1)
    dist = torch.cat([distort(ref, *DISTORTIONS[i % len(DISTORTIONS)], seed=i) for i in range(n)])
    return ref.to(device), dist.to(device)


def _configs(models: dict, ref: torch.Tensor, dist: torch.Tensor) -> dict:
    n, dev = dist.shape[0], dist.device.type
    refn = ref.expand(n, -1, -1, -1).contiguous()
    cl = torch.channels_last
    ref_cl, dist_cl = refn.contiguous(memory_format=cl), dist.contiguous(memory_format=cl)
    peer, peer_cl, ours, fast = models["peer"], models["peer_cl"], models["ours"], models["fast"]
    pre = fast.reference(ref)

    def lpips_bf16_cl():
        with torch.autocast(dev, dtype=torch.bfloat16):
            return peer_cl(ref_cl, dist_cl, normalize=True).flatten().float()

    fns = {"lpips_fp32": lambda: peer(refn, dist, normalize=True).flatten(),
           "lpips_bf16_cl": lpips_bf16_cl,
           "ours_fp32": lambda: ours(refn, dist),
           "ours_fast": lambda: fast(ref, dist),
           "ours_fast_precomputed": lambda: fast(pre, dist)}
    if "compiled" in models:
        comp = models["compiled"]
        pre_c = comp.reference(ref)  # compiles the reference graph for this shape
        fns["ours_compiled"] = lambda: comp(ref, dist)
        fns["ours_compiled_precomputed"] = lambda: comp(pre_c, dist)
    if dev == "cuda":  # time whole calls: wait for the GPU
        def synced(fn):
            def call():
                out = fn()
                torch.cuda.synchronize()
                return out
            return call
        fns = {k: synced(f) for k, f in fns.items()}
    return fns


def _compile_seconds(models: dict, ref: torch.Tensor, dist: torch.Tensor) -> dict[str, float]:
    """Wall seconds of the first call of each compiled graph at this shape (reference, then distorted)."""
    comp = models["compiled"]
    t0 = time.perf_counter()
    pre = comp.reference(ref)
    t1 = time.perf_counter()
    comp(pre, dist)
    t2 = time.perf_counter()
    return {"reference_graph_s": t1 - t0, "distance_graph_s": t2 - t1}


def _trunk_gflop(h: int, w: int) -> float:
    """GFLOP (2 × multiply-adds) of the VGG-16 trunk to relu5_3 on one h×w image: counted at 256² on the
    meta device and scaled by area (every convolution is same-padded, every pool halves exactly)."""
    from vislearn.models.vgg import VGG16
    from vislearn.nn.profile import count_macs

    with torch.device("meta"):
        trunk = VGG16(features_only=True)
    return 2 * count_macs(trunk, image_size=256) * (h * w) / 256**2 / 1e9


def _run_size(models: dict, n: int, h: int, w: int, photo: str, rounds: int, clock, peak: dict | None,
              device: str = "cpu") -> dict:
    ref, dist = _inputs(n, h, w, photo, device)
    out: dict = {"pairs_per_call": n, "photo": photo, "distortions": [list(d) for d in DISTORTIONS[:n]]}
    if "compiled" in models:
        out["compile_wall_s"] = _compile_seconds(models, ref, dist)
    fns = _configs(models, ref, dist)

    def mib(tensors) -> float:
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20

    out["precomputed_reference_mib"] = {"ours_fast (fp32 features)": mib(models["fast"].reference(ref).features)}
    if "compiled" in models:
        out["precomputed_reference_mib"]["ours_compiled (input + bf16 pre-activations)"] = mib(
            models["compiled"].reference(ref).state)
    base = fns["lpips_fp32"]()
    out["lpips_fp32_distance"] = base.tolist()
    out["max_rel_diff_vs_lpips_fp32"] = {k: float(((fn().float() - base).abs() / base.abs()).max())
                                         for k, fn in fns.items() if k != "lpips_fp32"}
    times = interleaved(fns, warmup=1, rounds=rounds, clock=clock)
    out["seconds_per_call"] = times
    out["pairs_per_s"] = pairs = {k: n / t for k, t in times.items()}
    out["speedup_vs_lpips_fp32"] = {k: v / pairs["lpips_fp32"] for k, v in pairs.items()}
    out["speedup_vs_lpips_bf16_cl"] = {k: v / pairs["lpips_bf16_cl"] for k, v in pairs.items()}
    if peak is not None:
        g = _trunk_gflop(h, w)
        out["trunk_gflop_per_image"] = g
        out["roofline"] = {k: roofline(g * _images_per_call(k, n), t, peak["bf16_gflops" if k in BF16 else
                                                                         "fp32_gflops"])
                           for k, t in times.items()}
    return out


# ------------------------------------------------------------------------------------------ memory
def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(name: str, threads: int) -> None:
    """Print the peak resident-memory rise (MiB) during one call of ``name`` at 1024×768 (the first call; a
    compiled configuration's graphs are compiled by a call before). A thread samples the current RSS every
    millisecond (the convolutions release the GIL); ``ru_maxrss`` cannot be used because building the
    models peaks higher."""
    import gc
    import threading

    torch.set_num_threads(threads)
    n, h, w, photo = SIZES["1024x768"]
    with torch.no_grad():
        models = _setup(compiled=name in COMPILED)
        ref, dist = _inputs(n, h, w, photo)
        fn = _configs(models, ref, dist)[name]
        if name in COMPILED:
            fn()  # compile this shape first: compilation is not the call's memory
        gc.collect()
        before = _rss_mib()
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mib())
                time.sleep(0.001)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        fn()
        done.set()
        th.join()
        print(json.dumps({"peak_rss_rise_mib": max(peak[0], _rss_mib()) - before}))


def _memory_all(threads: int) -> dict:
    mem: dict = {}
    for name in EAGER + COMPILED:
        out = subprocess.run([sys.executable, __file__, "--memory", name, "--threads", str(threads)],
                             capture_output=True, text=True, cwd=str(ROOT))
        try:
            mem[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_rise_mib"]
        except (IndexError, json.JSONDecodeError, KeyError):
            mem[name] = f"failed: {out.stderr[-300:]}"
    return mem


# -------------------------------------------------------------------------------------------- cuda
def _cuda(json_out: str) -> None:
    """The same comparison on a CUDA device (fp32 there uses cuDNN's defaults, TF32 included; wall clock,
    synchronised; peak memory from ``torch.cuda.max_memory_allocated``). Writes ``json_out``."""
    numbers: dict = {"device": torch.cuda.get_device_name(0), "tf32_conv": torch.backends.cudnn.allow_tf32}
    sizes = {"256x256": (16, 256, 256, "astronaut"), "1024x768": (4, 768, 1024, "coffee")}
    with torch.no_grad():
        models = _setup(device="cuda")
        for label, (n, h, w, photo) in sizes.items():
            numbers[label] = _run_size(models, n, h, w, photo, 15, time.perf_counter, None, device="cuda")
            if label == "1024x768":
                mem = {}
                for k, fn in _configs(models, *_inputs(n, h, w, photo, "cuda")).items():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    start = torch.cuda.memory_allocated()
                    fn()
                    mem[k] = (torch.cuda.max_memory_allocated() - start) / 2**20
                numbers["peak_memory_1024x768_mib"] = mem
            print(label, json.dumps(numbers[label]), flush=True)
    with open(json_out, "w") as f:
        json.dump(numbers, f, indent=1)


def _attach(path: str) -> None:
    """Add a CUDA run's numbers (from ``--cuda OUT.json``) to results/bench_perceptual.json."""
    from _common import RESULTS_DIR

    from vislearn.io import atomic_write_json

    target = RESULTS_DIR / "bench_perceptual.json"
    rec = json.loads(target.read_text())
    cuda = json.loads(open(path).read())
    rec["numbers"]["cuda"] = cuda
    s, s1k = cuda["256x256"]["speedup_vs_lpips_fp32"], cuda["1024x768"]["speedup_vs_lpips_fp32"]
    rec["summary"] += (f" | {cuda['device']}: {HEADLINE} {s[HEADLINE]:.2f}× at 256² "
                       f"({s1k[HEADLINE]:.2f}× at 1024×768)")
    atomic_write_json(target, rec)
    print(rec["summary"])


# -------------------------------------------------------------------------------------------- main
def _rows(numbers: dict, labels: dict[str, str]) -> list[dict]:
    rows = []
    for label, hot in labels.items():
        r = numbers[label]
        best = HEADLINE if HEADLINE in r["speedup_vs_lpips_fp32"] else "ours_fast_precomputed"
        sp = r["speedup_vs_lpips_fp32"]
        ratio = sp[best]
        rows.append(goal_row(
            f"perceptual distance vs lpips VGG, {hot}", "lpips VGG fp32 NCHW (as its users run it)", ratio, "≥ 5×",
            ratio >= 5, ours=best, vs_lpips_bf16_cl=r["speedup_vs_lpips_bf16_cl"][best],
            ours_reference_in_call=sp.get("ours_compiled", sp["ours_fast"]),
            max_rel_diff_vs_lpips_fp32=r["max_rel_diff_vs_lpips_fp32"][best],
            fraction_of_peak=r.get("roofline", {}).get(best, {}).get("fraction_of_peak"),
            clock=numbers["clock"], threads=numbers["threads"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time is then the cost)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="process")
    p.add_argument("--memory", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--cuda", metavar="OUT.json", help="run on the GPU, write OUT.json")
    p.add_argument("--attach", metavar="OUT.json", help="add a --cuda run to results/bench_perceptual.json")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile configurations")
    args = p.parse_args(argv)
    apply_common_args(args)
    if args.memory:
        return _memory_child(args.memory, args.threads)
    if args.cuda:
        return _cuda(args.cuda)
    if args.attach:
        return _attach(args.attach)
    threads_before = torch.get_num_threads()  # run_all's quick mode calls main() in its own process
    torch.set_num_threads(args.threads)
    try:
        _main(args)
    finally:
        torch.set_num_threads(threads_before)


def _main(args: argparse.Namespace) -> None:
    clock = CLOCKS[args.clock]
    compiled = not (args.quick or args.no_compile)
    sizes = QUICK_SIZES if args.quick else SIZES
    numbers: dict = {"threads": args.threads, "clock": "process_time (CPU s)" if args.clock == "process" else "wall",
                     "compiled": compiled}
    if compiled and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # a fresh inductor cache: the compile times are cold (earlier runs' kernels are not reused); the
        # memory subprocesses inherit it and start warm
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="vislearn_inductor_")
    with torch.no_grad():
        numbers["peak"] = peak = measured_peak(repeat=1 if args.quick else 5, clock=clock)
        models = _setup(compiled=compiled)
        for label, (n, h, w, photo) in sizes.items():
            rounds = 1 if args.quick else (3 if h * w <= 256**2 else 2)
            numbers[label] = _run_size(models, n, h, w, photo, rounds, clock, peak)
            print(label, json.dumps(numbers[label]["speedup_vs_lpips_fp32"]), flush=True)
    if not args.quick:
        numbers["peak_memory_1024x768_mib"] = _memory_all(args.threads)
    if compiled and os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(tempfile.gettempdir()):
        shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    labels = dict(zip(sizes, ("256²", "1024×768") if not args.quick else tuple(sizes), strict=True))
    rows = _rows(numbers, labels)
    parts = []
    for row, label in zip(rows, sizes, strict=True):
        r = numbers[label]["speedup_vs_lpips_fp32"]
        parts.append(f"{labels[label]}: {row['ratio']:.2f}× lpips fp32 ({row['vs_lpips_bf16_cl']:.2f}× lpips bf16 CL; "
                     f"lpips bf16 CL {r['lpips_bf16_cl']:.2f}×, ours with the reference in the call "
                     f"{row['ours_reference_in_call']:.2f}×)")
    summary = (f"perceptual ({rows[0]['ours']}, {numbers['clock']}, {args.threads} thread(s)): " + "; ".join(parts)
               + f"; goal ≥ 5× at both sizes: {'met' if all(r['met'] for r in rows) else 'not met'}")
    write_bench("perceptual", summary, numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()

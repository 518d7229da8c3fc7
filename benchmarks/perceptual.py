"""Perceptual metric throughput: ours (default and fast) vs ``lpips`` VGG with the same backbone.

Workload: one reference compared with N distorted images (N=4 at 256×256, N=1 at 1024×768), the
common case of scoring codec/restoration outputs. Every configuration gets the same images and
the same random VGG-16 trunk (copied into lpips), timed interleaved in one process. Reported:

* ``lpips_fp32``: ``lpips.LPIPS(net="vgg")(ref.expand(N), dist, normalize=True)`` (reference re-run per pair);
* ``ours_fp32``: the same inputs, equal work (both images in one backbone call);
* ``ours_fp32_cache``: one reference passed once (``metric(ref[:1], dist)``: N+1 backbone images, not 2N);
* ``ours_fast``: channels_last + bf16 autocast, equal inputs;
* ``ours_fast_cache``: fast + reference once per call; ``ours_fast_precomputed``: fast with the
  reference's features computed once beforehand (a stream of distorted images against one reference).

Values: max relative difference to lpips fp32. Peak memory at 1024×768: the rise of the resident
memory during one call (sampled every ms), each configuration in a fresh subprocess
(``--memory-only`` re-measures just that).

Run: ``.venv/bin/python benchmarks/perceptual.py`` (CPU; writes ``results/bench_perceptual.json``);
``benchmarks/perceptual.py --cuda OUT.json`` on a GPU machine and ``--attach OUT.json`` here add the
GPU numbers to the same file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch
from _common import ROOT, interleaved, write_bench  # sets sys.path to the repository's src/


def _setup(tmp: str, seed: int = 0, device: str = "cpu"):
    import lpips
    import torchvision

    from vislearn.metrics.perceptual import create_metric

    torch.manual_seed(seed)
    feats = torchvision.models.vgg16().features
    path = os.path.join(tmp, "vgg16_features.pth")
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    lin = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
    peer = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    slices = {}
    for k, v in feats.state_dict().items():
        i = int(k.split(".")[0])
        s = 1 if i < 4 else 2 if i < 9 else 3 if i < 16 else 4 if i < 23 else 5
        slices[f"slice{s}.{k}"] = v
    peer.net.load_state_dict(slices)
    ours = create_metric("lpips_vgg", path, lin_weights=lin)
    fast = create_metric("lpips_vgg", path, lin_weights=lin, fast=True)
    return peer.to(device), ours.to(device), fast.to(device)


def _inputs(n: int, h: int, w: int, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(1, 3, h, w, generator=g)
    ref = torch.nn.functional.avg_pool2d(ref, 5, 1, 2)  # some spatial structure
    dist = (ref + 0.08 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    return ref.to(device), dist.to(device)


def _configs(peer, ours, fast, ref, dist):
    n = dist.shape[0]
    refn = ref.expand(n, -1, -1, -1).contiguous()
    pre = fast.reference(ref)
    fns = {
        "lpips_fp32": lambda: peer(refn, dist, normalize=True).flatten(),
        "ours_fp32": lambda: ours(refn, dist),
        "ours_fp32_cache": lambda: ours(ref, dist),
        "ours_fast": lambda: fast(refn, dist),
        "ours_fast_cache": lambda: fast(ref, dist),
        "ours_fast_precomputed": lambda: fast(pre, dist),
    }
    if dist.is_cuda:  # time whole calls: wait for the GPU
        def synced(fn):
            def call():
                out = fn()
                torch.cuda.synchronize()
                return out
            return call
        fns = {k: synced(f) for k, f in fns.items()}
    return fns


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(name: str) -> None:
    """Print the peak resident-memory rise (MiB) during one call of ``name`` at 1024×768.

    A thread samples the current RSS every millisecond (the convolutions release the GIL); the
    process's lifetime peak (``ru_maxrss``) cannot be used because building the models peaks higher.
    """
    import gc
    import threading
    import time

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        peer, ours, fast = _setup(tmp)
        ref, dist = _inputs(1, 768, 1024)
        fns = _configs(peer, ours, fast, ref, dist)
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
        fns[name]()
        done.set()
        th.join()
        print(json.dumps({"peak_rss_rise_mib": max(peak[0], _rss_mib()) - before}))


def _memory_all() -> dict:
    mem = {}
    for name in ("lpips_fp32", "ours_fp32", "ours_fp32_cache", "ours_fast", "ours_fast_precomputed"):
        out = subprocess.run([sys.executable, __file__, "--memory", name], capture_output=True, text=True,
                             cwd=str(ROOT))
        try:
            mem[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_rise_mib"]
        except (IndexError, json.JSONDecodeError, KeyError):
            mem[name] = f"failed: {out.stderr[-300:]}"
    return mem


def _memory_update() -> None:
    """Re-measure only the peak memory and update results/bench_perceptual.json."""
    target = ROOT / "results" / "bench_perceptual.json"
    rec = json.loads(target.read_text())
    rec["numbers"]["peak_memory_1024x768_mib"] = mem = _memory_all()
    from vislearn.io import atomic_write_json

    atomic_write_json(target, rec)
    print(json.dumps(mem))


def _cuda(json_out: str) -> None:
    """The same comparison on a CUDA device (fp32 there uses cuDNN's defaults, TF32 included);
    peak memory from ``torch.cuda.max_memory_allocated``. Writes ``json_out``."""
    numbers: dict = {"device": torch.cuda.get_device_name(0), "tf32_conv": torch.backends.cudnn.allow_tf32}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        peer, ours, fast = _setup(tmp, device="cuda")
        for label, (n, h, w) in {"256x256": (16, 256, 256), "1024x768": (4, 768, 1024)}.items():
            ref, dist = _inputs(n, h, w, device="cuda")
            fns = _configs(peer, ours, fast, ref, dist)
            base = fns["lpips_fp32"]()
            rel = {k: float(((fn() - base).abs() / base.abs()).max()) for k, fn in fns.items() if k != "lpips_fp32"}
            times = interleaved(fns, warmup=3, rounds=15)
            pairs_s = {k: n / t for k, t in times.items()}
            numbers[label] = {"pairs_per_call": n, "pairs_per_s": pairs_s,
                              "speedup_vs_lpips": {k: v / pairs_s["lpips_fp32"] for k, v in pairs_s.items()},
                              "max_rel_diff_vs_lpips": rel}
            if label == "1024x768":
                mem = {}
                for k, fn in fns.items():
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
    target = ROOT / "results" / "bench_perceptual.json"
    rec = json.loads(target.read_text())
    cuda = json.loads(open(path).read())
    rec["numbers"]["cuda"] = cuda
    s = cuda["256x256"]["speedup_vs_lpips"]
    s1k = cuda["1024x768"]["speedup_vs_lpips"]
    rec["summary"] += (f" | {cuda['device']}: fast {s['ours_fast']:.2f}×, fast+precomputed "
                       f"{s['ours_fast_precomputed']:.2f}× at 256² ({s1k['ours_fast_precomputed']:.2f}× at 1024×768)")
    from vislearn.io import atomic_write_json

    atomic_write_json(target, rec)
    print(rec["summary"])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        _memory_child(sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--cuda":
        _cuda(sys.argv[2])
        return
    if len(sys.argv) == 2 and sys.argv[1] == "--memory-only":
        _memory_update()
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--attach":
        _attach(sys.argv[2])
        return
    numbers: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        peer, ours, fast = _setup(tmp)
        for label, (n, h, w, rounds) in {"256x256": (4, 256, 256, 3), "1024x768": (1, 768, 1024, 2)}.items():
            ref, dist = _inputs(n, h, w)
            fns = _configs(peer, ours, fast, ref, dist)
            base = fns["lpips_fp32"]()
            rel = {k: float(((fn() - base).abs() / base.abs()).max()) for k, fn in fns.items() if k != "lpips_fp32"}
            times = interleaved(fns, warmup=1, rounds=rounds)
            pairs_s = {k: n / t for k, t in times.items()}
            numbers[label] = {"pairs_per_call": n, "pairs_per_s": pairs_s,
                              "speedup_vs_lpips": {k: v / pairs_s["lpips_fp32"] for k, v in pairs_s.items()},
                              "max_rel_diff_vs_lpips": rel}
            print(label, json.dumps(numbers[label]), flush=True)
    mem = _memory_all()
    numbers["peak_memory_1024x768_mib"] = mem
    s256, s1k = numbers["256x256"]["speedup_vs_lpips"], numbers["1024x768"]["speedup_vs_lpips"]
    best = max((k for k in s256 if k != "lpips_fp32"), key=lambda k: s256[k])
    reached = sorted(k for k in s256 if k != "lpips_fp32" and s256[k] >= 5 and s1k.get(k, 0) >= 5)
    summary = (f"lpips VGG {numbers['256x256']['pairs_per_s']['lpips_fp32']:.2f} pairs/s at 256² (1 ref vs 4); "
               f"ours fp32 {s256['ours_fp32']:.2f}×, fast {s256['ours_fast']:.2f}×, fast+cache "
               f"{s256['ours_fast_cache']:.2f}×, fast+precomputed ref {s256['ours_fast_precomputed']:.2f}× "
               f"(1024×768: {s1k['ours_fast_precomputed']:.2f}×); ≥5× at both sizes: "
               f"{', '.join(reached) if reached else 'none'}; best at 256²: {best}")
    write_bench("perceptual", summary, numbers)


if __name__ == "__main__":
    main()

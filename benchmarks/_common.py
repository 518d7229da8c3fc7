"""Shared timing and reporting for the benchmark scripts (ours vs a peer, one process, same inputs).

Run a script from the repository root: ``.venv/bin/python benchmarks/NAME.py``. Each writes
``results/bench_NAME.json`` with a one-line ``summary`` that ``results/README.md`` lists.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def timeit(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 5, min_time: float = 0.0,
           clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls (at least ``repeat`` timed calls), by ``clock``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_start = clock()
    while len(times) < repeat or clock() - t_start < min_time:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int = 1, rounds: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call for each function, timed in alternation so machine noise hits all alike.

    ``clock=time.process_time`` measures this process's CPU seconds instead of wall time (with one
    torch thread, the compute cost regardless of other load on a shared machine)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


RESULTS_DIR = ROOT / "results"
#: ``--clock`` choices of the scripts: this process's CPU seconds (one thread on a loaded machine) or wall time.
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


def add_common_args(parser) -> None:
    """``--quick`` (a smoke run: tiny sizes, few rounds, numbers meaningless) and ``--results-dir``."""
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, timings not meaningful")
    parser.add_argument("--results-dir", default=None, help="where bench_NAME.json goes (default results/)")


def apply_common_args(args) -> None:
    """Point :func:`write_bench` at ``--results-dir`` when one was given."""
    global RESULTS_DIR
    RESULTS_DIR = Path(args.results_dir) if getattr(args, "results_dir", None) else ROOT / "results"


def write_bench(name: str, summary: str, numbers: dict[str, Any], *, rows: list[dict[str, Any]] | None = None,
                quick: bool = False) -> Path:
    """Write ``RESULTS_DIR/bench_NAME.json`` (summary line, numbers, goal rows, machine) and print the summary.

    ``rows`` are :func:`goal_row` dicts: ``benchmarks/run_all.py`` gathers them into the README's table."""
    from vislearn.io import atomic_write_json
    from vislearn.reproduce.results import _plain, machine_info

    path = RESULTS_DIR / f"bench_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"name": name, "summary": summary, "numbers": _plain(numbers),
                             "rows": _plain(rows or []), "quick": quick,
                             "machine": {**machine_info(), **cpu_flags()}, "date": time.strftime("%Y-%m-%d")})
    print(summary)
    print(json.dumps(_plain(numbers), indent=1))
    return path


# --- the machine, its measured peak, and one goal row per hot path (benchmarks/run_all.py) -----------------


def cpu_flags() -> dict[str, Any]:
    """The CPU model, the SIMD flags that decide the fast paths (AVX-512, bf16, VNNI, AMX) and the threads."""
    import platform

    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
    return {"cpu": model, "flags": sorted(f for f in wanted if f in flags),
            "amx": "amx_bf16" in flags, "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def measured_peak(device: str = "cpu", *, repeat: int = 5,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """This machine's achievable GFLOP/s for fp32 and bf16: the best of a large matmul and a 3×3
    convolution (channels_last), measured now, in this process, with the current thread count.

    This is the "physical limit" side of a roofline line: a model's achieved GFLOP/s divided by it says
    how much room a faster implementation could have. It is a measured ceiling (what oneDNN reaches on
    a compute-bound shape), not the datasheet peak. Time it with the clock the model timings use
    (``time.process_time`` with one thread on a loaded machine: wall time there underestimates the peak)."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    n = 2048 if dev.type == "cpu" else 8192
    out: dict[str, float] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(dev, dtype)
        b = torch.randn(n, n, generator=g).to(dev, dtype)
        x = torch.randn(8, 128, 56, 56, generator=g).to(dev, dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(128, 128, 3, 3, generator=g).to(dev, dtype).contiguous(memory_format=torch.channels_last)

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def mm(a=a, b=b):
            torch.mm(a, b)
            sync()

        def conv(x=x, w=w):
            F.conv2d(x, w, padding=1)
            sync()

        with torch.no_grad():
            t_mm = timeit(mm, warmup=1, repeat=repeat, clock=clock)
            t_conv = timeit(conv, warmup=1, repeat=repeat, clock=clock)
        mm_gflops = 2 * n**3 / t_mm / 1e9
        conv_gflops = 2 * 8 * 128 * 128 * 9 * 56 * 56 / t_conv / 1e9
        out[f"{name}_matmul_gflops"] = mm_gflops
        out[f"{name}_conv_gflops"] = conv_gflops
        out[f"{name}_gflops"] = max(mm_gflops, conv_gflops)
    return out


def roofline(gflop: float, seconds: float, peak_gflops: float) -> dict[str, float]:
    """Achieved GFLOP/s of one call doing ``gflop`` GFLOP in ``seconds``, and its fraction of ``peak_gflops``."""
    achieved = gflop / seconds
    return {"gflop": gflop, "achieved_gflops": achieved, "peak_gflops": peak_gflops,
            "fraction_of_peak": achieved / peak_gflops}


def goal_row(hot_path: str, peer: str, ratio: float, goal: str, met: bool | None, **detail: Any) -> dict[str, Any]:
    """One row of the README's performance table: ``ratio`` is ours over the peer as a speed-up (> 1 is
    faster than the peer); ``met`` is None when the goal does not apply on this machine (e.g. AMX absent)."""
    return {"hot_path": hot_path, "peer": peer, "ratio": float(ratio), "goal": goal, "met": met, **detail}

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


def timeit(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 5, min_time: float = 0.0) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls (at least ``repeat`` timed calls)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - t_start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
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


def write_bench(name: str, summary: str, numbers: dict[str, Any]) -> Path:
    """Write ``results/bench_NAME.json`` (summary line, numbers, machine) and print the summary."""
    from vislearn.io import atomic_write_json
    from vislearn.reproduce.results import _plain, machine_info

    path = ROOT / "results" / f"bench_{name}.json"
    atomic_write_json(path, {"name": name, "summary": summary, "numbers": _plain(numbers),
                             "machine": machine_info(), "date": time.strftime("%Y-%m-%d")})
    print(summary)
    print(json.dumps(_plain(numbers), indent=1))
    return path

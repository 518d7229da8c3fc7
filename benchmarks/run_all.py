"""Run every benchmark (ours vs the peer, one process each), gather them into ``results/benchmarks.json``
and regenerate the performance table of README.md.

Each script in :data:`BENCHMARKS` times ours against its peer on the same inputs in one process and
writes ``bench_NAME.json`` with its goal rows (``_common.goal_row``). This script adds what a reader
needs to judge the ratios: the machine (CPU model, AVX-512 / bf16 / VNNI / AMX flags, thread count)
and its measured fp32/bf16 peak (``_common.measured_peak``), then rewrites the table between the
``<!-- benchmarks:begin -->`` / ``<!-- benchmarks:end -->`` markers of README.md.

Run from the repository root::

    .venv/bin/python benchmarks/run_all.py                  # every benchmark, full size (tens of minutes)
    .venv/bin/python benchmarks/run_all.py --only inference perceptual
    .venv/bin/python benchmarks/run_all.py --quick --results-dir /tmp/b --readme /tmp/README.md   # smoke run

``--quick`` runs each script at toy sizes in this process (seconds each; the numbers mean nothing and
are marked ``quick``); a full run starts one process per script so thread settings, compiled graphs
and memory high-water marks do not leak from one benchmark into the next. ``--collect`` skips running
and only gathers the ``bench_*.json`` already there (e.g. after running one script by hand).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

#: script name (benchmarks/NAME.py) → the extra arguments of its full run; every one takes --quick.
BENCHMARKS: dict[str, list[str]] = {
    "inference": [],
    "inception_v3": [],
    "inception_v4": [],
    "batchnorm": [],
    "perceptual": [],
    "multibox": [],
    "multilabel": [],
    "proxy_nca": [],
    "ssl_ensemble": ["--threads", "1"],
    "swycc": [],
    "data": [],
}
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def run_one(name: str, *, quick: bool, results_dir: Path) -> float:
    """Run ``benchmarks/NAME.py``; returns its wall seconds. Quick runs share this process."""
    argv = (["--quick"] if quick else BENCHMARKS[name]) + ["--results-dir", str(results_dir)]
    t0 = time.perf_counter()
    if quick:
        importlib.import_module(name).main(argv)
    else:
        subprocess.run([sys.executable, str(Path(__file__).with_name(f"{name}.py")), *argv], check=True,
                       cwd=_common.ROOT)
    return time.perf_counter() - t0


def collect(results_dir: Path, names: list[str], peak: dict[str, float], walls: dict[str, float],
            quick: bool) -> dict[str, Any]:
    """Every named ``bench_NAME.json`` in ``results_dir`` plus the machine and its peak, as one record."""
    benches, rows, without = {}, [], []
    for name in names:
        path = results_dir / f"bench_{name}.json"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run benchmarks/{name}.py first (or drop --collect)")
        b = json.loads(path.read_text())
        benches[name] = {k: b.get(k) for k in ("summary", "rows", "date", "quick")}
        rows += [{"benchmark": name, **r} for r in b.get("rows", [])]
        if not b.get("rows"):
            without.append(name)  # written before goal rows existed: its summary line only
    from vislearn.reproduce.results import _plain

    return _plain({"date": time.strftime("%Y-%m-%d"), "quick": quick, "machine": _common.cpu_flags(),
                   "measured_peak_gflops": peak, "wall_s": walls, "benchmarks": benches, "rows": rows,
                   "without_rows": without})


def _fmt_ratio(r: float) -> str:
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def _measured(r: dict[str, Any]) -> str:
    """The row's number in its own unit: a speed-up over the peer (×), a share of the measured peak, or
    an accuracy drop in points (scripts say which by the goal's wording and the extra keys they store)."""
    if "peer_fraction" in r:  # ratio is our share of the peak; the peer's share beside it
        return f"{r['ratio']:.0%} of the bf16 peak (peer {r['peer_fraction']:.0%})"
    if "points" in r["goal"]:
        return f"{r['ratio']:.2f} points"
    text = _fmt_ratio(r["ratio"])
    if "fraction_of_peak" in r:
        text += f" ({r['fraction_of_peak']:.0%} of the bf16 peak)"
    return text


def table_markdown(record: dict[str, Any]) -> str:
    """The README table: one row per goal row, with the machine it was measured on."""
    m = record["machine"]
    peak = record["measured_peak_gflops"]
    lines = [
        f"Measured {record['date']} by `benchmarks/run_all.py` on {m['cpu']} ({m['torch_threads']} threads by default; "
        f"flags: {', '.join(m['flags']) or 'none'}; AMX {'present' if m['amx'] else 'absent'}); measured peak of "
        f"one thread (CPU time): fp32 {peak.get('fp32_gflops', 0):.0f} GFLOP/s, bf16 {peak.get('bf16_gflops', 0):.0f} "
        "GFLOP/s."
        + (" QUICK RUN: toy sizes, the ratios mean nothing." if record["quick"] else ""),
        "Measured: how many times faster ours is than the peer (×; above 1 ours is faster), in one process on the same "
        "inputs, or the unit the goal is stated in.",
        "",
        "| benchmark | hot path | peer | measured | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        met = {True: "yes", False: "**no**", None: "—"}[r.get("met")]
        lines.append(f"| {r['benchmark']} | {r['hot_path']} | {r['peer']} | {_measured(r)} | "
                     f"{r['goal']} | {met} |")
    if record.get("without_rows"):
        lines += ["", "Not re-run since goal rows were added (their summary lines are in `results/README.md`): "
                  + ", ".join(f"`{n}` ({record['benchmarks'][n].get('date')})" for n in record["without_rows"]) + "."]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the benchmark markers of ``readme`` with ``table``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block to regenerate")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    from vislearn.io import atomic_write_bytes

    atomic_write_bytes(readme, f"{head}{BEGIN}\n{table}{END}{tail}".encode())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run these benchmarks only")
    ap.add_argument("--quick", action="store_true", help="toy sizes in this process: a smoke run")
    ap.add_argument("--collect", action="store_true", help="do not run; gather the bench_*.json already there")
    ap.add_argument("--results-dir", default=str(_common.ROOT / "results"))
    ap.add_argument("--readme", default=str(_common.ROOT / "README.md"), help="README whose table is rewritten")
    args = ap.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    results_dir = Path(args.results_dir)
    walls: dict[str, float] = {}
    if not args.collect:
        for name in names:
            print(f"== {name}", flush=True)
            walls[name] = run_one(name, quick=args.quick, results_dir=results_dir)
    # the scripts time one thread by its CPU time (the shared machine): the peak is measured the same way
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peak = _common.measured_peak(repeat=1 if args.quick else 5, clock=time.process_time)
    finally:
        torch.set_num_threads(threads)
    record = collect(results_dir, names, peak, walls, args.quick)
    from vislearn.io import atomic_write_json

    atomic_write_json(results_dir / "benchmarks.json", record)
    table = table_markdown(record)
    update_readme(Path(args.readme), table)
    print(table)
    return record


if __name__ == "__main__":
    main()

"""``python -m vislearn.reproduce.swycc_sweep [--scale S] [--out FILE]``: the ``swycc`` reproduction's lr sweep.

Runs :func:`vislearn.reproduce.swycc.sweep` (every arm over the same lr grid, seed 0, the demo's steps and
settings, judged by the arm's learning quantity on a check split) and writes its table, by default to
``results/swycc_sweep.json``. :data:`vislearn.reproduce.swycc.CHOSEN_LR` must equal the table's
``chosen`` (a test checks it): the demo runs the chosen values without re-running the sweep.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from vislearn.io import atomic_write_json
    from vislearn.reproduce import ReproContext
    from vislearn.reproduce.results import _plain
    from vislearn.reproduce.swycc import SWEEP_FILE, sweep

    p = argparse.ArgumentParser(prog="python -m vislearn.reproduce.swycc_sweep")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the step budget (below 0.25: a smoke run)")
    p.add_argument("--out", default=SWEEP_FILE)
    args = p.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()
    table = sweep(ReproContext(name="swycc", seeds=(0, 1, 2), scale=args.scale, log=lambda m: print(m, flush=True)))
    table.update(scale=args.scale, wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
    atomic_write_json(args.out, _plain(table))
    print(f"chosen: {table['chosen']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

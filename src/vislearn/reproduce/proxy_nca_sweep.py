"""``python -m vislearn.reproduce.proxy_nca_sweep [--scale S] [--out FILE]``: the ``proxy_nca`` tuning sweep.

Runs :func:`vislearn.reproduce.proxy_nca.sweep` (each arm's 3 x 4 grid of lr and scale/margin on the
held-out training classes, the default frozen-trunk setting) and writes its table, by default to
``results/proxy_nca_sweep.json``. The reproduction's :data:`~vislearn.reproduce.proxy_nca.CHOSEN`
must equal the table's ``chosen`` values: the demo runs the chosen settings without re-running the
sweep, which alone costs more than the demo's budget for this reproduction.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from vislearn.io import atomic_write_json
    from vislearn.reproduce import ReproContext
    from vislearn.reproduce.proxy_nca import FINAL_SEEDS, sweep
    from vislearn.reproduce.results import _plain

    p = argparse.ArgumentParser(prog="python -m vislearn.reproduce.proxy_nca_sweep")
    p.add_argument("--scale", type=float, default=1.0, help="budget multiplier (below 0.25: a tiny smoke run)")
    p.add_argument("--out", default="results/proxy_nca_sweep.json")
    p.add_argument("--workers", type=int, default=1, help="trainings run in parallel processes")
    args = p.parse_args(argv)
    table = sweep(ReproContext(name="proxy_nca", seeds=FINAL_SEEDS, scale=args.scale,
                               log=lambda m: print(m, flush=True)), workers=args.workers)
    atomic_write_json(args.out, _plain({"scale": args.scale, **table}))
    print(f"chosen: {table['chosen']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

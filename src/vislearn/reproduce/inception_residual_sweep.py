"""``python -m vislearn.reproduce.inception_residual_sweep``: the one-off tuning sweep of the
``inception_residual`` reproduction (held-out split, seed 0), written to ``results/inception_residual_sweep.json``.

The reproduction runs with the values this sweep chose (constants in
:mod:`vislearn.reproduce.inception_residual`; a test checks they match the committed table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vislearn.reproduce.inception_residual import SWEEP_FILE, sweep


def main(argv: list[str] | None = None) -> None:
    """Run the tuning sweep of both parts and write its table."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the sweep's step budgets")
    p.add_argument("--jobs", type=int, default=1, help="grid points run in parallel (single-threaded each)")
    p.add_argument("--results", default="results", help="folder for " + SWEEP_FILE)
    args = p.parse_args(argv)
    table = sweep(args.scale, args.jobs)
    table["scale"] = args.scale
    out = Path(args.results) / SWEEP_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"chosen (a): {({m: v['chosen'] for m, v in table['a']['runs'].items()})}; max stable lr (b): "
          f"{({s: v['max_stable_lr'] for s, v in table['b']['runs'].items()})} -> {out}")




if __name__ == "__main__":
    main()

"""``vislearn`` (the CLI, unchanged) with a trace of every optimizer step and, optionally, a SIGKILL.

Usage: ``python _cli_job.py TRACE [--kill-rank R] -- CLI ARGS...`` (e.g. ``-- train classify --out D ...``).
Every process appends ``{"pid", "rank", "step"}`` to ``TRACE.rank<R>`` after each optimizer step (a
restarted worker is a new pid; torchelastic's restart count is no attempt number: an agent whose own
worker did not fail restarts without counting). With ``--kill-rank R``, the process of rank R SIGKILLs
itself two steps after the run's first checkpoint appeared (``checkpoints/latest.json``, which every rank
can read once the checkpoint's closing barrier has passed), once per job (``TRACE.killed`` marks it):
no sleeps, no races.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from vislearn.cli import main
from vislearn.train import engine


def install(trace: str, kill_rank: int) -> None:
    rank = int(os.environ.get("RANK", "0"))
    killed = Path(f"{trace}.killed")
    after_step = engine.Trainer._after_step

    def traced(self, out):
        done = after_step(self, out)
        with open(f"{trace}.rank{rank}", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "rank": rank, "step": self.step}) + "\n")
        latest = Path(self.out_dir) / "checkpoints" / "latest.json"
        if rank == kill_rank and not killed.exists() and latest.is_file() \
                and self.step >= json.loads(latest.read_text())["step"] + 2:
            killed.write_text(str(self.step))
            os.kill(os.getpid(), signal.SIGKILL)
        return done

    engine.Trainer._after_step = traced


if __name__ == "__main__":
    argv = sys.argv[1:]
    cut = argv.index("--")
    head, cli = argv[:cut], argv[cut + 1:]
    install(head[0], int(head[head.index("--kill-rank") + 1]) if "--kill-rank" in head else -1)
    sys.exit(main(cli))

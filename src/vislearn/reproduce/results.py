"""The one results format: ``results/NAME.json`` + ``results/NAME.png`` and the ``README.md`` table."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

import vislearn
from vislearn.errors import UserError
from vislearn.io import atomic_write_bytes, atomic_write_json


def machine_info() -> dict[str, Any]:
    """Where a result was measured: CPU/GPU, threads and library versions."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def run_reproduction(name: str, results_dir: str | os.PathLike = "results", *, scale: float = 1.0,
                     seeds: tuple[int, ...] | None = None, log=print, data: str | None = None,
                     weights: str | None = None) -> dict[str, Any]:
    """Run one registered reproduction, print its claim and criterion first, write JSON and PNG."""
    from vislearn.reproduce import ReproContext, get_reproduction

    rep = get_reproduction(name)
    for key, value in (("data", data), ("weights", weights)):
        if value is not None and key not in rep.inputs:
            accepted = ", ".join(f"--{k}" for k in rep.inputs) or "no user inputs"
            raise UserError(f"reproduction {name!r} does not use --{key} (it accepts {accepted})")
    seeds = tuple(seeds) if seeds is not None else rep.seeds
    log(f"[{name}] {rep.paper}\n  claim: {rep.claim}\n  criterion: {rep.criterion}")
    t0 = time.time()
    outcome = rep.fn(ReproContext(name=name, seeds=seeds, scale=scale, log=log, data=data, weights=weights))
    wall = time.time() - t0
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name, "paper": rep.paper, "claim": rep.claim, "criterion": rep.criterion,
        "passed": bool(outcome.passed), "verdict": _verdict(outcome), "numbers": _plain(outcome.numbers),
        "notes": outcome.notes,
        "seeds": list(seeds), "scale": scale, "wall_s": round(wall, 2), "machine": machine_info(),
        "version": vislearn.__version__, "date": time.strftime("%Y-%m-%d"),
        **({"extra": _plain(outcome.extra)} if outcome.extra else {}),
    }
    atomic_write_json(out / f"{name}.json", record)
    if outcome.figure is not None:
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        outcome.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(outcome.figure)
        atomic_write_bytes(out / f"{name}.png", buf.getvalue())
    log(f"[{name}] {_verdict(outcome).upper()} in {wall:.0f}s -> {out / (name + '.json')}")
    return record


def _verdict(outcome: Any) -> str:
    return outcome.verdict or ("reproduced" if outcome.passed else "not reproduced")


def _plain(obj: Any) -> Any:
    """Tensors/numpy to plain JSON values, floats rounded to 6 significant digits."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return float(f"{v:.6g}") if v == v and abs(v) != float("inf") else str(v)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def write_results_table(results_dir: str | os.PathLike = "results") -> str:
    """Rewrite ``results/README.md`` from every ``*.json`` result there; returns the table text."""
    out = Path(results_dir)
    rows = []
    for path in sorted(out.glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if not {"name", "claim", "passed"} <= set(r):
            continue  # benchmark files share the folder
        plot = f"[plot]({r['name']}.png)" if (out / f"{r['name']}.png").exists() else ""
        verdict = r.get("verdict") or ("reproduced" if r["passed"] else "not reproduced")
        shown = "yes" if verdict == "reproduced" else ("**no**" if verdict == "not reproduced" else f"*{verdict}*")
        rows.append(f"| {r['name']} | {r.get('paper', '')} | {r['claim']} | {r.get('criterion', '')} | "
                    f"{shown} | {r.get('wall_s', '')} | {plot} |")
    bench = []
    for path in sorted(out.glob("bench_*.json")):
        try:
            b = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        bench.append(f"| {path.stem.removeprefix('bench_')} | {b.get('summary', '')} |")
    text = ("# Results\n\nWritten by `vislearn reproduce all` and `benchmarks/*.py`; each JSON holds the "
            "numbers, seeds, machine and version.\n\n## Reproductions (small scale, CPU)\n\n"
            "| name | paper | claim | criterion (stated before the run) | reproduced | wall s | plot |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    if bench:
        text += "\n## Benchmarks (ours vs the peer, one process)\n\n| benchmark | summary |\n|---|---|\n" + \
                "\n".join(bench) + "\n"
    atomic_write_bytes(out / "README.md", text.encode())
    return text

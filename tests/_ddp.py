"""Shared by the DDP tests: one `vislearn train` command run in one process and in two gloo processes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from _launch import PYTHON, job_env, run, torchrun_standalone
from vislearn.train.checkpoint import latest_checkpoint, load_safetensors


def train_one_and_two(train_args: list[str], tmp_path: Path) -> tuple[Path, Path]:
    """Run ``vislearn train *train_args`` alone and with ``torchrun --nproc_per_node=2``; return both out dirs."""
    cmd = ["-m", "vislearn.cli", "train", *train_args]
    outs = tmp_path / "one", tmp_path / "two"
    for launcher, out in (([PYTHON], outs[0]), (torchrun_standalone(2), outs[1])):
        run([*launcher, *cmd, "--out", str(out)], job_env(), timeout=300)
    return outs


def loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, mean training loss) pairs logged in ``metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The training module's state (model and loss parameters) in the run's newest checkpoint."""
    return load_safetensors(latest_checkpoint(run_dir) / "model.safetensors")

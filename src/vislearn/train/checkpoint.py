"""The one checkpoint format, written atomically.

A checkpoint is a directory ``<out>/checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors``: the training module's weights (and ``ema.safetensors`` when EMA is on);
* ``trainer.json``: step, epoch, position in the epoch, the config and the last metrics;
* ``trainer_state.pt``: optimizer, grad-scaler and RNG states, read back with
  :func:`vislearn.io.torch_load_safe` (tensors and plain containers only: never arbitrary pickles).

Every file is written atomically by :mod:`vislearn.io`; the directory itself is assembled
under a temporary name and renamed last, then ``latest.json`` is replaced atomically. A run killed
at any moment leaves either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from vislearn.errors import UserError
from vislearn.io import (
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_json,
    fsync_dir,
    new_file_mode,
    read_safetensors,
    torch_load_safe,
)


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (its metadata dropped)."""
    return read_safetensors(path)[0]


def save_checkpoint(out_dir: str | os.PathLike, step: int, *, model_state: dict[str, torch.Tensor],
                    trainer: dict[str, Any], state: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None, keep: int = 2) -> Path:
    """Write one complete checkpoint directory atomically and point ``latest.json`` at it."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step_{step:08d}.", suffix=".tmp"))
    try:
        atomic_save_safetensors(model_state, tmp / "model.safetensors")
        if ema_state is not None:
            atomic_save_safetensors(ema_state, tmp / "ema.safetensors")
        atomic_torch_save(state, tmp / "trainer_state.pt")
        atomic_write_json(tmp / "trainer.json", {**trainer, "step": step})
        os.chmod(tmp, new_file_mode(0o777))  # mkdtemp makes 0700, and the rename would keep it
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(root / "latest.json", {"step": step, "dir": final.name})
    for old in sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)[:-max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory under ``out_dir``, or ``None``."""
    root = Path(out_dir) / "checkpoints"
    pointer = root / "latest.json"
    if pointer.is_file():
        try:
            d = root / json.loads(pointer.read_text())["dir"]
            if (d / "trainer.json").is_file():
                return d
        except (json.JSONDecodeError, KeyError):
            pass  # fall back to scanning: the pointer is advisory
    dirs = sorted(p for p in root.glob("step_*") if p.is_dir() and (p / "trainer.json").is_file())
    return dirs[-1] if dirs else None


def load_checkpoint(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint directory: ``model``, ``ema`` (or None), ``trainer`` (JSON) and ``state``."""
    d = Path(ckpt_dir)
    for name in ("model.safetensors", "trainer.json", "trainer_state.pt"):
        if not (d / name).is_file():
            raise UserError(f"incomplete checkpoint {d}: {name} is missing")
    try:
        trainer = json.loads((d / "trainer.json").read_text())
        state = torch_load_safe(d / "trainer_state.pt")
    except Exception as e:
        raise UserError(f"corrupt checkpoint {d}: {type(e).__name__}: {str(e)[:200]}") from None
    ema = load_safetensors(d / "ema.safetensors") if (d / "ema.safetensors").is_file() else None
    return {"model": load_safetensors(d / "model.safetensors"), "ema": ema, "trainer": trainer, "state": state}

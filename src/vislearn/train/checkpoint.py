"""The one checkpoint format, written atomically.

A checkpoint is a directory ``<out>/checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors``: the training module's weights (and ``ema.safetensors`` when EMA is on);
* ``trainer.json``: step, epoch, position in the epoch, the config and the last metrics;
* ``trainer_state.pt``: optimizer, grad-scaler and RNG states, read back with
  :func:`vislearn.io.torch_load_safe` (tensors and plain containers only: never arbitrary pickles);
* ``checksums.json``: the SHA-256 of every other file, written last, so a truncated or
  byte-flipped file is found before anything is loaded (checkpoints written before it existed
  are read unchecked).

Every file is written atomically by :mod:`vislearn.io`; the directory itself is assembled
under a temporary name and renamed last, then ``latest.json`` is replaced atomically. A run killed
at any moment leaves either the previous complete checkpoint or the new complete one; a write
that fails (a full disk: ``OSError``) removes its partial directory and raises a ``UserError``
naming the folder, the previous checkpoint untouched. :func:`checkpoint_candidates` lists the
checkpoints newest first (``latest.json`` is advisory: one that is not an object naming a
``step_*`` folder is ignored), so a reader can fall back from a corrupt one to the one before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from vislearn.errors import UserError
from vislearn.io import (
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    new_file_mode,
    read_safetensors,
    save_weights,
    torch_load_safe,
)
from vislearn.train.metrics_log import dumps_strict

CHECKSUMS = "checksums.json"
_STEP_DIR = re.compile(r"step_\d{8}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step_{step:08d}.", suffix=".tmp"))
    except OSError as e:
        raise _write_error(final, e) from None
    try:
        atomic_save_safetensors(model_state, tmp / "model.safetensors")
        if ema_state is not None:
            atomic_save_safetensors(ema_state, tmp / "ema.safetensors")
        atomic_torch_save(state, tmp / "trainer_state.pt")
        atomic_write_bytes(tmp / "trainer.json", (dumps_strict({**trainer, "step": step}, indent=2) + "\n").encode())
        atomic_write_json(tmp / CHECKSUMS, {p.name: _sha256(p) for p in sorted(tmp.iterdir())})
        os.chmod(tmp, new_file_mode(0o777))  # mkdtemp makes 0700, and the rename would keep it
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        atomic_write_json(root / "latest.json", {"step": step, "dir": final.name})
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(final, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)[:-max(keep - 1, 0) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_error(final: Path, e: OSError) -> UserError:
    previous = [p.name for p in checkpoint_candidates(final.parent.parent) if p != final]
    kept = f"the previous checkpoint {previous[0]} is intact" if previous else "no earlier checkpoint exists"
    return UserError(f"cannot write checkpoint {final}: {e.strerror or e}; {kept} (free space or fix the "
                     "folder, then continue with --resume)")


def export_run(out_dir: Path, model: torch.nn.Module, ema_model: torch.nn.Module | None,
               summary: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """The end of a run: ``model.safetensors`` (``model_ema.safetensors``) and ``summary.json`` (strict JSON).

    ``metadata`` (the task's: class names, input size, the run's record) goes into both weights files,
    with ``vislearn_ema`` saying which one holds the EMA weights."""
    meta = dict(metadata or {})
    try:
        save_weights(model, out_dir / "model.safetensors", {**meta, "vislearn_ema": "false"})
        if ema_model is not None:
            save_weights(ema_model, out_dir / "model_ema.safetensors", {**meta, "vislearn_ema": "true"})
        atomic_write_bytes(out_dir / "summary.json", (dumps_strict(summary, indent=2) + "\n").encode())
    except OSError as e:
        raise UserError(f"cannot write the final weights into {out_dir}: {e.strerror or e}; the final "
                        f"checkpoint {latest_checkpoint(out_dir)} is intact (resume with --resume "
                        "to export again)") from None


def checkpoint_candidates(out_dir: str | os.PathLike) -> list[Path]:
    """Complete-looking checkpoint directories under ``out_dir``, newest first (``latest.json``'s first)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    dirs = sorted((p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / "trainer.json").is_file()),
                  reverse=True)
    try:
        pointer = json.loads((root / "latest.json").read_text())
        named = pointer.get("dir") if isinstance(pointer, dict) else None
    except (OSError, ValueError):
        named = None  # missing or unreadable: the pointer is advisory, scanning decides
    first = [p for p in dirs if p.name == named]
    return first + [p for p in dirs if p.name != named]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory under ``out_dir``, or ``None``."""
    found = checkpoint_candidates(out_dir)
    return found[0] if found else None


def verify_checkpoint(ckpt_dir: str | os.PathLike) -> None:
    """Raise a ``UserError`` naming the file when a checkpoint's file is missing, truncated or altered."""
    d = Path(ckpt_dir)
    sums_file = d / CHECKSUMS
    if not sums_file.is_file():
        return  # written before checksums existed: the loaders below still catch unreadable files
    try:
        sums = json.loads(sums_file.read_text())
        if not isinstance(sums, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        raise UserError(f"corrupt checkpoint {d}: {CHECKSUMS} is unreadable ({e})") from None
    for name, digest in sums.items():
        f = d / name
        if not f.is_file():
            raise UserError(f"incomplete checkpoint {d}: {name} is missing")
        if _sha256(f) != digest:
            raise UserError(f"corrupt checkpoint {d}: {f} does not match its checksum (truncated or altered)")


def load_checkpoint(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint directory: ``model``, ``ema`` (or None), ``trainer`` (JSON) and ``state``."""
    d = Path(ckpt_dir)
    for name in ("model.safetensors", "trainer.json", "trainer_state.pt"):
        if not (d / name).is_file():
            raise UserError(f"incomplete checkpoint {d}: {name} is missing")
    verify_checkpoint(d)
    out: dict[str, Any] = {}
    for key, name, read in (("trainer", "trainer.json", lambda p: json.loads(p.read_text())),
                            ("state", "trainer_state.pt", torch_load_safe),
                            ("model", "model.safetensors", load_safetensors),
                            ("ema", "ema.safetensors", load_safetensors)):
        if key == "ema" and not (d / name).is_file():
            out[key] = None
            continue
        try:
            out[key] = read(d / name)
        except Exception as e:
            raise UserError(f"corrupt checkpoint {d}: {name}: {type(e).__name__}: {str(e)[:200]}") from None
    t = out["trainer"]
    if not isinstance(t, dict) or not all(isinstance(t.get(k), int) for k in ("step", "epoch", "batch_in_epoch")):
        raise UserError(f"corrupt checkpoint {d}: trainer.json lacks the step, epoch and position")
    return out

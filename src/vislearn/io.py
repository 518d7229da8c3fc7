"""The ground floor for files: atomic writes, weights files with metadata, checked loading.

Everything that writes or reads a file of tensors goes through here (DESIGN.md, "io.py"):

* atomic writes (:func:`atomic_write_bytes`, :func:`atomic_write_json`, :func:`atomic_save_safetensors`,
  :func:`atomic_torch_save`, and :func:`atomic_write_with` for any writer that takes a path): a temp
  file in the same directory, fsynced, given the mode the umask allows a new file (``mkstemp`` makes
  0600), renamed over the target, the directory fsynced. A reader sees the old file or the new one,
  never a torn one.
* reading: :func:`read_safetensors` (tensors and metadata), :func:`read_state_dict` (safetensors,
  ``.pth``/``.pt``/``.bin`` and ``.npz``), :func:`read_metadata` (without the tensors) and
  :func:`torch_load_safe`, the one place that calls ``torch.load``: always ``weights_only=True``, so a
  user's file is never unpickled.
* :func:`load_state_dict_checked`: ``load_state_dict`` with one error naming missing, unexpected and
  mis-shaped keys; :func:`save_weights`: a model's weights with its name, options and normalisation.

This module imports only torch, safetensors, numpy, the standard library and :mod:`vislearn.errors`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from vislearn.errors import UserError

StateDict = dict[str, torch.Tensor]

# metadata keys of a vislearn weights file (written by save_weights, read by vislearn.models.convert)
META_FORMAT = "format"
META_MODEL = "vislearn_model"
META_KWARGS = "vislearn_kwargs"
META_NORMALIZATION = "vislearn_normalization"
META_CLASSES = "vislearn_classes"  # JSON list of class names in output order
META_IMAGE_SIZE = "vislearn_image_size"  # the input side the weights were trained at
META_EMA = "vislearn_ema"  # "true" for the exponential-moving-average weights
META_RECIPE = "vislearn_recipe"  # JSON record of the run (recipe, preset, data, settings)


# ------------------------------------------------------------------------------------------- writing
def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so a rename inside it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PROC_STATUS = "/proc/self/status"


def current_umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows (``os.umask`` sets it)."""
    try:
        with open(_PROC_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: set and restore (briefly visible to other threads)
    os.umask(mask)
    return mask


def new_file_mode(base: int = 0o666) -> int:
    """The mode ``open`` would give a new file (``base=0o777``: a new directory) under the current umask."""
    return base & ~current_umask()


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Run ``write(tmp)`` on a temp file beside ``path``, fsync it, give it the umask's mode, rename it.

    For writers that take a path (``torch.save``, safetensors, ``torch.jit``, ONNX); on any error the
    temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates 0600 and the rename keeps it: a results file must come out as any new file would
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write_with(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (non-JSON values as ``str``)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_save_safetensors(state: StateDict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (shared storage is cloned; safetensors refuses aliases)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (tensors and plain containers, so :func:`torch_load_safe` reads it back)."""
    atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def save_weights(model: nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state dict as safetensors with its name, options and normalisation (atomic).

    Duck-typed: ``model.model_name`` and ``model.model_kwargs`` (set by ``create_model``) and
    ``model.normalization`` are stored when present, so any layer can save a model without the registry.
    """
    meta = {META_FORMAT: "vislearn"}
    if getattr(model, "model_name", None):
        meta[META_MODEL] = model.model_name
        meta[META_KWARGS] = json.dumps(getattr(model, "model_kwargs", {}))
    norm = getattr(model, "normalization", None)
    if norm is not None:
        meta[META_NORMALIZATION] = json.dumps(norm)
    meta.update(extra_metadata or {})
    atomic_save_safetensors(model.state_dict(), path, meta)


# ------------------------------------------------------------------------------------------- reading
def torch_load_safe(path: str | os.PathLike) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True``: tensors and plain containers, never a pickle."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(path: str, e: Exception) -> UserError:
    if type(e).__name__ == "UnpicklingError":  # torch's message goes on to advise weights_only=False: not ours
        return UserError(f"refused weights file {path}: it holds Python objects other than tensors, and "
                         "vislearn never unpickles a file (save the state dict with torch.save or as safetensors)")
    first = (str(e).strip().splitlines() or [""])[0]
    return UserError(f"cannot read weights file {path}: {type(e).__name__}: {first[:200]}")


def read_safetensors(path: str | os.PathLike, load_tensors: bool = True) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a safetensors file (no tensors with ``load_tensors=False``).

    A corrupt or missing file is a ``UserError`` naming it.
    """
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()} if load_tensors else {}
            return tensors, dict(f.metadata() or {})
    except Exception as e:  # truncated, not safetensors, missing
        raise _unreadable(path, e) from None


def _existing_weights_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a weights file without reading its tensors (only safetensors files carry any)."""
    path = _existing_weights_file(path)
    if path.lower().endswith(".safetensors"):
        return read_safetensors(path, load_tensors=False)[1]
    return {}


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a weights file: ``.safetensors``, ``.npz`` (named arrays) or a torch file.

    A torch file (``.pth``/``.pt``/``.bin``) is read with :func:`torch_load_safe`; the usual wrappers
    (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's ``module.`` prefix are removed. A missing,
    corrupt or non-tensor file is a ``UserError`` naming the path.
    """
    path = _existing_weights_file(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        return read_safetensors(path)
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}, {}
        obj = torch_load_safe(path)
    except Exception as e:  # corrupt, truncated, or a pickle with arbitrary objects
        raise _unreadable(path, e) from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}, {}


def parse_metadata(meta: dict[str, str], path: str | os.PathLike) -> dict[str, Any]:
    """The vislearn entries of a weights file's metadata, validated: ``model``, ``kwargs``, ``normalization``,
    and from ``vislearn train``: ``classes`` (names in output order), ``image_size`` (the input side trained
    at), ``ema`` (EMA weights or not) and ``recipe`` (the run's record).

    A file's metadata is the user's (or anyone's) text: ``vislearn_kwargs`` must be a JSON object with
    string keys, ``vislearn_normalization`` a pair of equal-length lists of finite numbers (mean, std)
    with every std > 0, ``vislearn_model`` a non-empty string. Anything else is one ``UserError`` naming the
    file and the entry, before any of it reaches a model constructor.
    """
    path = os.fspath(path)
    out: dict[str, Any] = {}

    def bad(key: str, why: str) -> UserError:
        return UserError(f"weights file {path}: metadata {key!r} {why}")

    def parsed(key: str) -> Any:
        try:
            return json.loads(meta[key])
        except (TypeError, ValueError):
            raise bad(key, f"is not valid JSON: {str(meta[key])[:80]!r}") from None

    if META_MODEL in meta:
        if not isinstance(meta[META_MODEL], str) or not meta[META_MODEL].strip():
            raise bad(META_MODEL, "must be a model name")
        out["model"] = meta[META_MODEL]
        kwargs = parsed(META_KWARGS) if META_KWARGS in meta else {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
            raise bad(META_KWARGS, f"must be a JSON object of option names, got {str(meta.get(META_KWARGS))[:80]!r}")
        out["kwargs"] = kwargs
    if META_NORMALIZATION in meta:
        norm = parsed(META_NORMALIZATION)
        ok = isinstance(norm, list) and len(norm) == 2 and all(isinstance(v, list) and v for v in norm) \
            and len(norm[0]) == len(norm[1]) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                     and np.isfinite(x) for v in norm for x in v) \
            and all(s > 0 for s in norm[1])
        if not ok:
            raise bad(META_NORMALIZATION, "must be [mean list, std list] of equal length, finite, std > 0; "
                      f"got {str(meta[META_NORMALIZATION])[:80]!r}")
        out["normalization"] = (tuple(float(x) for x in norm[0]), tuple(float(x) for x in norm[1]))
    if META_CLASSES in meta:  # written by `vislearn train`: class names in output order
        classes = parsed(META_CLASSES)
        if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
            raise bad(META_CLASSES, "must be a JSON list of class names")
        out["classes"] = [str(c) for c in classes]
    if META_IMAGE_SIZE in meta:
        try:
            size = int(meta[META_IMAGE_SIZE])
        except (TypeError, ValueError):
            raise bad(META_IMAGE_SIZE, f"must be an integer, got {str(meta[META_IMAGE_SIZE])[:40]!r}") from None
        if size < 1:
            raise bad(META_IMAGE_SIZE, f"must be positive, got {size}")
        out["image_size"] = size
    if META_EMA in meta:
        if meta[META_EMA] not in ("true", "false"):
            raise bad(META_EMA, f"must be 'true' or 'false', got {str(meta[META_EMA])[:20]!r}")
        out["ema"] = meta[META_EMA] == "true"
    if META_RECIPE in meta:
        record = parsed(META_RECIPE)
        if not isinstance(record, dict):
            raise bad(META_RECIPE, "must be a JSON object (the run's record)")
        out["recipe"] = record
    return out


def load_state_dict_checked(model: nn.Module, sd: StateDict, source: str = "state dict", strict: bool = True) -> None:
    """``load_state_dict`` with one readable error naming missing, unexpected and mis-shaped keys.

    Mis-shaped keys are an error even when ``strict`` is off; ``strict=False`` only tolerates missing
    and unexpected keys (the ones present are loaded).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if shapes:
            parts.append(f"shape mismatch ({len(shapes)}): " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:8]))
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:8]))
        raise UserError(f"{source} does not fit {type(model).__name__}: " + " | ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)

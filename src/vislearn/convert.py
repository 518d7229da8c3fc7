"""Loading weights from local files, ours or a peer's, with exact key conversion.

Formats: ``.safetensors`` (ours carries the model name, options and normalisation in its metadata),
``.pth``/``.pt``/``.bin`` (read with ``torch.load(weights_only=True)``: never unpickled), and
``.npz`` of named arrays (TF-slim style). A model family registers converters with
:func:`register_converter`; each recognises a peer's state dict by its keys, maps it to ours and
names the input normalisation that source expects. Loading reports missing, unexpected and
mis-shaped keys by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from vislearn.errors import UserError

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Converter:
    """Maps a peer's state dict (``source``: e.g. "torchvision", "timm", "tf-slim") to one model family."""

    source: str
    model_prefix: str
    detect: Callable[[StateDict], bool]
    convert: Callable[[StateDict, nn.Module], StateDict]
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None


_CONVERTERS: list[Converter] = []


def register_converter(converter: Converter) -> Converter:
    """Add a converter; model files call this at import time."""
    _CONVERTERS.append(converter)
    return converter


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """Read tensors and metadata from a weights file, reporting a missing or corrupt file by name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}, {}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:  # corrupt, truncated, or a pickle with arbitrary objects
        raise UserError(f"cannot read weights file {path}: {type(e).__name__}: {str(e)[:200]}") from None
    # common wrappers: {"state_dict": ...}, {"model": ...}
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    return sd, {}


def save_weights(model: nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state dict as safetensors with its name, options and normalisation (atomic)."""
    from vislearn.train.checkpoint import atomic_save_safetensors

    meta = {"format": "vislearn"}
    if getattr(model, "model_name", None):
        meta["vislearn_model"] = model.model_name
        meta["vislearn_kwargs"] = json.dumps(getattr(model, "model_kwargs", {}))
    norm = getattr(model, "normalization", None)
    if norm is not None:
        meta["vislearn_normalization"] = json.dumps(norm)
    meta.update(extra_metadata or {})
    atomic_save_safetensors(model.state_dict(), path, meta)


def load_weights(model: nn.Module, path: str | os.PathLike, model_name: str = "", strict: bool = True) -> None:
    """Load a local weights file into ``model``, converting a peer's layout when one is recognised."""
    sd, meta = read_state_dict(path)
    saved_name = meta.get("vislearn_model")
    if saved_name and model_name and saved_name != model_name:
        raise UserError(f"{path} holds weights of model {saved_name!r}, not {model_name!r}")
    own = model.state_dict()
    normalization = None
    if not _matches(sd, own):
        for conv in _CONVERTERS:
            if model_name.startswith(conv.model_prefix) and conv.detect(sd):
                sd = conv.convert(sd, model)
                normalization = conv.normalization
                break
    if "vislearn_normalization" in meta:
        normalization = tuple(tuple(v) for v in json.loads(meta["vislearn_normalization"]))
    load_state_dict_checked(model, sd, source=os.fspath(path), strict=strict)
    if normalization is not None and hasattr(model, "normalization"):
        model.normalization = normalization


def _matches(sd: StateDict, own: StateDict) -> bool:
    return set(sd) == set(own)


def load_state_dict_checked(model: nn.Module, sd: StateDict, source: str = "state dict", strict: bool = True) -> None:
    """``load_state_dict`` with one readable error naming missing, unexpected and mis-shaped keys."""
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


def weights_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The vislearn metadata of a weights file: model name, options and normalisation (empty if none)."""
    _, meta = read_state_dict(path)
    out: dict[str, Any] = {}
    if "vislearn_model" in meta:
        out["model"] = meta["vislearn_model"]
        out["kwargs"] = json.loads(meta.get("vislearn_kwargs", "{}"))
    if "vislearn_normalization" in meta:
        out["normalization"] = json.loads(meta["vislearn_normalization"])
    return out


def create_model_from_weights(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild the model a vislearn weights file was saved from and load it."""
    from vislearn.models import create_model

    info = weights_metadata(path)
    if "model" not in info:
        raise UserError(f"{path} has no vislearn metadata; pass the model name explicitly")
    kwargs = {**info["kwargs"], **overrides}
    return create_model(info["model"], weights=os.fspath(path), **kwargs)

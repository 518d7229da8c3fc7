"""The one model registry: ``register_model``, ``create_model``, ``create_model_from_weights``, ``list_models``.

A model family registers a builder per name with a decorator (the timm pattern, without the layers
of indirection). ``create_model`` builds the model, applies a normalisation override and loads
weights from a local path: our safetensors file, or a peer's checkpoint that a converter in
:mod:`vislearn.models.convert` recognises by its keys. ``create_model_from_weights`` rebuilds the
model a vislearn weights file names, with the options stored in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.convert import implied_options, load_weights, weights_metadata
from vislearn.models.hub import is_remote, resolve
from vislearn.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and the defaults a user should know (input size, normalisation, paper)."""

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int] = (3, 224, 224)
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


def _ensure_loaded() -> None:
    # Importing the package imports every model family module, which registers its builders.
    import vislearn.models  # noqa: F401


_REGISTRY: Registry[ModelEntry] = Registry("model", load=_ensure_loaded)


def register_model(
    name: str | None = None,
    *,
    input_size: tuple[int, int, int] = (3, 224, 224),
    paper: str = "",
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(**kwargs) -> nn.Module`` under ``name`` (default: ``fn.__name__``)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        _REGISTRY.register(key, ModelEntry(key, fn, input_size, paper, dict(defaults)))
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style ``pattern``."""
    return _REGISTRY.names(pattern)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name is a ``UserError`` listing the closest names."""
    return _REGISTRY.get(name)


def create_model(
    name: str,
    num_classes: int | None = None,
    weights: str | None = None,
    normalization: tuple[Any, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: output classes (``None`` keeps the family's default).
        weights: a local path: a vislearn ``.safetensors`` file, or a peer's checkpoint (``.pth``,
            ``.safetensors``, ``.npz``) recognised by its keys; or a named remote source,
            ``torchvision:TAG`` / ``hf-hub:ORG/NAME`` (:mod:`vislearn.models.hub`), whose data config
            becomes ``model.data_config``. Missing, unexpected and mis-shaped keys are reported by name.
        normalization: ``(mean, std)`` on the [0, 1] scale that ``forward`` applies first; by default
            the family's (or, when loading a peer's weights, that source's) normalisation.
        **overrides: architecture options of the family (``aux_logits``, ``width``, ...).
    """
    entry = get_entry(name)
    kwargs = {**entry.defaults, **overrides}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = entry.builder(**kwargs)
    except TypeError as e:  # an unknown keyword is a user error, not a traceback
        raise UserError(f"bad option for model {name!r}: {e}") from None
    model.model_name = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if _jsonable(v)}
    if weights is not None:
        load_weights(model, weights, model_name=name)
    if normalization is not None:
        set_normalization(model, normalization)
    return model


def create_model_from_weights(path: str | os.PathLike, name: str | None = None, **overrides: Any) -> nn.Module:
    """Rebuild the model a weights file was saved from, load the file, and return it.

    A vislearn file names its model and options; ``overrides`` change options (``num_classes=...``).
    ``name`` is needed for a peer's file (torchvision, timm, TF-slim: no metadata); given with a
    vislearn file of another model, loading fails naming both. The stored options are used only when
    ``name`` is the stored model. A named remote source (``torchvision:TAG`` needs ``name``;
    ``hf-hub:ORG/NAME`` implies it) is resolved once and its file's keys imply the options.
    """
    if is_remote(path):
        remote = resolve(os.fspath(path), name)
        kwargs = {**implied_options(remote.path, remote.model), **overrides}
        model = create_model(remote.model, **kwargs)
        load_weights(model, remote, model_name=remote.model)
        return model
    info = weights_metadata(path)
    stored = info.get("model")
    if name is None and stored is None:
        raise UserError(f"{path} has no vislearn metadata; pass the model name explicitly")
    name = name or stored
    if stored is None:  # a peer's file: the options its keys imply (Inception-v3 without the aux head)
        kwargs = {**implied_options(path, name), **overrides}
    else:
        kwargs = {**(info["kwargs"] if stored == name else {}), **overrides}
    try:
        return create_model(name, weights=os.fspath(path), **kwargs)
    except (TypeError, UserError) as e:  # a stored option the model does not take, or of the wrong type
        if os.fspath(path) in str(e):
            raise
        raise UserError(f"{path}: the options {kwargs} do not fit model {name!r}: {e}") from None


def set_normalization(model: nn.Module, normalization: tuple[Any, Any]) -> None:
    """Set ``model.normalization`` with a clear error for a model that does not own one."""
    if not hasattr(model, "normalization"):
        raise UserError(f"{type(model).__name__} has no input normalisation to set")
    model.normalization = normalization


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False

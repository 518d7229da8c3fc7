"""Loading weights from local files, ours or a peer's, with exact key conversion.

Files are read by :func:`vislearn.io.read_state_dict`: ``.safetensors`` (ours carries the model name,
options and normalisation in its metadata), ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``:
never unpickled) and ``.npz`` of named arrays (TF-slim style). A model family registers converters
with :func:`register_converter`; each recognises a peer's state dict by its keys, maps it to ours and
names the input normalisation that source expects. Loading reports missing, unexpected and
mis-shaped keys by name (:func:`vislearn.io.load_state_dict_checked`).

:func:`load_weights` also takes a named remote source (``torchvision:TAG``, ``hf-hub:ORG/NAME``,
:mod:`vislearn.models.hub`): the file comes from that library's cache, goes through the same reader
and converters, and its :class:`~vislearn.data.transforms.DataConfig` sets the model's normalisation and
is kept as ``model.data_config``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from vislearn.data.transforms import DataConfig
from vislearn.errors import UserError
from vislearn.io import (
    META_MODEL,
    StateDict,
    load_state_dict_checked,
    parse_metadata,
    read_metadata,
    read_state_dict,
)
from vislearn.models.hub import RemoteWeights, is_remote, model_for, resolve
from vislearn.registry import Registry

__all__ = ["Converter", "StateDict", "implied_options", "load_weights", "register_converter", "weights_metadata"]


@dataclass(frozen=True)
class Converter:
    """Maps a peer's state dict (``source``: e.g. "torchvision", "timm", "tf-slim") to one model family."""

    source: str
    model_prefix: str
    detect: Callable[[StateDict], bool]
    convert: Callable[[StateDict, nn.Module], StateDict]
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # builder options the file's keys imply (e.g. ``aux_logits`` from an ``AuxLogits.*`` head), so a peer's
    # checkpoint loads without options the CLI does not have
    options: Callable[[StateDict], dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return f"{self.source}:{self.model_prefix}"


# tried in registration order; the first whose prefix fits the model name and whose detect() accepts wins
_CONVERTERS: Registry[Converter] = Registry("converter")


def register_converter(converter: Converter) -> Converter:
    """Add a converter (``source:model_prefix`` must be new); model files call this at import time."""
    return _CONVERTERS.register(converter.name, converter)


def find_converter(sd: StateDict, model_name: str) -> Converter | None:
    """The first registered converter for ``model_name`` that recognises ``sd``'s keys, or ``None``."""
    for conv in _CONVERTERS.values():
        if model_name.startswith(conv.model_prefix) and conv.detect(sd):
            return conv
    return None


def implied_options(path: str | os.PathLike, model_name: str) -> dict[str, Any]:
    """The builder options a peer's weights file implies for ``model_name`` (empty when no converter
    recognises it or the converter infers none)."""
    sd, meta = read_state_dict(path)
    if META_MODEL in meta:
        return {}
    conv = find_converter(sd, model_name)
    return conv.options(sd) if conv is not None and conv.options is not None else {}


def load_weights(model: nn.Module, path: str | os.PathLike | RemoteWeights, model_name: str = "",
                 strict: bool = True) -> DataConfig | None:
    """Load weights into ``model``, converting a peer's layout when one is recognised.

    ``path`` is a local file, a named remote source (``torchvision:TAG``, ``hf-hub:ORG/NAME``) or one
    already resolved by :func:`vislearn.models.hub.resolve`. Returns the remote weights' data config
    (also set as ``model.data_config``, with ``model.normalization`` from it), ``None`` for a local file.
    """
    remote = None
    if isinstance(path, RemoteWeights) or is_remote(path):
        remote = path if isinstance(path, RemoteWeights) else resolve(path, model_name or None)
        path = remote.path
    sd, meta = read_state_dict(path)
    checked = parse_metadata(meta, path)
    saved_name = checked.get("model")
    if saved_name and model_name and saved_name != model_name:
        raise UserError(f"{path} holds weights of model {saved_name!r}, not {model_name!r}")
    normalization = None
    if set(sd) != set(model.state_dict()):
        conv = find_converter(sd, model_name)
        if conv is not None:
            sd = conv.convert(sd, model)
            normalization = conv.normalization
    if "normalization" in checked:
        normalization = checked["normalization"]
    if remote is not None:
        normalization = remote.data_config.normalization
    load_state_dict_checked(model, sd, source=remote.spec if remote is not None else os.fspath(path), strict=strict)
    if normalization is not None and hasattr(model, "normalization"):
        model.normalization = normalization
    if remote is None:
        return None
    model.data_config = remote.data_config
    return remote.data_config


def weights_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The vislearn metadata of a weights file: model name, options and normalisation (empty if none).

    For a named remote source, only the model it implies (``hf-hub:``), without touching any cache."""
    if is_remote(path):
        name = model_for(os.fspath(path))
        return {"model": name} if name else {}
    return parse_metadata(read_metadata(path), path)

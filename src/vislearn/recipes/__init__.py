"""Recipes: one file per paper, each a config dataclass with ``quick`` and ``paper`` presets.

A recipe is configuration plus the few functions that differ (DESIGN.md principle 3)::

    @register_recipe("batchnorm")
    class BatchNormRecipe(Recipe):
        Config = BatchNormConfig                      # a dataclass inheriting TrainConfig
        presets = {"quick": BatchNormConfig(...), "paper": BatchNormConfig(...)}

        def build(self, cfg, data=None) -> Task: ...  # model, datasets, loss module, evaluate

``vislearn train NAME --preset quick --set key=value`` calls :func:`run` (:mod:`vislearn.recipes.runner`):
it resolves the preset, applies overrides (:func:`apply_overrides` parses each value by the field's
type), seeds, builds the :class:`Task` and runs the one :class:`~vislearn.train.Trainer`;
:func:`evaluate` scores saved weights through the same path.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from typing import Any, ClassVar

from vislearn._discover import import_submodules
from vislearn.errors import UserError
from vislearn.registry import Registry
from vislearn.train.engine import Task, TrainConfig
from vislearn.train.rules import DERIVED, check_config

# The data-loader settings of every ``paper`` preset (GPU training on data read from disk): worker
# processes decode and augment while the GPU trains, kept alive across epochs, batches page-locked.
# Eight workers keep up with one GPU at the paper sizes (benchmarks/data.py measures decode+augment
# img/s per worker on your machine); ``quick`` presets keep 0 (CPU, embedded data).
PAPER_LOADING: dict[str, Any] = {"num_workers": 8, "persistent_workers": True, "pin_memory": True}


class Recipe:
    """Base class: subclasses set ``Config``, ``presets`` and implement :meth:`build`.

    ``data_formats`` maps a ``--data`` folder's layout (:func:`vislearn.data.layout.detect_layout`) to
    the value of the config's ``dataset`` setting that reads it; ``None``: :meth:`build` reads any
    ``--data`` itself; ``{}``: the recipe trains on embedded data only and refuses ``--data``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = TrainConfig
    presets: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""
    data_formats: ClassVar[dict[str, str] | None] = None

    def build(self, cfg: Any, data: str | None = None) -> Task:
        raise NotImplementedError

    def config(self, preset: str = "quick", overrides: list[str] | dict[str, Any] | None = None,
               data: str | None = None, base: Any = None) -> Any:
        """The preset's config (or ``base``) with ``key=value`` overrides applied, the dataset chosen for
        ``data`` and every value checked against its rule (:mod:`vislearn.train.rules`); a fresh copy.

        A length or batch the user sets directly (``steps``, ``batch_size``, ``decay_every``) wins over
        the preset's epoch- or per-replica form of it, which is turned off; setting both forms is an error.
        """
        if base is None:
            if preset not in self.presets:
                raise UserError(f"recipe {self.name!r} has no preset {preset!r}; choose one of "
                                f"{', '.join(sorted(self.presets))}")
            base = self.presets[preset]
        cfg = apply_overrides(base, overrides or [])
        keys = set(overrides) if isinstance(overrides, dict) else {_split(o)[0] for o in overrides or []}
        changes: dict[str, Any] = {}
        for derived, plain in DERIVED.items():
            if not hasattr(cfg, derived):
                continue
            if derived in keys and plain in keys and getattr(cfg, derived) > 0:
                raise UserError(f"set {plain} or {derived}, not both ({derived} > 0 replaces {plain})")
            if plain in keys and derived not in keys and getattr(cfg, derived) > 0:
                changes[derived] = type(getattr(cfg, derived))(0)  # the user's own number wins
        if changes:
            cfg = dataclasses.replace(cfg, **changes)
        return check_config(self._dataset_for(cfg, data, "dataset" in keys))

    def _dataset_for(self, cfg: Any, data: str | None, named: bool) -> Any:
        """``cfg`` with ``dataset`` set to what reads the ``--data`` folder (detected unless ``named``)."""
        formats = self.data_formats
        if data is None or formats is None:
            return cfg
        if not formats:
            raise UserError(f"recipe {self.name!r} trains on its embedded data only; drop --data {data}")
        from vislearn.data.layout import LAYOUTS, detect_layout

        readable = "; ".join(f"{LAYOUTS[k]} (dataset={v})" for k, v in formats.items())
        if named:
            if cfg.dataset not in formats.values():
                raise UserError(f"dataset={cfg.dataset} is embedded data, so --data {data} would be ignored; "
                                f"drop one of them (recipe {self.name!r} reads {readable})")
            return cfg
        layout = detect_layout(data)
        if layout not in formats:
            raise UserError(f"--data {data} looks like {LAYOUTS[layout]}; recipe {self.name!r} reads {readable}")
        return dataclasses.replace(cfg, dataset=formats[layout])


_RECIPES: Registry[type[Recipe]] = Registry("recipe")


def register_recipe(name: str):
    """Class decorator registering a :class:`Recipe` under ``name``."""

    def wrap(cls: type[Recipe]) -> type[Recipe]:
        _RECIPES.register(name, cls)
        cls.name = name
        return cls

    return wrap


def list_recipes() -> list[str]:
    return _RECIPES.names()


def get_recipe(name: str) -> Recipe:
    return _RECIPES.get(name)()


def _parse_value(text: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--set {key}: expected true/false, got {text!r}")
    if typ in (int, float, str):
        try:
            return typ(text)
        except ValueError:
            raise UserError(f"--set {key}: expected {typ.__name__}, got {text!r}") from None
    if origin in (tuple, list):
        args = typing.get_args(typ)
        inner = args[0] if args else str
        parts = [p for p in text.replace(";", ",").split(",") if p != ""]
        return origin(_parse_value(p, inner, key) for p in parts)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _parse_value(text, args[0], key)
    return text


def apply_overrides(cfg: Any, overrides: list[str] | dict[str, Any]) -> Any:
    """A copy of dataclass ``cfg`` with ``key=value`` strings (or a dict) applied, type-checked by field."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.5)
            raise UserError(f"unknown setting {key!r}" + (f"; closest: {', '.join(close)}" if close else
                                                          f"; known: {', '.join(sorted(fields))}"))
        if isinstance(value, str):
            value = _parse_value(value, hints[key], key)
        elif isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            value = tuple(value)  # a config read back from JSON
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


import_submodules(sys.modules[__name__])

# The one way to run a recipe (kept in its own module; re-exported as vislearn.recipes.run/evaluate).
from vislearn.recipes.runner import RecipeRun, build, evaluate, run  # noqa: E402,F401

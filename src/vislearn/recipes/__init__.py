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


class Recipe:
    """Base class: subclasses set ``Config``, ``presets`` and implement :meth:`build`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = TrainConfig
    presets: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""

    def build(self, cfg: Any, data: str | None = None) -> Task:
        raise NotImplementedError

    def config(self, preset: str = "quick", overrides: list[str] | dict[str, Any] | None = None) -> Any:
        """The preset's config with ``key=value`` overrides applied (a fresh copy each call)."""
        if preset not in self.presets:
            raise UserError(f"recipe {self.name!r} has no preset {preset!r}; choose one of "
                            f"{', '.join(sorted(self.presets))}")
        return apply_overrides(self.presets[preset], overrides or [])


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
        changes[key] = _parse_value(value, hints[key], key) if isinstance(value, str) else value
    return dataclasses.replace(cfg, **changes)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise UserError(f"--set expects key=value, got {item!r}")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


import_submodules(sys.modules[__name__])

# The one way to run a recipe (kept in its own module; re-exported as vislearn.recipes.run/evaluate).
from vislearn.recipes.runner import RecipeRun, build, evaluate, run  # noqa: E402,F401

"""What ``vislearn train RECIPE --help`` and ``--show-config`` print: a recipe's settings and what will run.

:func:`settings_table` lists every setting of a recipe with its preset value, its allowed values (the
rules of :mod:`vislearn.train.rules`) and the one-line comment beside the field in the config class.
:func:`resolved_config` is the config a run would use after :func:`vislearn.train.config.resolve_config`
(steps from ``epochs``, the batch from ``batch_per_replica`` at this ``WORLD_SIZE``, ``decay_every`` from
``decay_epochs``), building the datasets only when the dataset length is needed.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from typing import Any

from vislearn.errors import UserError
from vislearn.recipes import get_recipe
from vislearn.recipes.runner import Overrides, build, run_record
from vislearn.train.config import resolve_config
from vislearn.train.rules import DERIVED, rules_of

__all__ = ["field_comments", "resolved_config", "settings_table"]

# one line for the engine settings that carry no comment in vislearn.train.config
_NOTES = {
    "lr": "learning rate (after warmup, before the schedule's decay)", "momentum": "SGD/RMSProp momentum",
    "nesterov": "Nesterov momentum (SGD)", "weight_decay": "L2 weight decay",
    "adam_beta2": "Adam/AdamW second-moment decay", "rmsprop_decay": "RMSProp squared-gradient decay",
    "warmup_steps": "linear learning-rate warmup, in steps", "decay_rate": "staircase/exponential factor per period",
    "min_lr_ratio": "cosine/linear floor as a fraction of lr", "channels_last": "NHWC memory layout",
    "sync_bn": "synchronise BN statistics across processes", "keep_checkpoints": "newest checkpoints kept",
    "log_every": "steps between logged training metrics (and progress lines without a terminal)",
    "seed": "random seed (model init, data order)", "num_workers": "data-loading worker processes",
    "persistent_workers": "keep data-loading workers alive across epochs",
    "pin_memory": "page-locked batches for host-to-GPU copies (CUDA only)",
    "image_size": "input side in pixels", "label_smoothing": "label smoothing of the cross-entropy",
    "aux_weight": "weight of the auxiliary classifier's loss", "drop_rate": "dropout before the classifier",
}

_FIELD_LINE = re.compile(r"\s+(\w+)\s*:[^=#]+=[^#]*#\s*(.+?)\s*$")


def field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` on each field's line in ``cls`` and its dataclass bases (the subclass's wins;
    :data:`_NOTES` for engine settings without one)."""
    out: dict[str, str] = dict(_NOTES)
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines, _ = inspect.getsourcelines(klass)
        except (OSError, TypeError):
            continue
        for line in lines:
            m = _FIELD_LINE.match(line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def settings_table(name: str, preset: str = "quick") -> str:
    """Every setting of recipe ``name``: the ``preset``'s value, what is allowed, and its comment."""
    recipe = get_recipe(name)
    cfg = recipe.config(preset)
    rules, notes = rules_of(type(cfg)), field_comments(type(cfg))
    rows = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        rule = rules.get(f.name)
        allowed = rule.text if rule else ("true | false" if isinstance(value, bool) else
                                          "finite" if isinstance(value, float) else "")
        rows.append((f.name, shown or '""', allowed, notes.get(f.name, "")))
    w0, w1, w2 = (max(len(r[i]) for r in rows) for i in range(3))
    w1 = min(w1, 24)
    head = (f"settings of recipe {name!r} (values of preset {preset!r}; presets: {', '.join(recipe.presets)}); "
            "change one with --set KEY=VALUE")
    lines = [head] + [f"  {n:<{w0}}  {v:<{w1}}  {a:<{w2}}  {c}".rstrip() for n, v, a, c in rows]
    derived = ", ".join(f"{d} > 0 replaces {p}" for d, p in DERIVED.items())
    lines.append(f"  ({derived}; a value given with --set wins over the preset's other form)")
    return "\n".join(lines)


def resolved_config(name: str, preset: str = "quick", overrides: Overrides = None, data: str | None = None,
                    world_size: int | None = None) -> dict[str, Any]:
    """The run's record with ``steps``/``batch_size``/``decay_every`` as they will run, and ``resolved``
    saying where each came from. The datasets are built only when ``epochs`` or ``decay_epochs`` is
    set (an epoch's length needs them); a dataset that cannot be opened leaves a note instead."""
    recipe = get_recipe(name)
    cfg = recipe.config(preset, overrides, data)
    world = world_size or int(os.environ.get("WORLD_SIZE", "1") or 1)
    task, notes = None, {}
    if cfg.batch_per_replica > 0:
        notes["batch_size"] = f"batch_per_replica {cfg.batch_per_replica} × {world} processes (WORLD_SIZE)"
    if cfg.lr_per_replica > 0:
        notes["lr"] = f"lr_per_replica {cfg.lr_per_replica:g} × {world} processes (WORLD_SIZE)"
    if cfg.epochs > 0 or cfg.decay_epochs > 0:
        try:
            _, task = build(name, preset, overrides, data)
        except UserError as e:
            notes["steps"] = f"resolved at start from epochs={cfg.epochs:g} (the dataset is needed: {e})"
            return {**run_record(name, preset, data, cfg), "resolved": notes}
        n = len(task.train_set)
        out = resolve_config(cfg, n, world)
        per_epoch = max(1, n // out.batch_size)
        if cfg.epochs > 0:
            notes["steps"] = (f"epochs {cfg.epochs:g} × {per_epoch} steps per epoch "
                              f"({n} images // batch {out.batch_size})")
        if cfg.decay_epochs > 0:
            notes["decay_every"] = f"decay_epochs {cfg.decay_epochs:g} × {per_epoch} steps per epoch"
    else:
        out = resolve_config(cfg, 1, world)
    return {**run_record(name, preset, data, out, task), "resolved": notes}

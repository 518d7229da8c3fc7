"""The one way to run a recipe: resolve the config, seed, build the :class:`Task`, run the one Trainer.

``vislearn train``, ``vislearn eval`` and every reproduction go through :func:`run` and
:func:`evaluate`, so an arm of a reproduction is a ``vislearn train NAME --preset P --set k=v``
command line and seeding happens here only for what a recipe builds:

1. the preset's config with typed overrides (:meth:`Recipe.config`, a fresh copy; the recipe never
   changes it while building);
2. ``seed_everything(cfg.seed)`` right before :meth:`Recipe.build`, so the model's initialisation
   (and anything else the build draws, e.g. Proxy-NCA's proxies) is a function of ``cfg.seed``;
3. the engine then derives the run's own per-process stream (``cfg.seed + rank``) when it is set up,
   and resolves ``epochs``/``batch_per_replica``/``decay_epochs`` where the dataset length and world
   size are known (:func:`vislearn.train.engine.resolve_config`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vislearn.errors import UserError
from vislearn.io import META_CLASSES, META_IMAGE_SIZE, META_RECIPE
from vislearn.recipes import apply_overrides, get_recipe
from vislearn.train.engine import Task, Trainer, TrainResult, seed_everything
from vislearn.train.run_dir import resolve_resume

__all__ = ["RecipeRun", "build", "describe_weights", "evaluate", "run", "run_record"]

Overrides = list[str] | dict[str, Any] | None


@dataclass
class RecipeRun(TrainResult):
    """A :class:`TrainResult` plus the config it ran and the task it built (``task.module`` holds
    the trained weights, so in-memory runs can be probed afterwards)."""

    cfg: Any = None
    task: Task | None = None


def build(name: str, preset: str = "quick", overrides: Overrides = None,
          data: str | None = None) -> tuple[Any, Task]:
    """``(cfg, task)`` for recipe ``name``: the preset with ``overrides``, seeded by ``cfg.seed``, built."""
    recipe = get_recipe(name)
    cfg = recipe.config(preset, overrides, data)
    seed_everything(cfg.seed)  # model initialisation is part of the run: a function of cfg.seed only
    return cfg, recipe.build(cfg, data)


def run_record(name: str, preset: str, data: str | None, cfg: Any, task: Task | None = None) -> dict[str, Any]:
    """What a run stores about itself (checkpoints, ``summary.json``, the weights' metadata): the recipe,
    preset, ``--data`` folder, every setting, and the class count and training-set size once built."""
    record: dict[str, Any] = {"recipe": name, "preset": preset, "data": data, **dataclasses.asdict(cfg)}
    if task is not None:
        classes = getattr(task.train_set, "classes", None)
        if classes:
            record["dataset_classes"] = len(classes)
        record["train_size"] = len(task.train_set)
    return record


def describe_weights(record: dict[str, Any], task: Task) -> dict[str, str]:
    """The weights-file metadata a user needs later (:func:`vislearn.models.convert.weights_metadata`):
    class names in output order, the input size trained at, and the run's settings (so ``vislearn eval``
    rebuilds the same architecture without repeated ``--set``)."""
    meta = {META_RECIPE: json.dumps(record, default=str)}
    classes = getattr(task.train_set, "classes", None)
    if classes:
        meta[META_CLASSES] = json.dumps([str(c) for c in classes])
    size = record.get("image_size")
    if isinstance(size, int) and size > 0:
        meta[META_IMAGE_SIZE] = str(size)
    return meta


def run(name: str, preset: str = "quick", overrides: Overrides = None, data: str | None = None,
        out: str | os.PathLike | None = None, resume: bool | str = False, progress: bool = True, *,
        callbacks: list[Callable[[Trainer, int], None]] | None = None,
        on_build: Callable[[Any, Task], None] | None = None) -> RecipeRun:
    """Train recipe ``name`` and return its :class:`RecipeRun` (a :class:`TrainResult`).

    Args:
        name, preset, overrides: the recipe, its preset and ``key=value`` strings or a dict of
            field values (parsed by each field's type).
        data: dataset path (default: the recipe's embedded data).
        out: output directory (checkpoints, ``metrics.jsonl``, ``model.safetensors``); ``None`` keeps
            everything in memory. A directory that already holds a run needs ``resume=True``.
        resume: continue from the newest checkpoint in ``out``; ``"auto"``: continue when there is
            one, else start fresh (what ``torchrun --max-restarts`` reruns); see :mod:`vislearn.train.run_dir`.
        progress: draw a progress bar on the main process when stderr is a terminal.
        callbacks: ``fn(trainer, step)`` after each optimizer step (passed to the Trainer).
        on_build: ``fn(cfg, task)`` after the build and before the Trainer exists (probing the
            initial model without touching the run's random stream, which the engine seeds next).
    """
    recipe = get_recipe(name)
    cfg = recipe.config(preset, overrides, data)  # validate overrides before touching the disk
    if out is not None:
        resolve_resume(Path(out), resume)  # refuse a wrong --out before building (the engine decides again)
    cfg, task = build(name, preset, overrides, data)
    if on_build is not None:
        on_build(cfg, task)
    record = run_record(name, preset, data, cfg, task)
    task.metadata = {**describe_weights(record, task), **task.metadata}
    trainer = Trainer(cfg, task, out, resume=resume, progress=progress, callbacks=callbacks,
                      config_record=record)
    result = trainer.fit()
    return RecipeRun(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)},
                     cfg=cfg, task=task)


def evaluate(name: str, weights: str | os.PathLike, preset: str = "quick", overrides: Overrides = None,
             data: str | None = None) -> dict[str, float]:
    """The recipe's evaluation of saved weights, through the same resolution and build as :func:`run`.

    Weights written by ``vislearn train NAME`` carry the run's settings: they replace the preset (so
    the architecture options need no repeating), and ``overrides`` apply on top. Named remote weights
    (``torchvision:TAG``, ``hf-hub:ORG/NAME``) set the model's normalisation and, on an evaluation set
    with a ``transform`` (image folders), its resize/crop/interpolation from their data config.
    """
    import torch
    from torch.utils.data import DataLoader

    from vislearn.models.convert import load_weights, weights_metadata

    stored = weights_metadata(weights).get("recipe") or {}
    if stored.get("recipe") == name:
        recipe = get_recipe(name)
        fields = {f.name for f in dataclasses.fields(recipe.Config)}
        start = recipe.presets.get(stored.get("preset")) or recipe.Config()
        base = apply_overrides(start, {k: v for k, v in stored.items() if k in fields})
        cfg = recipe.config(overrides=overrides, data=data, base=base)
        seed_everything(cfg.seed)
        task = recipe.build(cfg, data)
    else:
        cfg, task = build(name, preset, overrides, data)
    if task.evaluate is None or task.eval_set is None:
        raise UserError(f"recipe {name!r} has no evaluation")
    model = task.model_of(task.module)
    config = load_weights(model, weights, model_name=getattr(model, "model_name", ""))
    if config is not None and hasattr(task.eval_set, "transform"):
        task.eval_set.transform = config.transform()  # named remote weights bring their own eval transform
    task.module.eval()
    model.eval()
    loader = DataLoader(task.eval_set, batch_size=cfg.eval_batch_size or cfg.batch_size,
                        collate_fn=task.collate_fn)
    with torch.no_grad():
        return {k: float(v) for k, v in task.evaluate(model, loader).items()}

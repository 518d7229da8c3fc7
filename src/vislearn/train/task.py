"""What a recipe gives the engine (:class:`Task`) and what :meth:`Trainer.fit` returns (:class:`TrainResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from vislearn.errors import UserError
from vislearn.train.hooks import Hook


@dataclass
class Task:
    """What a recipe gives the engine.

    Attributes:
        module: training module; ``module(batch)`` returns ``{"loss": scalar, ...scalars}``.
            Parameters of losses (Proxy-NCA's proxies) belong inside it so DDP synchronises them.
        train_set: map-style dataset of training samples.
        eval_set: optional evaluation dataset.
        evaluate: ``evaluate(model, loader) -> {name: float}``, given ``model`` (below; the EMA
            copy's when the EMA weights are evaluated) in eval mode under ``torch.no_grad``, on
            the main process; a :class:`~vislearn.train.evaluation.ShardedEvaluation` runs on every
            process, each on its share of ``eval_set``, its results gathered exactly.
        param_groups: optimizer groups over ``module``'s parameters (each may carry ``lr_mult``);
            default: one group of all parameters.
        collate_fn: collate for both loaders (default: torch's).
        model: what is evaluated and exported (``model.safetensors``, and ``model_ema.safetensors``
            from the EMA copy at the same submodule path): a submodule of ``module``, or ``module``
            itself when None. A module outside ``module`` is allowed without an EMA (the recipe
            keeps it current, e.g. the perceptual head written from the best held-out state).
        hooks: called once per optimizer step (:mod:`vislearn.train.hooks`).
        metadata: strings stored in the exported weights files (class names, input size, the run's
            settings); the engine adds whether a file holds the EMA weights.
    """

    module: nn.Module
    train_set: Dataset
    eval_set: Dataset | None = None
    evaluate: Callable[[nn.Module, DataLoader], dict[str, float]] | None = None
    param_groups: list[dict[str, Any]] | None = None
    collate_fn: Callable | None = None
    model: nn.Module | None = None
    hooks: list[Hook] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def model_path(self) -> str | None:
        """``model``'s submodule path inside ``module`` (``""`` for the module itself; None: outside it)."""
        if self.model is None:
            return ""
        return next((name for name, m in self.module.named_modules() if m is self.model), None)

    def model_of(self, root: nn.Module) -> nn.Module:
        """The model inside ``root``: ``module`` itself or an EMA copy of it (the same submodule path)."""
        path = self.model_path()
        if path is None:
            if root is not self.module:
                raise UserError("Task.model is not a submodule of Task.module, so a copy of the module "
                                "(the EMA) has no counterpart of it")
            return self.model
        return root.get_submodule(path)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the history of logged/evaluated metrics and where files went."""

    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False  # stopped by SIGTERM/SIGINT: checkpointed, no final evaluation or export
    out_dir: Path | None = None
    stopped_early: bool = False  # a hook's should_stop ended training at ``step`` (< cfg.steps)

"""The engine's settings (:class:`TrainConfig`) and their resolution against the data and the world size.

A recipe's config dataclass inherits :class:`TrainConfig`; :func:`resolve_config` is called by the
:class:`~vislearn.train.engine.Trainer` where the dataset length and the number of processes are
known, so a config is never rewritten while a recipe builds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vislearn.errors import UserError

__all__ = ["TrainConfig", "check_run", "resolve_config"]


@dataclass
class TrainConfig:
    """Engine settings shared by every recipe (a recipe's config dataclass inherits these)."""

    steps: int = 1000  # optimizer steps in total
    batch_size: int = 64  # global batch per optimizer step, split evenly over processes and micro-batches
    grad_accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adam | adamw | rmsprop | rmsprop_tf
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    weight_decay_end: float = -1.0  # < 0: constant; else cosine from weight_decay (> 0) to this over the run (DINO)
    adam_beta2: float = 0.999
    optimizer_eps: float = -1.0  # < 0: the optimizer's own default
    rmsprop_decay: float = 0.9
    schedule: str = "constant"  # constant | cosine | staircase | exponential | linear
    warmup_steps: int = 0
    decay_every: int = 1  # staircase/exponential period, in steps
    decay_rate: float = 1.0
    min_lr_ratio: float = 0.0
    clip_grad: float = 0.0  # max global gradient norm; 0 disables
    ema_decay: float = 0.0  # 0 disables the exponential moving average of weights
    ema_eval: bool = True  # evaluate the EMA weights when an EMA is kept
    precision: str = "fp32"  # fp32 | bf16 (CPU and CUDA autocast) | fp16 (CUDA, with a GradScaler)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training module's forward
    compile_backend: str = "inductor"  # torch.compile backend ("aot_eager"/"eager" compile fast)
    sync_bn: bool = False
    eval_every: int = 0  # steps between evaluations; 0: only at the end
    ckpt_every: int = 0  # steps between checkpoints; 0: none by step count (see ckpt_minutes, ckpt_at_eval)
    ckpt_minutes: float = 10.0  # also checkpoint when this much wall time passed since the last one; 0: never
    ckpt_at_eval: bool = True  # also checkpoint after every evaluation (the end and SIGTERM/SIGINT always do)
    skip_nonfinite: int = 0  # steps with a NaN/inf loss to skip (not applied) before the run stops with an error
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    num_workers: int = 0  # data-loading worker processes (0: in the main process)
    persistent_workers: bool = False  # keep the training loader's workers alive across epochs (num_workers > 0)
    pin_memory: bool = True  # page-locked batches for faster host-to-GPU copies (CUDA only)
    device: str = "auto"  # auto (cuda, then cpu) | cpu | cuda | cuda:N
    eval_batch_size: int = 0  # 0: the training batch size
    dist_timeout_minutes: float = 30.0  # torchrun: a collective waiting longer than this fails (a dead or hung peer)
    # Lengths stated in epochs and batches stated per process; :func:`resolve_config` turns them into
    # ``steps``/``decay_every``/``batch_size`` where the dataset length and the world size are known.
    epochs: float = 0.0  # > 0: steps = this many epochs
    batch_per_replica: int = 0  # > 0: batch_size = this × the number of processes
    decay_epochs: float = 0.0  # > 0: decay_every = this many epochs of steps
    lr_per_replica: float = 0.0  # > 0: lr = this × the number of processes (linear scaling at a per-replica batch)


def resolve_config(cfg: TrainConfig, train_size: int, world_size: int) -> TrainConfig:
    """A copy of ``cfg`` with the epoch- and per-replica settings turned into engine settings.

    ``batch_size = batch_per_replica × world_size`` when ``batch_per_replica > 0``; an epoch is
    ``max(1, train_size // batch_size)`` steps (the engine drops the last partial batch), and
    ``steps = max(1, round(epochs × steps_per_epoch))``, ``decay_every = max(1, round(decay_epochs
    × steps_per_epoch))`` when those are > 0, and ``lr = lr_per_replica × world_size`` when
    ``lr_per_replica > 0``. ``cfg`` itself is never changed (a pure function).
    """
    changes: dict[str, Any] = {}
    batch = cfg.batch_per_replica * world_size if cfg.batch_per_replica > 0 else cfg.batch_size
    if batch != cfg.batch_size:
        changes["batch_size"] = batch
    steps_per_epoch = max(1, train_size // max(1, batch))
    if cfg.epochs > 0:
        changes["steps"] = max(1, round(cfg.epochs * steps_per_epoch))
    if cfg.decay_epochs > 0:
        changes["decay_every"] = max(1, round(cfg.decay_epochs * steps_per_epoch))
    if cfg.lr_per_replica > 0:
        changes["lr"] = cfg.lr_per_replica * world_size
    return dataclasses.replace(cfg, **changes) if changes else dataclasses.replace(cfg)


def check_run(c: TrainConfig, task: Any) -> None:
    """Refuse settings the engine cannot run with ``task`` (a :class:`~vislearn.train.task.Task`), naming the value."""
    if c.steps < 0:
        raise UserError(f"steps must be >= 0, got {c.steps}")
    if c.batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {c.batch_size}")
    if c.grad_accum_steps < 1:
        raise UserError(f"grad_accum_steps must be >= 1, got {c.grad_accum_steps}")
    if not 0 <= c.ema_decay < 1:
        raise UserError(f"ema_decay must be in [0, 1), got {c.ema_decay}")
    if c.precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"unknown precision {c.precision!r}; choose fp32, bf16 or fp16")
    if len(task.train_set) < c.batch_size:
        raise UserError(f"the training set has {len(task.train_set)} samples, fewer than one "
                        f"batch of {c.batch_size}")
    if c.ema_decay > 0 and task.model_path() is None:
        raise UserError("Task.model must be a submodule of Task.module when an EMA is kept (ema_decay > 0)")
    if not (c.ckpt_minutes >= 0 and math.isfinite(c.ckpt_minutes)):
        raise UserError(f"ckpt_minutes must be >= 0 (0 disables), got {c.ckpt_minutes}")
    if c.skip_nonfinite < 0:
        raise UserError(f"skip_nonfinite must be >= 0, got {c.skip_nonfinite}")

"""The one training loop every recipe uses.

A recipe hands the engine a :class:`Task`: a training module whose ``forward(batch)`` returns a dict
with a scalar ``"loss"`` (and any other scalars to log), the datasets, and an ``evaluate`` function.
The engine owns everything else: device, ``torchrun``/DDP, sampling and data order, mixed
precision, gradient clipping, the EMA of weights, the learning-rate schedule, evaluation, logging,
checkpoints and exact resumption.

The step, on one screen (see :meth:`Trainer._train_step`)::

    lr = base_lr · lr_factor(step) · group.lr_mult
    with autocast(precision): out = module(batch)            # DDP all-reduces gradients
    scaler.scale(out["loss"]).backward(); unscale; clip_grad_norm_(clip_grad)
    scaler.step(optimizer); scaler.update(); optimizer.zero_grad()
    ema.update_parameters(module)

Data order is a pure function of ``(seed, epoch)`` (``DistributedSampler``), and checkpoints record
the position inside the epoch and every process's RNG states, so a run killed at any point (even by
SIGKILL) and resumed with ``resume=True`` ends with the same weights as an uninterrupted run. The
global batch ``batch_size`` is split evenly across processes: with a mean-reduced loss and no
per-replica statistics (or SyncBatchNorm), N processes follow the 1-process loss curve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vislearn.errors import UserError
from vislearn.train import checkpoint as ckpt
from vislearn.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    init_distributed,
)
from vislearn.train.optim import build_optimizer
from vislearn.train.schedules import lr_factor


@dataclass
class TrainConfig:
    """Engine settings shared by every recipe (a recipe's config dataclass inherits these)."""

    steps: int = 1000  # optimizer steps in total
    batch_size: int = 64  # global batch, split evenly over processes
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adam | adamw | rmsprop | rmsprop_tf
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
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
    sync_bn: bool = False
    eval_every: int = 0  # steps between evaluations; 0: only at the end
    ckpt_every: int = 0  # steps between checkpoints; 0: only at the end (and on SIGTERM/SIGINT)
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # auto (cuda, then cpu) | cpu | cuda | cuda:N
    eval_batch_size: int = 0  # 0: the training batch size
    # Lengths stated in epochs and batches stated per process; :func:`resolve_config` turns them into
    # ``steps``/``decay_every``/``batch_size`` where the dataset length and the world size are known.
    epochs: float = 0.0  # > 0: steps = this many epochs
    batch_per_replica: int = 0  # > 0: batch_size = this × the number of processes
    decay_epochs: float = 0.0  # > 0: decay_every = this many epochs of steps


def resolve_config(cfg: TrainConfig, train_size: int, world_size: int) -> TrainConfig:
    """A copy of ``cfg`` with the epoch- and per-replica settings turned into engine settings.

    ``batch_size = batch_per_replica × world_size`` when ``batch_per_replica > 0``; an epoch is
    ``max(1, train_size // batch_size)`` steps (the engine drops the last partial batch), and
    ``steps = max(1, round(epochs × steps_per_epoch))``, ``decay_every = max(1, round(decay_epochs
    × steps_per_epoch))`` when those are > 0. ``cfg`` itself is never changed (a pure function).
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
    return dataclasses.replace(cfg, **changes) if changes else dataclasses.replace(cfg)


@dataclass
class Task:
    """What a recipe gives the engine.

    Attributes:
        module: training module; ``module(batch)`` returns ``{"loss": scalar, ...scalars}``.
            Parameters of losses (Proxy-NCA's proxies) belong inside it so DDP synchronises them.
        train_set: map-style dataset of training samples.
        eval_set: optional evaluation dataset.
        evaluate: ``evaluate(module, loader) -> {name: float}``, called in eval mode under
            ``torch.no_grad`` on the main process (with the EMA weights when they are kept).
        param_groups: optimizer groups over ``module``'s parameters (each may carry ``lr_mult``);
            default: one group of all parameters.
        collate_fn: collate for both loaders (default: torch's).
        inference_model: picks the model to export from the module (default: ``module.model`` if
            present, else ``module``); it is saved as ``model.safetensors`` at the end.
    """

    module: nn.Module
    train_set: Dataset
    eval_set: Dataset | None = None
    evaluate: Callable[[nn.Module, DataLoader], dict[str, float]] | None = None
    param_groups: list[dict[str, Any]] | None = None
    collate_fn: Callable | None = None
    inference_model: Callable[[nn.Module], nn.Module] | None = None


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the history of logged/evaluated metrics and where files went."""

    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    out_dir: Path | None = None


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but CUDA is not available")
        if info.enabled:
            return torch.device("cuda", info.local_rank)
    return torch.device(name)


def move_to(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors in nested tuples/lists/dicts to ``device`` (4-D float ones to channels_last if asked)."""
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, (list, tuple)):
        moved = [move_to(b, device, channels_last) for b in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    if isinstance(batch, dict):
        return {k: move_to(v, device, channels_last) for k, v in batch.items()}
    return batch


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast on CPU or CUDA, fp16 on CUDA, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("precision fp16 needs CUDA; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise UserError(f"unknown precision {precision!r}; choose fp32, bf16 or fp16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy()),
        "python": torch.from_numpy(
            np.frombuffer(json.dumps(_py_state()).encode(), dtype=np.uint8).copy()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _py_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = json.loads(bytes(state["numpy"].numpy()).decode())
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(bytes(state["python"].numpy()).decode())
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class _MetricsWriter:
    """Appends metrics to ``metrics.jsonl`` (and TensorBoard when installed) on the main process."""

    def __init__(self, out_dir: Path | None, enabled: bool) -> None:
        self.path = out_dir / "metrics.jsonl" if (out_dir and enabled) else None
        self.tb = None
        if self.path is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record.get('split', 'train')}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Runs one :class:`Task` under one :class:`TrainConfig`.

    Args:
        cfg: engine settings.
        task: what to train.
        out_dir: where checkpoints, ``metrics.jsonl`` and ``model.safetensors`` go; ``None`` keeps
            everything in memory (reproductions that run many short trainings).
        resume: continue from the newest checkpoint in ``out_dir`` (an error if there is none).
        progress: draw a tqdm bar on the main process when stderr is a terminal.
        callbacks: ``fn(trainer, step)`` after each optimizer step (e.g. recording activations).
        config_record: the recipe's full config, stored in checkpoints and compared on resume.
    """

    def __init__(self, cfg: TrainConfig, task: Task, out_dir: str | os.PathLike | None = None, *,
                 resume: bool = False, progress: bool = True,
                 callbacks: list[Callable[[Trainer, int], None]] | None = None,
                 config_record: dict[str, Any] | None = None) -> None:
        probe = "cuda" if (cfg.device in ("auto", "cuda") or cfg.device.startswith("cuda")) \
            and torch.cuda.is_available() else "cpu"
        self.dist = init_distributed(probe)
        # Epochs and per-replica batches resolve here, where the dataset length and world size are known.
        cfg = resolve_config(cfg, len(task.train_set), self.dist.world_size)
        self.cfg, self.task = cfg, task
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume, self.callbacks = resume, list(callbacks or [])
        self.config_record = {**(config_record or {}), **dataclasses.asdict(cfg)}
        self._validate()
        self.device = resolve_device(cfg.device, self.dist)
        self.progress = progress and self.dist.is_main and sys.stderr.isatty()
        if cfg.batch_size % self.dist.world_size:
            raise UserError(f"batch_size {cfg.batch_size} is not divisible by {self.dist.world_size} processes")
        self.local_batch = cfg.batch_size // self.dist.world_size
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict[str, Any]] = []
        self._stop_signal: int | None = None
        self._setup()

    # ----------------------------------------------------------------------------------------- setup
    def _validate(self) -> None:
        c = self.cfg
        if c.steps < 0:
            raise UserError(f"steps must be >= 0, got {c.steps}")
        if c.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {c.batch_size}")
        if not 0 <= c.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1), got {c.ema_decay}")
        if c.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"unknown precision {c.precision!r}; choose fp32, bf16 or fp16")
        if len(self.task.train_set) < c.batch_size:
            raise UserError(f"the training set has {len(self.task.train_set)} samples, fewer than one "
                            f"batch of {c.batch_size}")

    def _setup(self) -> None:
        c = self.cfg
        seed_everything(c.seed + self.dist.rank)
        module = self.task.module.to(self.device)
        if c.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if c.sync_bn and self.dist.enabled:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        self.module = module
        groups = self.task.param_groups or [{"params": [p for p in module.parameters() if p.requires_grad]}]
        self.optimizer = build_optimizer(
            c.optimizer, groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
            betas=(0.9, c.adam_beta2), eps=None if c.optimizer_eps < 0 else c.optimizer_eps,
            rmsprop_decay=c.rmsprop_decay, nesterov=c.nesterov)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped: nn.Module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        else:
            self.wrapped = module
        if c.precision == "fp16" and self.device.type != "cuda":
            raise UserError("precision fp16 needs CUDA; use bf16 on CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")
        self.ema = None
        if c.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(c.ema_decay), use_buffers=True)
        self.sampler = DistributedSampler(self.task.train_set, num_replicas=self.dist.world_size,
                                          rank=self.dist.rank, shuffle=True, seed=c.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        if self.steps_per_epoch == 0:
            raise UserError("the training set is smaller than one batch per process")
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.writer = _MetricsWriter(self.out_dir, self.dist.is_main)
        if self.resume:
            self._load_latest()

    # ---------------------------------------------------------------------------------- checkpoints
    def _load_latest(self) -> None:
        if self.out_dir is None:
            raise UserError("resume needs an output directory")
        d = ckpt.latest_checkpoint(self.out_dir)
        if d is None:
            raise UserError(f"nothing to resume: no checkpoint under {self.out_dir}/checkpoints")
        data = ckpt.load_checkpoint(d)
        self.module.load_state_dict(data["model"])
        if self.ema is not None:
            if data["ema"] is None:
                raise UserError(f"{d} has no EMA weights but this run keeps an EMA")
            self.ema.load_state_dict(data["ema"])
        state = data["state"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            _set_rng_state(rngs[self.dist.rank])
        t = data["trainer"]
        self.step, self.epoch, self.batch_in_epoch = t["step"], t["epoch"], t["batch_in_epoch"]
        self.history = t.get("history", [])

    def save_checkpoint(self) -> None:
        rngs = all_gather_objects(_rng_state(), self.dist)
        if not self.dist.is_main or self.out_dir is None:
            barrier(self.dist)
            return
        ckpt.save_checkpoint(
            self.out_dir, self.step, model_state=self.module.state_dict(),
            ema_state=self.ema.state_dict() if self.ema is not None else None,
            trainer={"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "config": self.config_record,
                     "history": self.history, "world_size": self.dist.world_size},
            state={"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs},
            keep=self.cfg.keep_checkpoints)
        barrier(self.dist)

    # ----------------------------------------------------------------------------------------- data
    def _epoch_loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch)
        indices = list(self.sampler)
        b = self.local_batch
        batches = [indices[i * b:(i + 1) * b] for i in range(self.batch_in_epoch, self.steps_per_epoch)]
        # A dedicated generator: creating the iterator must not consume the global RNG, or a run
        # resumed mid-epoch would draw different augmentations from an uninterrupted one.
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        return DataLoader(self.task.train_set, batch_sampler=batches, num_workers=self.cfg.num_workers,
                          collate_fn=self.task.collate_fn, pin_memory=self.device.type == "cuda",
                          generator=gen)

    def eval_loader(self) -> DataLoader | None:
        if self.task.eval_set is None:
            return None
        return DataLoader(self.task.eval_set, batch_size=self.cfg.eval_batch_size or self.cfg.batch_size,
                          shuffle=False, num_workers=self.cfg.num_workers, collate_fn=self.task.collate_fn)

    # ----------------------------------------------------------------------------------------- loop
    def _set_lr(self) -> float:
        c = self.cfg
        f = lr_factor(self.step, schedule=c.schedule, total_steps=c.steps, warmup_steps=c.warmup_steps,
                      decay_every=c.decay_every, decay_rate=c.decay_rate, min_lr_ratio=c.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = c.lr * f * g.get("lr_mult", 1.0)
        return c.lr * f

    def _train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        c = self.cfg
        lr = self._set_lr()
        with autocast_context(c.precision, self.device):
            out = self.wrapped(batch)
        loss = out["loss"]
        self.scaler.scale(loss).backward()
        if c.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.module.parameters(), c.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        out["lr"] = torch.tensor(lr)
        return out

    def evaluate(self) -> dict[str, float]:
        """Run the task's ``evaluate`` on the main process (EMA weights when kept and ``ema_eval``)."""
        loader = self.eval_loader()
        metrics: dict[str, float] = {}
        if self.task.evaluate is not None and self.dist.is_main:
            target = self.ema.module if (self.ema is not None and self.cfg.ema_eval) else self.module
            was_training = target.training
            target.eval()
            try:
                with torch.no_grad(), autocast_context(self.cfg.precision, self.device):
                    metrics = {k: float(v) for k, v in self.task.evaluate(target, loader).items()}
            finally:
                target.train(was_training)
            record = {"step": self.step, "split": "eval", **metrics}
            self.history.append(record)
            self.writer.write(record)
        barrier(self.dist)
        return metrics

    def _install_signal_handlers(self):
        previous = {}

        def handler(signum, frame):
            self._stop_signal = signum

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    def fit(self) -> TrainResult:
        """Train to ``cfg.steps`` (from a checkpoint when resuming) and return the metric history."""
        c = self.cfg
        # Only a run with somewhere to checkpoint turns SIGTERM/SIGINT into "checkpoint and stop"; an
        # in-memory run (reproductions) lets Ctrl-C interrupt the whole program as usual.
        previous = self._install_signal_handlers() if self.out_dir is not None else {}
        self.module.train()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=c.steps, initial=self.step, dynamic_ncols=True, leave=False)
        t0, last_log = time.time(), self.step
        logs: dict[str, torch.Tensor] = {}
        try:
            while self.step < c.steps and self._stop_signal is None:
                for batch in self._epoch_loader():
                    batch = move_to(batch, self.device, c.channels_last)
                    out = self._train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if self.batch_in_epoch == self.steps_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    for k, v in out.items():
                        if isinstance(v, torch.Tensor) and v.numel() == 1:
                            logs[k] = logs.get(k, 0) + v.detach().float()
                    for cb in self.callbacks:
                        cb(self, self.step)
                    if c.log_every and self.step % c.log_every == 0:
                        self._log(logs, self.step - last_log, t0)
                        logs, last_log, t0 = {}, self.step, time.time()
                    if bar is not None:
                        bar.update(1)
                    if c.eval_every and self.step % c.eval_every == 0 and self.step < c.steps:
                        self.evaluate()
                        self.module.train()
                    if c.ckpt_every and self.step % c.ckpt_every == 0 and self.step < c.steps:
                        self.save_checkpoint()
                    if self.step >= c.steps or self._stop_signal is not None:
                        break
                if self._stop_signal is None and self.step < c.steps and self.batch_in_epoch != 0:
                    raise RuntimeError("epoch ended early")  # unreachable: batches cover the epoch
        finally:
            if bar is not None:
                bar.close()
            for sig, h in previous.items():
                signal.signal(sig, h)
        interrupted = self._stop_signal is not None
        if interrupted:
            self.save_checkpoint()
            self.writer.close()
            return TrainResult(self.step, self.history, {}, True, self.out_dir)
        final = self.evaluate()
        self.save_checkpoint()
        self._export()
        self.writer.close()
        return TrainResult(self.step, self.history, final, False, self.out_dir)

    def _log(self, logs: dict[str, torch.Tensor], n: int, t0: float) -> None:
        if not logs or n == 0:
            return
        keys = sorted(logs)
        values = all_reduce_mean(torch.stack([logs[k].to(self.device) for k in keys]) / n, self.dist)
        record = {"step": self.step, "split": "train", **{k: float(v) for k, v in zip(keys, values, strict=True)},
                  "steps_per_s": n / max(time.time() - t0, 1e-9)}
        if not math.isfinite(record.get("loss", 0.0)):
            raise FloatingPointError(f"loss is {record['loss']} at step {self.step}; lower the learning rate "
                                     "or enable gradient clipping")
        if self.dist.is_main:
            self.history.append(record)
            self.writer.write(record)

    def inference_model(self, use_ema: bool = True) -> nn.Module:
        """The model to export or evaluate (EMA weights when kept and ``use_ema``)."""
        source = self.ema.module if (use_ema and self.ema is not None) else self.module
        pick = self.task.inference_model or (lambda m: getattr(m, "model", m))
        return pick(source)

    def _export(self) -> None:
        if not self.dist.is_main or self.out_dir is None:
            return
        from vislearn.convert import save_weights

        save_weights(self.inference_model(use_ema=False), self.out_dir / "model.safetensors")
        if self.ema is not None:
            save_weights(self.inference_model(use_ema=True), self.out_dir / "model_ema.safetensors")
        ckpt.atomic_write_json(self.out_dir / "summary.json",
                               {"step": self.step, "final": self.history[-1] if self.history else {},
                                "config": self.config_record})

"""The one training loop every recipe uses.

A recipe hands the engine a :class:`Task`: a training module whose ``forward(batch)`` returns a dict
with a scalar ``"loss"`` (and any other scalars to log), the datasets, the model inside the module
that is evaluated and exported, an ``evaluate`` function and per-step hooks. The engine owns
everything else: device, ``torchrun``/DDP, sampling and data order, gradient accumulation, mixed
precision, ``torch.compile``, gradient clipping, the EMA of weights, the learning-rate schedule,
evaluation, logging, checkpoints and exact resumption.

The step, on one screen (see :meth:`Trainer.train_step`; ``A = grad_accum_steps``)::

    lr = base_lr · lr_factor(step) · group.lr_mult
    for each of the A micro-batches of batch_size / (world_size · A) samples:
        with ddp.no_sync() unless last, autocast(precision): out = module(micro_batch)
        scaler.scale(out["loss"] / A).backward()             # DDP all-reduces after the last one
    unscale; clip_grad_norm_(clip_grad); scaler.step(optimizer); scaler.update(); optimizer.zero_grad()
    ema.update(module)
    then (Trainer._after_step): hook.after_optimizer_step(module, step); log; evaluate; should_stop; checkpoint

Data order is a pure function of ``(seed, epoch)`` (``DistributedSampler``) and does not depend on
``A``: an optimizer step consumes the same ``batch_size`` samples whether they come as one batch or
as ``A`` micro-batches. Checkpoints are written at optimizer-step boundaries and record the position
inside the epoch and every process's RNG states, so a run killed at any point (even by SIGKILL, even
inside an accumulation cycle) and resumed with ``resume=True`` ends with the same weights as an
uninterrupted run. The global batch ``batch_size`` is split evenly across processes: with a
mean-reduced loss and no per-replica statistics (or SyncBatchNorm), N processes follow the
1-process loss curve, and ``A`` micro-batches follow the one-batch curve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vislearn.errors import UserError
from vislearn.io import load_state_dict_checked
from vislearn.train import checkpoint as ckpt
from vislearn.train.config import TrainConfig, check_run, resolve_config
from vislearn.train.device import autocast_context, move_to, resolve_device
from vislearn.train.distributed import (
    agree_on_main,
    all_gather_objects,
    all_reduce_mean,
    any_of,
    barrier,
    init_distributed,
    sync_batch_norm,
)
from vislearn.train.ema import ModelEMA
from vislearn.train.evaluation import ShardedEvaluation, evaluate_on_every_process
from vislearn.train.hooks import CallbackHook, Hook, overrides_should_stop
from vislearn.train.loading import EpochBatches, eval_loader, loader_options, persistent, train_loader
from vislearn.train.metrics_log import MetricsWriter, progress_line
from vislearn.train.nonfinite import NonFiniteLossError, skip_or_stop
from vislearn.train.optim import build_optimizer
from vislearn.train.resume import compare_configs, reseed_value
from vislearn.train.rng import rng_state, seed_everything, set_rng_state
from vislearn.train.run_dir import RunLock, prepare_out_dir, say
from vislearn.train.schedules import apply_schedules
from vislearn.train.signals import stop_on_signals
from vislearn.train.task import Task, TrainResult

__all__ = ["NonFiniteLossError", "Task", "TrainConfig", "TrainResult", "Trainer", "autocast_context", "move_to",
           "resolve_config", "resolve_device", "seed_everything"]

_now = time.monotonic  # the clock of wall-time checkpoints (a module attribute, so a test can move it)


class Trainer:
    """Runs one :class:`Task` under one :class:`TrainConfig`.

    Args:
        cfg: engine settings.
        task: what to train.
        out_dir: where checkpoints, ``metrics.jsonl`` and ``model.safetensors`` go; ``None`` keeps
            everything in memory (reproductions that run many short trainings).
        resume: continue from the newest checkpoint in ``out_dir`` (an error if there is none);
            ``"auto"``: resume when there is one, else start fresh (see :mod:`vislearn.train.run_dir`
            for what a folder may hold; the saved config is compared, :mod:`vislearn.train.resume`).
        progress: draw a tqdm bar on the main process when stderr is a terminal.
        callbacks: ``fn(trainer, step)`` after each optimizer step (e.g. recording activations); a
            shorthand for ``Task.hooks`` (each becomes a :class:`~vislearn.train.hooks.CallbackHook`).
        config_record: the recipe's full config, stored in checkpoints and compared on resume.
    """

    def __init__(self, cfg: TrainConfig, task: Task, out_dir: str | os.PathLike | None = None, *,
                 resume: bool | str = False, progress: bool = True,
                 callbacks: list[Callable[[Trainer, int], None]] | None = None,
                 config_record: dict[str, Any] | None = None) -> None:
        probe = "cuda" if (cfg.device in ("auto", "cuda") or cfg.device.startswith("cuda")) \
            and torch.cuda.is_available() else "cpu"
        self.dist = init_distributed(probe, cfg.dist_timeout_minutes)
        # Epochs and per-replica batches resolve here, where the dataset length and world size are known.
        cfg = resolve_config(cfg, len(task.train_set), self.dist.world_size)
        self.cfg, self.task = cfg, task
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self.hooks: list[Hook] = [*task.hooks, *(CallbackHook(fn, self) for fn in callbacks or [])]
        self.config_record = {**(config_record or {}), **dataclasses.asdict(cfg)}
        check_run(cfg, task)
        self.device = resolve_device(cfg.device, self.dist)
        self.progress = progress and self.dist.is_main and sys.stderr.isatty()
        # without a terminal (a log file, a batch job) a CLI run prints one line per log_every steps instead
        self.log_lines = progress and self.dist.is_main and not self.progress and self.out_dir is not None
        split = self.dist.world_size * cfg.grad_accum_steps
        if cfg.batch_size % split:
            raise UserError(f"batch_size {cfg.batch_size} is not divisible by {self.dist.world_size} processes × "
                            f"grad_accum_steps {cfg.grad_accum_steps}")
        self.local_batch = cfg.batch_size // self.dist.world_size  # per process and optimizer step
        self.micro_batch = self.local_batch // cfg.grad_accum_steps
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # optimizer steps done in the current epoch
        self.history: list[dict[str, Any]] = []
        self.stopped_early = False
        self._stop_signal: int | None = None
        self._stop_agreed = self._ckpt_due = False
        self._skipped = 0  # non-finite steps skipped so far (checkpointed)
        self._nonfinite = False
        self._last_ckpt = _now()
        self._lock: RunLock | None = None
        try:
            self._setup()
        except BaseException:
            self._release()
            raise

    # ----------------------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        c = self.cfg
        seed_everything(c.seed + self.dist.rank)
        module = self.task.module.to(self.device)
        if c.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if c.sync_bn:
            module = sync_batch_norm(module, self.dist, self.device)
        self.module = module
        groups = self.task.param_groups or [{"params": [p for p in module.parameters() if p.requires_grad]}]
        self.optimizer = build_optimizer(
            c.optimizer, groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
            betas=(0.9, c.adam_beta2), eps=None if c.optimizer_eps < 0 else c.optimizer_eps,
            rmsprop_decay=c.rmsprop_decay, nesterov=c.nesterov)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        wrapped: nn.Module = self.ddp if self.ddp is not None else module
        # Only the training forward is compiled; evaluation and export use the plain module.
        self.wrapped = torch.compile(wrapped, backend=c.compile_backend) if c.compile else wrapped
        if c.precision == "fp16" and self.device.type != "cuda":
            raise UserError("precision fp16 needs CUDA; use bf16 on CPU")
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")
        self.ema = ModelEMA(module, c.ema_decay) if c.ema_decay > 0 else None
        # a dataset may bring its own per-rank order (a sharded one: whole shards per rank, a shuffle buffer)
        own_sampler = getattr(self.task.train_set, "distributed_sampler", None)
        if own_sampler is not None:
            self.sampler = own_sampler(num_replicas=self.dist.world_size, rank=self.dist.rank, seed=c.seed)
        else:
            self.sampler = DistributedSampler(self.task.train_set, num_replicas=self.dist.world_size,
                                              rank=self.dist.rank, shuffle=True, seed=c.seed, drop_last=True)
        self._train_loader: DataLoader | None = None  # kept across epochs with persistent_workers
        self._epoch_batches: list[list[int]] = []
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        if self.steps_per_epoch == 0:
            raise UserError("the training set is smaller than one batch per process")
        if self.out_dir is not None:
            # the main process checks the folder, takes its lock and decides; every process gets its answer
            def prepare() -> bool:  # the lock stays with the main process; the others learn only the answer
                resumed, self._lock = prepare_out_dir(self.out_dir, self.resume, self.config_record)
                return resumed

            self.resume = agree_on_main(prepare, self.dist)
        elif self.resume is True:
            raise UserError("resume needs an output directory")
        else:
            self.resume = False
        self.writer = MetricsWriter(self.out_dir, self.dist.is_main)
        if self.resume:
            self._load_latest()
            if self.dist.is_main:
                self.writer.rewrite(self.history)  # drop what a killed run logged after its checkpoint

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    # ---------------------------------------------------------------------------------- checkpoints
    def _load_latest(self) -> None:
        """Load the newest readable checkpoint, falling back past corrupt ones (each named on stderr)."""
        errors: list[str] = []
        for d in ckpt.checkpoint_candidates(self.out_dir):
            try:
                data = ckpt.load_checkpoint(d)
                break
            except UserError as e:
                errors.append(str(e))
                if self.dist.is_main:
                    say(f"{e}; falling back to the checkpoint before it")
        else:
            if errors:
                raise UserError("; ".join(errors) + "; no other checkpoint to fall back to")
            raise UserError(f"nothing to resume: no checkpoint under {self.out_dir}/checkpoints")
        t = data["trainer"]
        compare_configs(t.get("config") or {}, self.config_record, str(d))
        load_state_dict_checked(self.module, data["model"], source=str(d / "model.safetensors"))
        if self.ema is not None:
            if data["ema"] is None:
                raise UserError(f"{d} has no EMA weights but this run keeps an EMA")
            self.ema.load_state_dict(data["ema"])
        state = data["state"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = t["step"], t["epoch"], t["batch_in_epoch"]
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:  # another world size: the data order carries over, the random streams are reseeded
            seed_everything(reseed_value(self.cfg.seed, self.step, self.dist.rank))
            if self.dist.is_main:
                say(f"resuming a {len(rngs)}-process checkpoint on {self.dist.world_size}: the data order "
                     f"continues at step {self.step}, random streams are reseeded from (seed, step, rank)")
        self.history = t.get("history", [])
        self._skipped = int(t.get("skipped_nonfinite", 0))

    def save_checkpoint(self) -> None:
        if self.out_dir is None:
            return
        self._last_ckpt = _now()
        rngs = all_gather_objects(rng_state(), self.dist)
        if not self.dist.is_main or self.out_dir is None:
            barrier(self.dist)
            return
        ckpt.save_checkpoint(
            self.out_dir, self.step, model_state=self.module.state_dict(),
            ema_state=self.ema.state_dict() if self.ema is not None else None,
            trainer={"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "config": self.config_record,
                     "history": self.history, "world_size": self.dist.world_size,
                     "skipped_nonfinite": self._skipped},
            state={"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs},
            keep=self.cfg.keep_checkpoints)
        barrier(self.dist)

    # ----------------------------------------------------------------------------------------- data
    def _epoch_loader(self) -> DataLoader:
        """The rest of the epoch as micro-batches: each step's ``local_batch`` indices, cut in ``A`` pieces."""
        self.sampler.set_epoch(self.epoch)
        indices = list(self.sampler)
        b, m = self.local_batch, self.micro_batch
        micro = [indices[i * b + j * m:i * b + (j + 1) * m]
                 for i in range(self.batch_in_epoch, self.steps_per_epoch) for j in range(b // m)]
        # A dedicated generator: creating the iterator must not consume the global RNG, or a run
        # resumed mid-epoch would draw different augmentations from an uninterrupted one.
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        options = loader_options(self.cfg, self.device)
        if not persistent(self.cfg):
            return train_loader(self.task.train_set, micro, self.task.collate_fn, gen, options)
        # persistent workers: one loader for the whole run, its batch list replaced each epoch
        self._epoch_batches[:] = micro
        if self._train_loader is None:
            self._train_loader = train_loader(self.task.train_set, EpochBatches(self._epoch_batches),
                                              self.task.collate_fn, gen, options)
        return self._train_loader

    def _epoch_steps(self) -> Iterator[list[Any]]:
        """The rest of the epoch, one list of ``grad_accum_steps`` micro-batches per optimizer step."""
        it = iter(self._epoch_loader())
        while group := list(itertools.islice(it, self.cfg.grad_accum_steps)):
            yield group

    def eval_loader(self, dataset: Dataset | None = None) -> DataLoader | None:
        """A loader over ``dataset`` (default: the task's evaluation set; None when there is none)."""
        dataset = self.task.eval_set if dataset is None else dataset
        if dataset is None:
            return None
        return eval_loader(dataset, self.cfg, self.task.collate_fn, self.device)

    # ----------------------------------------------------------------------------------------- step
    def _set_lr(self) -> float:
        return apply_schedules(self.optimizer, self.cfg, self.step)

    def train_step(self, micro_batches: list[Any]) -> dict[str, torch.Tensor]:
        """One optimizer step over ``micro_batches``; returns each logged scalar's mean over them.

        Before the update the processes agree (one small all-reduce) on three flags: a non-finite loss
        term (or gradient norm) anywhere, a stop signal anywhere, a wall-time checkpoint due anywhere.
        A non-finite step is not applied (``self._nonfinite`` is set; :meth:`_after_step` skips it
        or stops).
        """
        c = self.cfg
        lr = self._set_lr()
        n = len(micro_batches)
        sums: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            batch = move_to(batch, self.device, c.channels_last)
            accumulate = self.ddp.no_sync() if (self.ddp is not None and i < n - 1) else contextlib.nullcontext()
            with accumulate:
                with autocast_context(c.precision, self.device):
                    out = self.wrapped(batch)
                loss = out["loss"]
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0) + v.detach().float()
        out = {k: v / n for k, v in sums.items()} if n > 1 else sums
        if c.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.module.parameters(), c.clip_grad)
        # with fp16 the GradScaler itself skips steps whose gradients overflow: only the loss is checked
        checked = [v.reshape(()) for k, v in out.items() if k != "grad_norm" or c.precision != "fp16"]
        self._nonfinite = self._agree_flags(~torch.isfinite(torch.stack(checked)).all())
        if self._nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
            if c.clip_grad > 0 and self.scaler.is_enabled():
                self.scaler.update()  # closes the unscale_ above; the scale backs off as for an overflow
            out["lr"] = torch.tensor(lr)
            return out
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.module)
        out["lr"] = torch.tensor(lr)
        return out

    def _agree_flags(self, nonfinite: torch.Tensor) -> bool:
        """Set the agreed stop and checkpoint-due flags; return whether any process saw a non-finite value."""
        due = (self.cfg.ckpt_minutes > 0 and self.out_dir is not None
               and _now() - self._last_ckpt >= 60 * self.cfg.ckpt_minutes)
        bad, self._stop_agreed, self._ckpt_due = any_of([nonfinite, self._stop_signal is not None, due], self.dist)
        return bad

    def _stop_requested(self) -> bool:
        # one process: the signal counts as soon as it arrives; several: only once all have agreed on it
        return self._stop_agreed or (not self.dist.enabled and self._stop_signal is not None)

    def _after_step(self, out: dict[str, torch.Tensor]) -> bool:
        """The per-step bookkeeping: counters, hooks, logging, evaluation, stopping, checkpoints.

        Returns whether training ends here (the last step, a stop signal, or a hook's ``should_stop``).
        """
        c = self.cfg
        skipped = self._nonfinite
        if skipped:
            record = skip_or_stop(out, self.step + 1, self._skipped, c.skip_nonfinite, self.out_dir,
                                  announce=self.dist.is_main)
            self._skipped += 1  # skip_or_stop raised when no more skips are allowed
            if self.dist.is_main:
                self.history.append(record)
                self.writer.write(record)
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch == self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if not skipped:
            for k, v in out.items():
                self._logs[k] = self._logs.get(k, 0) + v.detach().float()
            for h in self.hooks:
                h.after_optimizer_step(self.module, self.step)
        if c.log_every and self.step % c.log_every == 0:
            self._log(self._logs, self.step - self._last_log, self._t0)
            self._logs, self._last_log, self._t0 = {}, self.step, time.time()
        if self._bar is not None:
            self._bar.update(1)
        evaluated = None
        if c.eval_every and self.step % c.eval_every == 0 and self.step < c.steps:
            evaluated = self._last_eval = (self.step, self.evaluate())
            self.module.train()
        if self.step < c.steps and self._hooks_stop(out, evaluated):
            self.stopped_early = True
            return True
        if self.step < c.steps and not self._stop_requested() and (
                (c.ckpt_every and self.step % c.ckpt_every == 0) or self._ckpt_due
                or (evaluated is not None and c.ckpt_at_eval)):
            self.save_checkpoint()
        return self._done()

    def _done(self) -> bool:
        return self.step >= self.cfg.steps or self._stop_requested() or self.stopped_early

    def _hooks_stop(self, out: dict[str, torch.Tensor], evaluated: tuple[int, dict[str, float]] | None) -> bool:
        stoppers = [h for h in self.hooks if overrides_should_stop(h)]
        if not stoppers:
            return False
        keys = sorted(out)
        metrics = dict(zip(keys, torch.stack([out[k].detach().float().reshape(()).cpu() for k in keys]).tolist(),
                           strict=True))
        if evaluated is not None:
            metrics.update({f"eval/{k}": v for k, v in evaluated[1].items()})
        stop = any([h.should_stop(self.step, metrics) for h in stoppers])  # every hook sees every step
        # Any process may ask (eval metrics exist only on the main one); all must stop together.
        return bool(all_reduce_mean(torch.tensor([float(stop)], device=self.device), self.dist).item() > 0)

    def evaluate(self) -> dict[str, float]:
        """Run the task's ``evaluate`` (EMA weights when kept and ``ema_eval``): a :class:`ShardedEvaluation` on
        every process, each on its share of the set (:mod:`vislearn.train.evaluation`), else on the main one."""
        metrics: dict[str, float] = {}
        sharded = isinstance(self.task.evaluate, ShardedEvaluation) and self.dist.enabled \
            and self.task.eval_set is not None
        if self.task.evaluate is not None and (sharded or self.dist.is_main):
            target = self.inference_model(use_ema=self.cfg.ema_eval)
            was_training = target.training
            target.eval()
            try:
                with torch.no_grad(), autocast_context(self.cfg.precision, self.device):
                    metrics = evaluate_on_every_process(self.task.evaluate, target, self.task.eval_set,
                                                        self.eval_loader, self.dist) if sharded \
                        else self.task.evaluate(target, self.eval_loader())
                metrics = {k: float(v) for k, v in metrics.items()}
            finally:
                target.train(was_training)
        if self.task.evaluate is not None and self.dist.is_main:
            record = {"step": self.step, "split": "eval", **metrics}
            self.history.append(record)
            self.writer.write(record)
        barrier(self.dist)
        return metrics

    # ----------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Train to ``cfg.steps`` (from a checkpoint when resuming) and return the metric history."""
        try:
            with self._running():
                while not self._done():
                    for batch in self._epoch_steps():  # the rest of the epoch
                        out = self.train_step(batch)
                        if self._after_step(out):
                            break
            if self._stop_requested():
                self.save_checkpoint()
                return TrainResult(self.step, self.history, {}, True, self.out_dir)
            final = self._last_eval[1] if self._last_eval[0] == self.step else self.evaluate()
            self.save_checkpoint()
            self._export()
            return TrainResult(self.step, self.history, final, False, self.out_dir, self.stopped_early)
        finally:
            self.writer.close()
            self._release()
            self._train_loader = None  # ends persistent loader workers with the run

    @contextlib.contextmanager
    def _running(self):
        """Train mode, log accumulators, the progress bar, and SIGTERM/SIGINT → "checkpoint and stop"."""
        # Only a run with somewhere to checkpoint turns SIGTERM/SIGINT into "checkpoint and stop"; an
        # in-memory run (reproductions) lets Ctrl-C interrupt the whole program as usual.
        self.module.train()
        self._bar = None
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.cfg.steps, initial=self.step, dynamic_ncols=True, leave=False)
        self._t0, self._last_log, self._logs = time.time(), self.step, {}
        self._last_ckpt = _now()
        self._last_eval: tuple[int, dict[str, float]] = (-1, {})
        try:
            with stop_on_signals(lambda signum: setattr(self, "_stop_signal", signum), self.out_dir is not None):
                yield
        finally:
            if self._bar is not None:
                self._bar.close()

    def _log(self, logs: dict[str, torch.Tensor], n: int, t0: float) -> None:
        if not logs or n == 0:
            return
        keys = sorted(logs)
        values = all_reduce_mean(torch.stack([logs[k].to(self.device) for k in keys]) / n, self.dist)
        record = {"step": self.step, "split": "train", **{k: float(v) for k, v in zip(keys, values, strict=True)},
                  "steps_per_s": n / max(time.time() - t0, 1e-9)}
        if self.dist.is_main:
            self.history.append(record)
            self.writer.write(record)
        if self.log_lines:
            print(progress_line(record, keys, self.cfg.steps), file=sys.stderr, flush=True)

    def inference_model(self, use_ema: bool = True) -> nn.Module:
        """``Task.model`` inside the module, or inside the EMA copy when one is kept and ``use_ema``."""
        return self.task.model_of(self.ema.module if (use_ema and self.ema is not None) else self.module)

    def _export(self) -> None:
        if not self.dist.is_main or self.out_dir is None:
            return
        ckpt.export_run(self.out_dir, self.inference_model(use_ema=False),
                        self.inference_model(use_ema=True) if self.ema is not None else None,
                        {"step": self.step, "final": self.history[-1] if self.history else {},
                         "config": self.config_record}, metadata=self.task.metadata)

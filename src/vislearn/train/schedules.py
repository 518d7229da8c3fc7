"""Schedules as pure functions of the step, for the learning rate and for any other scalar.

Resuming needs no scheduler state: every value is recomputed from the step.

Scalar schedules (teacher momentum, temperature, weight decay, a loss weight γ, ...):

* :func:`constant` — ``value``;
* :func:`linear` — ``start`` → ``end`` linearly over ``total_steps``;
* :func:`cosine` — ``end + (start − end) · ½(1 + cos(π t))`` with ``t = step / total_steps``
  (DINO's teacher momentum 0.996 → 1, Caron et al. 2021 Sec. 3.1 and Appendix);
* :func:`exponential` — ``start · rate ** (step / every)`` (``staircase``: the exponent floored).

``linear`` and ``cosine`` take an optional linear warm-up from ``warmup_start`` at step 0 to
``start`` at ``warmup_steps``; ``t`` then runs over the remaining ``total_steps − warmup_steps`` and
is clamped to ``[0, 1]``, so a schedule holds ``end`` after ``total_steps``. Bind the arguments with
:func:`functools.partial` to get a ``step → value`` callable (e.g. ``ModelEMA``'s decay).

The learning rate, ``lr(step) = base_lr × lr_factor(step)`` with ``lr_factor = warmup(step) × decay(step)``:

* ``constant``;
* ``cosine``: cosine decay to ``min_lr_ratio × base_lr`` at ``total_steps`` (SWYCC: warm-up + cosine);
* ``staircase``: ``decay_rate ** (step // decay_every)``, e.g. Inception's 0.94 every 2 epochs
  (Inception-v3 Sec. 8) with ``decay_every`` = steps per 2 epochs;
* ``exponential``: the same without the staircase;
* ``linear``: linear decay to ``min_lr_ratio``.

The learning-rate warm-up multiplies: ``min(1, (step + 1) / warmup_steps)``, and the decay starts
after it.
"""

from __future__ import annotations

import math

from vislearn.errors import UserError

SCHEDULES = ("constant", "cosine", "staircase", "exponential", "linear")


def constant(step: int, value: float) -> float:
    """``value`` at every step."""
    return value


def _progress(step: int, total_steps: int, warmup_steps: int) -> float:
    return min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)


def _warmup(step: int, warmup_steps: int, warmup_start: float, start: float) -> float:
    return warmup_start + (start - warmup_start) * max(step, 0) / warmup_steps


def linear(step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0,
           warmup_start: float = 0.0) -> float:
    """``start`` → ``end`` linearly over ``total_steps`` (after an optional linear warm-up)."""
    if 0 < warmup_steps and step < warmup_steps:
        return _warmup(step, warmup_steps, warmup_start, start)
    return start + (end - start) * _progress(step, total_steps, warmup_steps)


def cosine(step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0,
           warmup_start: float = 0.0) -> float:
    """Half a cosine from ``start`` to ``end`` over ``total_steps`` (after an optional linear warm-up)."""
    if 0 < warmup_steps and step < warmup_steps:
        return _warmup(step, warmup_steps, warmup_start, start)
    t = _progress(step, total_steps, warmup_steps)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def exponential(step: int, start: float, rate: float, every: int = 1, staircase: bool = False) -> float:
    """``start · rate ** (step / every)``; ``staircase`` floors the exponent."""
    every = max(every, 1)
    return start * rate ** (step // every if staircase else step / every)


def lr_factor(step: int, *, schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
              decay_every: int = 1, decay_rate: float = 1.0, min_lr_ratio: float = 0.0) -> float:
    """The multiplier on the base learning rate at ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    after = step - warmup_steps, total_steps - warmup_steps  # the decay's own clock starts after warm-up
    if schedule == "constant":
        decay = 1.0
    elif schedule == "cosine":
        decay = cosine(*after, start=1.0, end=min_lr_ratio)
    elif schedule == "linear":
        decay = linear(*after, start=1.0, end=min_lr_ratio)
    else:
        decay = exponential(step, 1.0, decay_rate, decay_every, staircase=schedule == "staircase")
    return warm * decay


def apply_schedules(optimizer, cfg, step: int) -> float:
    """Set every param group's lr (and scheduled weight decay) for 0-based ``step``; return the base lr.

    ``cfg`` is the engine's :class:`~vislearn.train.config.TrainConfig`. A group's ``lr`` is the base lr
    times the schedule's factor times its ``lr_mult``. With ``weight_decay_end >= 0`` the weight decay
    follows DINO's schedule (Caron et al. 2021; Ruan et al. 2023 App. B.1: 0.04 -> 0.4): a half cosine
    from ``weight_decay`` to ``weight_decay_end`` over the whole run, no warm-up; each group keeps the
    ratio of its own decay to the base (no-decay groups stay at 0).
    """
    f = lr_factor(step, schedule=cfg.schedule, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps,
                  decay_every=cfg.decay_every, decay_rate=cfg.decay_rate, min_lr_ratio=cfg.min_lr_ratio)
    for g in optimizer.param_groups:
        g["lr"] = cfg.lr * f * g.get("lr_mult", 1.0)
    if cfg.weight_decay_end >= 0 and cfg.weight_decay > 0:
        wd = cosine(step, cfg.steps, cfg.weight_decay, cfg.weight_decay_end)
        for g in optimizer.param_groups:
            g.setdefault("wd_base", g["weight_decay"])
            g["weight_decay"] = wd * g["wd_base"] / cfg.weight_decay
    return cfg.lr * f

"""Allowed values of config settings, declared beside the settings and checked once when a config is resolved.

A config dataclass declares a ``RULES`` table (``{field name: Rule}``) right under its fields; the
tables of its base classes apply too, and :data:`TRAIN_RULES` holds :class:`~vislearn.train.config.TrainConfig`'s
(kept here so the engine's settings file stays the engine's). :func:`check_config` runs every rule and
refuses a non-finite float in any field (``--set lr=nan``): the recipes call it in the one place a
config is resolved (:meth:`vislearn.recipes.Recipe.config`), so no recipe skips it. A failed rule is
one :class:`~vislearn.errors.UserError` naming the setting, the value and what is allowed.

Example::

    @dataclass
    class MyConfig(TrainConfig):
        image_size: int = 32  # input side in pixels
        RULES: ClassVar[dict[str, Rule]] = {"image_size": at_least(1)}
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vislearn.errors import UserError

__all__ = ["DERIVED", "Rule", "TRAIN_RULES", "at_least", "between", "check_config", "device_name", "one_of",
           "rules_of"]


@dataclass(frozen=True)
class Rule:
    """``test(value) -> bool`` and the words for what passes (shown in errors and ``train RECIPE --help``)."""

    test: Callable[[Any], bool]
    text: str
    choice: bool = False  # a closed set of names: a value outside it is "unknown"


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low:g}")


def between(low: float, high: float, high_open: bool = False) -> Rule:
    close = ")" if high_open else "]"
    return Rule(lambda v: low <= v < high if high_open else low <= v <= high, f"in [{low:g}, {high:g}{close}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + " | ".join(choices), choice=True)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_name() -> Rule:
    return Rule(lambda v: isinstance(v, str) and _DEVICE.fullmatch(v) is not None,
                "one of auto | cpu | cuda | cuda:N | mps", choice=True)


# TrainConfig's settings (vislearn.train.config), in its field order.
TRAIN_RULES: dict[str, Rule] = {
    "steps": at_least(0),
    "batch_size": at_least(1),
    "grad_accum_steps": at_least(1),
    "lr": at_least(0),
    "optimizer": one_of("sgd", "adam", "adamw", "rmsprop", "rmsprop_tf"),
    "momentum": between(0, 1, high_open=True),
    "weight_decay": at_least(0),
    "weight_decay_end": at_least(-1),  # -1 (any value < 0): no schedule
    "adam_beta2": between(0, 1, high_open=True),
    "rmsprop_decay": between(0, 1, high_open=True),
    "schedule": one_of("constant", "cosine", "staircase", "exponential", "linear"),
    "warmup_steps": at_least(0),
    "decay_every": at_least(1),
    "decay_rate": at_least(0),
    "min_lr_ratio": between(0, 1),
    "clip_grad": at_least(0),
    "ema_decay": between(0, 1, high_open=True),
    "precision": one_of("fp32", "bf16", "fp16"),
    "eval_every": at_least(0),
    "ckpt_every": at_least(0),
    "keep_checkpoints": at_least(1),
    "log_every": at_least(0),  # 0: no training-metric records
    "seed": at_least(0),
    "num_workers": at_least(0),
    "device": device_name(),
    "eval_batch_size": at_least(0),
    "dist_timeout_minutes": Rule(lambda v: v > 0, "> 0"),
    "epochs": at_least(0),
    "batch_per_replica": at_least(0),
    "decay_epochs": at_least(0),
    "lr_per_replica": at_least(0),
    "ckpt_minutes": at_least(0),  # 0: no wall-time checkpoints
    "skip_nonfinite": at_least(0),
    "compile_backend": one_of("inductor", "aot_eager", "eager", "cudagraphs"),
}

# A length, batch or learning rate stated two ways: when the derived setting (key) is > 0 it replaces the plain one.
DERIVED: dict[str, str] = {"epochs": "steps", "batch_per_replica": "batch_size", "decay_epochs": "decay_every",
                           "lr_per_replica": "lr"}


def rules_of(cls: type) -> dict[str, Rule]:
    """The rules that apply to config class ``cls``: TrainConfig's, then each base's ``RULES``, then its own."""
    from vislearn.train.config import TrainConfig

    rules = dict(TRAIN_RULES) if issubclass(cls, TrainConfig) else {}
    for klass in reversed(cls.__mro__):
        rules.update(vars(klass).get("RULES", {}))
    return rules


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


def check_config(cfg: Any) -> Any:
    """Return ``cfg`` after checking every field against its rule (and every float for finiteness)."""
    rules = rules_of(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _finite(value):
            raise UserError(f"setting {f.name}={value!r} is not a finite number")
        rule = rules.get(f.name)
        if rule is None:
            continue
        items = value if isinstance(value, (tuple, list)) else (value,)
        try:
            ok = all(rule.test(v) for v in items)
        except TypeError:
            ok = False
        if not ok and rule.choice:
            raise UserError(f"unknown {f.name} {value!r} (setting {f.name}); expected {rule.text}")
        if not ok:
            raise UserError(f"setting {f.name}={value!r} is not allowed; expected {rule.text}")
    return cfg

"""One exponential moving average of a module's weights: the evaluation EMA and a momentum teacher.

``ema ← d · ema + (1 − d) · θ`` over every parameter AND buffer (BatchNorm statistics included),
with ``d`` a constant or a schedule ``d(step)``:

* the engine's evaluation EMA (``TrainConfig.ema_decay``): the first update copies the weights,
  later ones average — the same numbers as ``torch.optim.swa_utils.AveragedModel(use_buffers=True,
  multi_avg_fn=get_ema_multi_avg_fn(d))``, and the same ``state_dict`` layout (``n_averaged``,
  ``module.*``), so checkpoints written before this module existed still load;
* a momentum teacher (BYOL, DINO: Caron et al. 2021 Sec. 3.1, ``d`` from 0.996 to 1 on a cosine
  over training, i.e. ``functools.partial(schedules.cosine, total_steps=T, start=0.996, end=1.0)``):
  ``copy_first=False``, the copy made at construction is the teacher's start and every update
  averages. Keep it inside the training module (checkpointed with it) and update it from a
  :class:`~vislearn.train.hooks.Hook`'s ``after_optimizer_step``.

Integer buffers (``num_batches_tracked``) follow ``d · ema + (1 − d) · θ`` truncated back to the
integer type, as torch's averaging does. The copy never requires gradients.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch
import torch.nn as nn


class ModelEMA(nn.Module):
    """An EMA copy of ``module``.

    Args:
        module: the module to average (deep-copied; the copy is ``self.module``).
        decay: ``d`` in ``[0, 1]``, or ``step -> d``.
        copy_first: the first :meth:`update` copies the weights instead of averaging (the
            evaluation EMA); ``False`` for a teacher that starts from the construction-time copy.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> ema = ModelEMA(net, decay=0.9)
        >>> ema.update(net, step=1)  # copies
        >>> torch.equal(ema.module.weight, net.weight)
        True
    """

    def __init__(self, module: nn.Module, decay: float | Callable[[int], float], *, copy_first: bool = True) -> None:
        super().__init__()
        if not callable(decay) and not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay, self.copy_first = decay, copy_first
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))

    def decay_at(self, step: int | None) -> float:
        """``d`` at ``step`` (a schedule's value; the number of updates so far when ``step`` is None)."""
        if not callable(self.decay):
            return float(self.decay)
        d = float(self.decay(int(self.n_averaged) if step is None else step))
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"EMA decay schedule gave {d} at step {step}; it must be in [0, 1]")
        return d

    @torch.no_grad()
    def update(self, module: nn.Module, step: int | None = None) -> None:
        """Move the average towards ``module``'s current parameters and buffers."""
        ours = list(itertools.chain(self.module.parameters(), self.module.buffers()))
        theirs = [t.detach().to(o.device) for o, t in
                  zip(ours, itertools.chain(module.parameters(), module.buffers()), strict=True)]
        if self.copy_first and int(self.n_averaged) == 0:
            for o, t in zip(ours, theirs, strict=True):
                o.copy_(t)
        else:
            d = self.decay_at(step)
            groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
            for o, t in zip(ours, theirs, strict=True):
                if o.is_floating_point() or o.is_complex():
                    a, b = groups.setdefault((o.device, o.dtype), ([], []))
                    a.append(o)
                    b.append(t)
                else:
                    o.copy_(o * d + t * (1 - d))
            for a, b in groups.values():
                torch._foreach_lerp_(a, b, 1 - d)  # ema + (1 − d)(θ − ema)
        self.n_averaged += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

"""Optimizers by name, including TensorFlow-style RMSProp used by the Inception papers.

``build_optimizer(name, param_groups, lr=..., ...)``; a param group may carry ``lr_mult`` (for
example Proxy-NCA's proxies at a higher rate), which the engine applies on top of the schedule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from vislearn.errors import UserError


class RMSpropTF(Optimizer):
    """RMSProp as TensorFlow 1 computes it (Inception-v3 Sec. 8; Inception-v4 Sec. 4).

    Per parameter, with gradient ``g`` (plus ``weight_decay · p``, an L2 term as in TF-slim)::

        ms  ← decay · ms + (1 − decay) · g²          (ms starts at 1, as TF's slot initialiser)
        mom ← momentum · mom + lr · g / sqrt(ms + ε)  (ε inside the square root)
        p   ← p − mom

    Differences from ``torch.optim.RMSprop``: ε inside the square root (the paper's ε = 1.0 is
    large and damps early steps), ``ms`` initialised to one rather than zero, and the learning rate
    applied inside the momentum buffer.
    """

    def __init__(self, params: Iterable, lr: float = 0.045, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1.0, weight_decay: float = 0.0) -> None:
        for name, v in (("lr", lr), ("eps", eps), ("momentum", momentum), ("weight_decay", weight_decay)):
            if v < 0:
                raise UserError(f"RMSpropTF: {name} must be >= 0, got {v}")
        if not 0.0 <= decay < 1.0:
            raise UserError(f"RMSpropTF: decay must be in [0, 1), got {decay}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                ms, buf = state["square_avg"], state["momentum_buffer"]
                ms.mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
                buf.mul_(group["momentum"]).addcdiv_(g, ms.add(group["eps"]).sqrt_(), value=group["lr"])
                p.sub_(buf)
        return loss


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "rmsprop_tf")


def _can_fuse(groups: list[dict[str, Any]]) -> bool | None:
    """Whether Adam(W) can use torch's fused kernel: every parameter a floating tensor on CPU or CUDA.

    The fused kernel does the update in one vectorised pass per tensor; torch's CPU default is a
    per-tensor loop of separate ops, 8× slower for the 16 DINO* heads' 31M parameters
    (benchmarks/ssl_ensemble.py). ``None`` leaves torch's default (e.g. parameters on another device).
    """
    params = [p for g in groups for p in g["params"]]
    ok = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None


def build_optimizer(name: str, param_groups: list[dict[str, Any]], *, lr: float, momentum: float = 0.0,
                    weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float | None = None, rmsprop_decay: float = 0.9, nesterov: bool = False) -> Optimizer:
    """An optimizer over ``param_groups`` (each may override ``lr``/``weight_decay`` and carry ``lr_mult``)."""
    if lr <= 0:
        raise UserError(f"learning rate must be positive, got {lr}")
    groups = [dict(g) for g in param_groups]
    for g in groups:
        g["params"] = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])  # once
        g.setdefault("lr_mult", 1.0)
        g["lr"] = lr * g["lr_mult"]
    torch_eps = 1e-8 if eps is None else eps  # torch's default; 0 is a value (``eps or 1e-8`` lost it)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=torch_eps, weight_decay=weight_decay,
                                fused=_can_fuse(groups))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=torch_eps, weight_decay=weight_decay,
                                 fused=_can_fuse(groups))
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=rmsprop_decay, eps=torch_eps, momentum=momentum,
                                   weight_decay=weight_decay)
    if name == "rmsprop_tf":
        return RMSpropTF(groups, lr=lr, decay=rmsprop_decay, momentum=momentum, eps=1.0 if eps is None else eps,
                         weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")

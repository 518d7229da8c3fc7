"""Conv → BatchNorm → ReLU, the unit every Inception network is built from.

Submodule names ``conv`` and ``bn`` match torchvision's and timm's ``BasicConv2d``/``ConvNormAct``
so their state dicts load without renaming. BN ε defaults to 0.001 as in Google's released
Inception models (PAPERS.md §2); convolutions carry no bias because BN's β replaces it
(Ioffe & Szegedy 2015, Sec. 3.2).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["ConvBNAct", "bn_momentum"]

_BN_MOMENTUM: contextvars.ContextVar[float] = contextvars.ContextVar("bn_momentum", default=0.1)


@contextlib.contextmanager
def bn_momentum(momentum: float) -> Iterator[None]:
    """Every :class:`ConvBNAct` built inside the block gets BN ``momentum`` (PyTorch's: 1 − the TF decay).

    A model builder takes ``bn_momentum`` as an option and builds its layers inside this block, so
    the BN layers are created with it rather than patched after construction.
    """
    if not 0 < momentum <= 1:
        raise UserError(f"bn_momentum must be in (0, 1], got {momentum!r}")
    token = _BN_MOMENTUM.set(float(momentum))
    try:
        yield
    finally:
        _BN_MOMENTUM.reset(token)


class ConvBNAct(nn.Module):
    """``relu(bn(conv(x)))``; ``act=False`` drops the ReLU, ``bn=False`` gives a biased conv."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int | tuple[int, int] = 1,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 eps: float = 1e-3, act: bool = True, bn: bool = True, groups: int = 1,
                 momentum: float | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=padding,
                              bias=not bn, groups=groups)
        m = _BN_MOMENTUM.get() if momentum is None else momentum  # None: the enclosing bn_momentum block's
        self.bn = nn.BatchNorm2d(out_chans, eps=eps, momentum=m) if bn else nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.out_chans = out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

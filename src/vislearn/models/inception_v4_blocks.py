"""The building blocks of Inception-v4 and Inception-ResNet (Szegedy, Ioffe, Vanhoucke, Alemi, AAAI 2017,
arXiv 1602.07261): the stem splits (Fig. 3), the Inception-v4 blocks (Figs. 4-9), the residual blocks
(Figs. 10-13, 16-19) and Reduction-B of the residual nets. The networks that stack them, their
layouts and the figure inconsistencies we resolve are in :mod:`vislearn.models.inception_v4`.

Module names (``branch0``, ``branch1``, ...; ``up`` for a residual block's 1×1 expansion) keep each
block's state dict in the order timm's converter maps by position (:mod:`vislearn.models.timm_names`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.inception_common import PoolProjection, avg_pool_3x3
from vislearn.nn import ConvBNAct
from vislearn.nn.fuse import FusedConv2d

__all__ = ["InceptionA", "InceptionB", "InceptionC", "Mixed3a", "Mixed4a", "Mixed5a", "Mixed5b", "ReductionA",
           "ReductionB", "ReductionBRes", "ResidualA", "ResidualB", "ResidualC"]

BN_EPS = 1e-3  # Google's released Inception models (PAPERS.md §2)


def _conv(cin: int, cout: int, k: int | tuple[int, int] = 1, s: int = 1,
          p: int | tuple[int, int] = 0) -> ConvBNAct:
    """Conv → BN (ε 1e-3) → ReLU; ``p=0`` is TF's VALID, 'same' padding is given explicitly."""
    return ConvBNAct(cin, cout, k, stride=s, padding=p, eps=BN_EPS)


def _same(k: int) -> tuple[int, int]:
    """Padding of a stride-1 'SAME' 1×k (k odd) convolution."""
    return (0, k // 2)


def _tf_avg_pool() -> nn.AvgPool2d:
    """TF ``avg_pool2d(3, stride=1, padding='SAME')``: the mean over valid pixels only (TF-slim and timm)."""
    return avg_pool_3x3(tf_style=True)


def _max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2)  # VALID, stride 2


def _chain(cin: int, specs: Sequence[tuple[int, int | tuple[int, int], int, int | tuple[int, int]]]) -> nn.Sequential:
    """``nn.Sequential`` of Conv-BN-ReLU layers from (out, kernel, stride, padding) specs."""
    layers = []
    for cout, k, s, p in specs:
        layers.append(_conv(cin, cout, k, s, p))
        cin = cout
    return nn.Sequential(*layers)


class _Concat(nn.Module):
    """Runs the branches ``branch0, branch1, ...`` on one input and concatenates them on channels."""

    out_chans: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches()], 1)

    def branches(self) -> list[nn.Module]:
        return [m for n, m in self.named_children() if n.startswith("branch")]


# --------------------------------------------------------------------------------------------- stem
class Mixed3a(nn.Module):
    """Fig. 3, first split: 3×3 max-pool (stride 2) ‖ 3×3 conv 96 (stride 2), both VALID."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.maxpool = _max_pool()
        self.conv = _conv(cin, c, 3, 2)
        self.out_chans = cin + c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.maxpool(x), self.conv(x)], 1)


class Mixed4a(_Concat):
    """Fig. 3, second split: 1×1 64 → 3×3 96 V ‖ 1×1 64 → 7×1 64 → 1×7 64 → 3×3 96 V."""

    def __init__(self, cin: int, c64: int, c96: int) -> None:
        super().__init__()
        self.branch0 = _chain(cin, [(c64, 1, 1, 0), (c96, 3, 1, 0)])
        self.branch1 = _chain(cin, [(c64, 1, 1, 0), (c64, (1, 7), 1, (0, 3)), (c64, (7, 1), 1, (3, 0)),
                                    (c96, 3, 1, 0)])
        self.out_chans = 2 * c96


class Mixed5a(nn.Module):
    """Fig. 3, last split: 3×3 conv 192 (stride 2 V) ‖ 3×3 max-pool (stride 2 V)."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv = _conv(cin, c, 3, 2)
        self.maxpool = _max_pool()
        self.out_chans = c + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.maxpool(x)], 1)


class Mixed5b(_Concat):
    """Released Inception-ResNet-v2 only (TF-slim ``Mixed_5b``): an Inception-v3-style block to 320 ch.

    1×1 96 ‖ 1×1 48 → 5×5 64 ‖ 1×1 64 → 3×3 96 → 3×3 96 ‖ avg-pool (TF SAME) → 1×1 64.
    """

    def __init__(self, cin: int, w: _W) -> None:
        super().__init__()
        self.branch0 = _conv(cin, w(96))
        self.branch1 = _chain(cin, [(w(48), 1, 1, 0), (w(64), 5, 1, 2)])
        self.branch2 = _chain(cin, [(w(64), 1, 1, 0), (w(96), 3, 1, 1), (w(96), 3, 1, 1)])
        self.branch3 = PoolProjection(_tf_avg_pool(), _conv(cin, w(64)))
        self.out_chans = w(96) + w(64) + w(96) + w(64)


# ------------------------------------------------------------------------------- Inception-v4 blocks
class InceptionA(_Concat):
    """Fig. 4 (35×35): avg-pool → 1×1 96 ‖ 1×1 96 ‖ 1×1 64 → 3×3 96 ‖ 1×1 64 → 3×3 96 → 3×3 96."""

    def __init__(self, cin: int, w: _W) -> None:
        super().__init__()
        self.branch0 = _conv(cin, w(96))
        self.branch1 = _chain(cin, [(w(64), 1, 1, 0), (w(96), 3, 1, 1)])
        self.branch2 = _chain(cin, [(w(64), 1, 1, 0), (w(96), 3, 1, 1), (w(96), 3, 1, 1)])
        self.branch3 = PoolProjection(_tf_avg_pool(), _conv(cin, w(96)))
        self.out_chans = 4 * w(96)


class ReductionA(_Concat):
    """Fig. 7 (35×35 → 17×17) with Table 1's (k, l, m, n): 3×3 n s2 ‖ 1×1 k → 3×3 l → 3×3 m s2 ‖ max-pool.

    Also the released Inception-ResNet-v2 ``Mixed_6a`` (k, l, m, n = 256, 256, 384, 384).
    """

    def __init__(self, cin: int, k: int, l: int, m: int, n: int) -> None:  # noqa: E741 (paper names)
        super().__init__()
        self.branch0 = _conv(cin, n, 3, 2)
        self.branch1 = _chain(cin, [(k, 1, 1, 0), (l, 3, 1, 1), (m, 3, 2, 0)])
        self.branch2 = _max_pool()
        self.out_chans = n + m + cin


class InceptionB(_Concat):
    """Fig. 5 (17×17): 1×1 384 ‖ 1×1 192 → 1×7 224 → 7×1 256 ‖ 1×1 192 → 7×1 192 → 1×7 224 → 7×1 224
    → 1×7 256 ‖ avg-pool → 1×1 128 (the order of the factorised 7×7 pairs follows TF-slim)."""

    def __init__(self, cin: int, w: _W) -> None:
        super().__init__()
        h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))
        self.branch0 = _conv(cin, w(384))
        self.branch1 = _chain(cin, [(w(192), 1, 1, 0), (w(224), h[0], 1, h[1]), (w(256), v[0], 1, v[1])])
        self.branch2 = _chain(cin, [(w(192), 1, 1, 0), (w(192), v[0], 1, v[1]), (w(224), h[0], 1, h[1]),
                                    (w(224), v[0], 1, v[1]), (w(256), h[0], 1, h[1])])
        self.branch3 = PoolProjection(_tf_avg_pool(), _conv(cin, w(128)))
        self.out_chans = w(384) + 2 * w(256) + w(128)


class ReductionB(_Concat):
    """Fig. 8 (Inception-v4, 17×17 → 8×8): 1×1 192 → 3×3 192 s2 ‖ 1×1 256 → 1×7 256 → 7×1 320 → 3×3 320 s2
    ‖ max-pool."""

    def __init__(self, cin: int, w: _W) -> None:
        super().__init__()
        self.branch0 = _chain(cin, [(w(192), 1, 1, 0), (w(192), 3, 2, 0)])
        self.branch1 = _chain(cin, [(w(256), 1, 1, 0), (w(256), (1, 7), 1, (0, 3)), (w(320), (7, 1), 1, (3, 0)),
                                    (w(320), 3, 2, 0)])
        self.branch2 = _max_pool()
        self.out_chans = w(192) + w(320) + cin


class InceptionC(nn.Module):
    """Fig. 6 (8×8): 1×1 256 ‖ 1×1 384 → (1×3 256 ‖ 3×1 256) ‖ 1×1 384 → 3×1 448 → 1×3 512 →
    (1×3 256 ‖ 3×1 256) ‖ avg-pool → 1×1 256: 1536 channels (submodule names as TF-slim/timm)."""

    def __init__(self, cin: int, w: _W) -> None:
        super().__init__()
        self.branch0 = _conv(cin, w(256))
        self.branch1_0 = _conv(cin, w(384))
        self.branch1_1a = _conv(w(384), w(256), (1, 3), 1, (0, 1))
        self.branch1_1b = _conv(w(384), w(256), (3, 1), 1, (1, 0))
        self.branch2_0 = _conv(cin, w(384))
        self.branch2_1 = _conv(w(384), w(448), (3, 1), 1, (1, 0))
        self.branch2_2 = _conv(w(448), w(512), (1, 3), 1, (0, 1))
        self.branch2_3a = _conv(w(512), w(256), (1, 3), 1, (0, 1))
        self.branch2_3b = _conv(w(512), w(256), (3, 1), 1, (1, 0))
        self.branch3 = PoolProjection(_tf_avg_pool(), _conv(cin, w(256)))
        self.out_chans = 6 * w(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1),
                          self.branch2_3a(b2), self.branch2_3b(b2), self.branch3(x)], 1)


# ---------------------------------------------------------------------------- residual blocks
class _Residual(nn.Module):
    """``relu(x + scale · up(concat(branches(x))))`` (Fig. 20); ``up`` is a biased 1×1 conv, no BN, no act."""

    def __init__(self, cin: int, branch_chans: int, scale: float, activate: bool = True) -> None:
        super().__init__()
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise UserError(f"{type(self).__name__}: residual scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        self.up = nn.Conv2d(branch_chans, cin, 1, bias=True)
        self.act = nn.ReLU(inplace=True) if activate else nn.Identity()
        self.out_chans = cin

    def branches(self) -> list[nn.Module]:
        return [m for n, m in self.named_children() if n.startswith("branch")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([b(x) for b in self.branches()], 1)
        if isinstance(self.up, FusedConv2d):  # inference fast path: scale, sum and ReLU inside the conv
            return self.up(y, x)
        return self.act(torch.add(x, self.up(y), alpha=self.scale))

    def residual_fusion(self) -> tuple[str, float, bool]:
        """For :func:`vislearn.nn.fuse.fuse_conv_act`: (conv child, residual scale, ReLU after the sum)."""
        return "up", self.scale, isinstance(self.act, nn.ReLU)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class ResidualA(_Residual):
    """Inception-ResNet-A (35×35; Fig. 10 for v1, Fig. 16 for v2, TF-slim ``block35``).

    ``a`` ‖ ``b1[0]`` → 3×3 ``b1[1]`` ‖ ``b2[0]`` → 3×3 ``b2[1]`` → 3×3 ``b2[2]``; v1: 32 ‖ 32, 32 ‖
    32, 32, 32; v2: 32 ‖ 32, 32 ‖ 32, 48, 64.
    """

    def __init__(self, cin: int, a: int, b1: Sequence[int], b2: Sequence[int], scale: float = 0.17,
                 activate: bool = True) -> None:
        super().__init__(cin, a + b1[-1] + b2[-1], scale, activate)
        self.branch0 = _conv(cin, a)
        self.branch1 = _chain(cin, [(b1[0], 1, 1, 0), (b1[1], 3, 1, 1)])
        self.branch2 = _chain(cin, [(b2[0], 1, 1, 0), (b2[1], 3, 1, 1), (b2[2], 3, 1, 1)])


class ResidualB(_Residual):
    """Inception-ResNet-B (17×17; Fig. 11 for v1, Fig. 17 for v2, TF-slim ``block17``).

    ``a`` ‖ ``b[0]`` → 1×7 ``b[1]`` → 7×1 ``b[2]``; v1: 128 ‖ 128, 128, 128; v2: 192 ‖ 128, 160, 192.
    """

    def __init__(self, cin: int, a: int, b: Sequence[int], scale: float = 0.10, activate: bool = True) -> None:
        super().__init__(cin, a + b[-1], scale, activate)
        self.branch0 = _conv(cin, a)
        self.branch1 = _chain(cin, [(b[0], 1, 1, 0), (b[1], (1, 7), 1, (0, 3)), (b[2], (7, 1), 1, (3, 0))])


class ResidualC(_Residual):
    """Inception-ResNet-C (8×8; Fig. 13 for v1, Fig. 19 for v2, TF-slim ``block8``).

    ``a`` ‖ ``b[0]`` → 1×3 ``b[1]`` → 3×1 ``b[2]``; v1: 192 ‖ 192, 192, 192; v2: 192 ‖ 192, 224, 256.
    """

    def __init__(self, cin: int, a: int, b: Sequence[int], scale: float = 0.20, activate: bool = True) -> None:
        super().__init__(cin, a + b[-1], scale, activate)
        self.branch0 = _conv(cin, a)
        self.branch1 = _chain(cin, [(b[0], 1, 1, 0), (b[1], (1, 3), 1, (0, 1)), (b[2], (3, 1), 1, (1, 0))])


class ReductionBRes(_Concat):
    """Reduction-B of the residual nets (17×17 → 8×8; Fig. 12 for v1, Fig. 18 for v2, TF-slim ``Mixed_7a``).

    1×1 ``a`` → 3×3 ``b`` s2 ‖ 1×1 ``a`` → 3×3 ``c`` s2 ‖ 1×1 ``a`` → 3×3 ``d`` → 3×3 ``e`` s2 ‖ max-pool;
    v1: a=256, b=384, c=256, d=256, e=256; v2: 256, 384, 288, 288, 320.
    """

    def __init__(self, cin: int, a: int, b: int, c: int, d: int, e: int) -> None:
        super().__init__()
        self.branch0 = _chain(cin, [(a, 1, 1, 0), (b, 3, 2, 0)])
        self.branch1 = _chain(cin, [(a, 1, 1, 0), (c, 3, 2, 0)])
        self.branch2 = _chain(cin, [(a, 1, 1, 0), (d, 3, 1, 1), (e, 3, 2, 0)])
        self.branch3 = _max_pool()
        self.out_chans = b + c + e + cin


class _W:
    """Channel-width multiplier: ``w(c) = max(1, round(c · width))``."""

    def __init__(self, width: float) -> None:
        if not isinstance(width, (int, float)) or not 0 < width <= 4:
            raise UserError(f"width must be a number in (0, 4], got {width!r}")
        self.width = float(width)

    def __call__(self, c: int) -> int:
        return max(1, int(round(c * self.width)))



"""Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke, Alemi, AAAI 2017).

"Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning", arXiv 1602.07261.
Registered names (all 299×299, valid from 75×75, input mapped to [−1, 1] like Google's releases):

* ``inception_v4``: Figs. 3–9. 4×Inception-A, Reduction-A (k, l, m, n = 192, 224, 256, 384),
  7×Inception-B, Reduction-B, 3×Inception-C, 1536 channels; 42,679,816 parameters at 1000 classes
  (the TF-slim/timm layout is the paper's). Loads timm's ``inception_v4`` state dicts.
* ``inception_resnet_v1``: the paper's layout (Figs. 10–15): stem of Fig. 14 → 256 channels,
  5×Inception-ResNet-A, Reduction-A (192, 192, 256, 384), 10×Inception-ResNet-B, Reduction-B of
  Fig. 12, 5×Inception-ResNet-C, 1792 channels. No public ImageNet weights exist.
* ``inception_resnet_v2``: the *released* layout (TF-slim ``inception_resnet_v2``, Keras, timm),
  the default because it is the one with weights: Inception-v3-like stem plus Mixed_5b (320 ch),
  10×Block35 (scale 0.17), Mixed_6a, 20×Block17 (0.10), Mixed_7a, 9×Block8 (0.20), a final Block8
  (scale 1.0, no ReLU) and a 1×1 convolution to 1536; 55,843,464 parameters. Loads timm's
  ``inception_resnet_v2`` state dicts. Google states the difference from the paper is intended.
* ``inception_resnet_v2_paper``: the paper's own layout (Figs. 3, 16–18, 7, 15): the Inception-v4
  stem (384 ch), 5×A, Reduction-A (256, 256, 384, 384), 10×B, Reduction-B, 5×C. The figures are
  inconsistent and are resolved so that every residual sum is well defined:

  - Fig. 17 (Inception-ResNet-B) expands to 1154 channels, but Reduction-A (Table 1) outputs
    384 + 384 + 384 = 1152, so the expansion is 1152;
  - Fig. 19 (Inception-ResNet-C) expands to 2048 channels, but Reduction-B (Fig. 18) outputs
    1152 + 384 + 288 + 320 = 2144, so the expansion is 2144 (and the final width 2144).

Residual blocks (Sec. 3.1–3.3, Fig. 20): an Inception block of Conv-BN-ReLU layers, concatenated, then a
1×1 "filter-expansion" convolution *without activation and without BN* (biased, as in TF-slim) back to
the input width, scaled by a constant and added to the input, then ReLU. "We used batch-normalization
only on top of the traditional layers, but not on top of the summations" (Sec. 3.2). The scale of each
block type is a constructor argument (Sec. 3.3: 0.1–0.3 keep wide residual nets alive; the released
values are 0.17, 0.10, 0.20 and the last Block8 1.0 without ReLU); the paper layouts have no special
last block (Fig. 13/19 show a ReLU after every sum).

Average pooling inside Inception blocks is TensorFlow's ``SAME`` pooling, which excludes the padding
from the mean (``count_include_pad=False``); timm does the same, so both sources are matched exactly.
The classifier is global average pooling → dropout (keep 0.8, Fig. 9/15) → a linear layer. The paper
figures show no auxiliary head (TF-slim's Inception-v4 has one; timm's does not); none is built.

``width`` multiplies every channel count (rounded, at least 1) for small CPU variants; residual
expansions always return to their input width, so every width is consistent.

Every model exposes ``forward_features(x) -> [stride 2, 4, 8, 16, 32 maps]`` and ``feature_info``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.convert import Converter, StateDict, register_converter
from vislearn.errors import UserError
from vislearn.models.base import INCEPTION_MEAN, INCEPTION_STD, FeatureInfo, VisionModel
from vislearn.models.inception_v3 import avg_pool_3x3, count_macs, init_inception_weights, peer_state_dict
from vislearn.models.registry import register_model
from vislearn.nn import ConvBNAct
from vislearn.nn.conv import bn_momentum as conv_bn_momentum

__all__ = ["InceptionV4", "InceptionResNet", "ResidualA", "ResidualB", "ResidualC", "inception_v4",
           "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper", "count_macs",
           "init_inception_weights"]

PAPER = "Szegedy, Ioffe, Vanhoucke, Alemi 2017 (arXiv 1602.07261)"
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
        self.branch3 = nn.Sequential(_tf_avg_pool(), _conv(cin, w(64)))
        self.out_chans = w(96) + w(64) + w(96) + w(64)


# ------------------------------------------------------------------------------- Inception-v4 blocks
class InceptionA(_Concat):
    """Fig. 4 (35×35): avg-pool → 1×1 96 ‖ 1×1 96 ‖ 1×1 64 → 3×3 96 ‖ 1×1 64 → 3×3 96 → 3×3 96."""

    def __init__(self, cin: int, w: _W) -> None:
        super().__init__()
        self.branch0 = _conv(cin, w(96))
        self.branch1 = _chain(cin, [(w(64), 1, 1, 0), (w(96), 3, 1, 1)])
        self.branch2 = _chain(cin, [(w(64), 1, 1, 0), (w(96), 3, 1, 1), (w(96), 3, 1, 1)])
        self.branch3 = nn.Sequential(_tf_avg_pool(), _conv(cin, w(96)))
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
        self.branch3 = nn.Sequential(_tf_avg_pool(), _conv(cin, w(128)))
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
        self.branch3 = nn.Sequential(_tf_avg_pool(), _conv(cin, w(256)))
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
        r = self.up(torch.cat([b(x) for b in self.branches()], 1))
        return self.act(torch.add(x, r, alpha=self.scale))

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


# ------------------------------------------------------------------------------------ models
class _W:
    """Channel-width multiplier: ``w(c) = max(1, round(c · width))``."""

    def __init__(self, width: float) -> None:
        if not isinstance(width, (int, float)) or not 0 < width <= 4:
            raise UserError(f"width must be a number in (0, 4], got {width!r}")
        self.width = float(width)

    def __call__(self, c: int) -> int:
        return max(1, int(round(c * self.width)))


class _InceptionNet(VisionModel):
    """Five stages (strides 2, 4, 8, 16, 32) → global average pool → dropout → ``fc``."""

    in_chans = 3
    min_input_size = 75  # the smallest input for which every VALID convolution still has an output

    def __init__(self, stages: list[tuple[str, list[tuple[str, nn.Module]]]], num_classes: int,
                 drop_rate: float, normalization, validate_inputs: bool = True) -> None:
        super().__init__(normalization=INCEPTION_MEAN_STD if normalization is None else normalization,
                         validate_inputs=validate_inputs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0 <= drop_rate < 1:
            raise UserError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.stages = nn.ModuleList(nn.Sequential(OrderedDict(mods)) for _, mods in stages)
        self.feature_info = []
        cin = 3
        for i, (_, mods) in enumerate(stages):
            for _, m in mods:
                cin = getattr(m, "out_chans", cin)
            self.feature_info.append(FeatureInfo(f"stages.{i}", cin, 2 ** (i + 1)))
        self.num_features = cin
        self.num_classes = num_classes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        init_inception_weights(self)  # TF-slim's: He truncated normal, BN γ=1 β=0, zero biases

    def layers(self) -> list[tuple[str, nn.Module]]:
        """Every stage child in forward order as (state-dict prefix, module): the converters' map."""
        return [(f"stages.{i}.{n}", m) for i, s in enumerate(self.stages) for n, m in s.named_children()]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.global_pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)[-1])


INCEPTION_MEAN_STD = (INCEPTION_MEAN, INCEPTION_STD)


def _v4_stem(w: _W) -> list[list[tuple[str, nn.Module]]]:
    """Fig. 3 (Inception-v4 and the paper's Inception-ResNet-v2): stages 0–1 and the head of stage 2."""
    s0 = [("conv1a", _conv(3, w(32), 3, 2)), ("conv2a", _conv(w(32), w(32), 3)),
          ("conv2b", _conv(w(32), w(64), 3, 1, 1))]
    m3 = Mixed3a(w(64), w(96))
    m4 = Mixed4a(m3.out_chans, w(64), w(96))
    m5 = Mixed5a(m4.out_chans, w(192))
    return [s0, [("mixed3a", m3)], [("mixed4a", m4), ("mixed5a", m5)]]


class InceptionV4(_InceptionNet):
    """Inception-v4 (Sec. 3.1, Figs. 3–9).

    Args:
        num_classes: outputs of the final linear layer (1000 for ImageNet as in timm).
        width: channel multiplier for small variants (1.0 is the paper's network).
        depths: numbers of Inception-A, -B, -C blocks (paper: 4, 7, 3; Fig. 9).
        drop_rate: dropout before the classifier (paper: keep probability 0.8; Fig. 9).
        normalization: ``(mean, std)`` on [0, 1] (default maps to [−1, 1] like Google's weights).
        validate_inputs: check each batch is float NCHW in [0, 1] (off for tracing/compiling).
        bn_momentum: PyTorch momentum of every BN layer (1 − the TF moving-average decay; default 0.1).
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.0, depths: Sequence[int] = (4, 7, 3),
                 drop_rate: float = 0.2, normalization=None, validate_inputs: bool = True,
                 bn_momentum: float = 0.1) -> None:
        with conv_bn_momentum(bn_momentum):  # every BN layer is built with the model's momentum
            w = _W(width)
            depths = _check_depths(depths)
            s0, s1, s2 = _v4_stem(w)
            c = s2[-1][1].out_chans
            for i in range(depths[0]):
                s2.append((f"block{i}", InceptionA(c, w)))
                c = s2[-1][1].out_chans
            red_a = ReductionA(c, w(192), w(224), w(256), w(384))  # Table 1, Inception-v4
            s3: list[tuple[str, nn.Module]] = [("reduction", red_a)]
            c = red_a.out_chans
            for i in range(depths[1]):
                s3.append((f"block{i}", InceptionB(c, w)))
                c = s3[-1][1].out_chans
            red_b = ReductionB(c, w)
            s4: list[tuple[str, nn.Module]] = [("reduction", red_b)]
            c = red_b.out_chans
            for i in range(depths[2]):
                s4.append((f"block{i}", InceptionC(c, w)))
                c = s4[-1][1].out_chans
            super().__init__([("stem", s0), ("stem", s1), ("a", s2), ("b", s3), ("c", s4)], num_classes,
                             drop_rate, normalization, validate_inputs)


class InceptionResNet(_InceptionNet):
    """Inception-ResNet-v1 / -v2 (Sec. 3.2, Figs. 10–19) in the paper's or the released layout.

    Args:
        version: 1 or 2.
        layout: ``"paper"`` (Fig. 15: 5×A, 10×B, 5×C) or ``"released"`` (v2 only; the TF-slim
            checkpoint: 10×A, 20×B, 9×C + a final linear C block + 1×1 conv to 1536).
        num_classes, width, drop_rate, normalization, bn_momentum: as :class:`InceptionV4`.
        depths: numbers of residual A, B, C blocks (default: the layout's).
        scale_a, scale_b, scale_c: residual scales per block type (Sec. 3.3; released: 0.17, 0.10,
            0.20; the paper gives the range 0.1–0.3 only, so the paper layouts use the same values).
        scale_final: scale of the released layout's last Block8 (1.0, no ReLU after it).
    """

    def __init__(self, version: int = 2, layout: str = "released", num_classes: int = 1000, width: float = 1.0,
                 depths: Sequence[int] | None = None, scale_a: float = 0.17, scale_b: float = 0.10,
                 scale_c: float = 0.20, scale_final: float = 1.0, drop_rate: float = 0.2,
                 normalization=None, validate_inputs: bool = True, bn_momentum: float = 0.1) -> None:
        if version not in (1, 2):
            raise UserError(f"Inception-ResNet version must be 1 or 2, got {version!r}")
        if layout not in ("paper", "released"):
            raise UserError(f"layout must be 'paper' or 'released', got {layout!r}")
        if layout == "released" and version == 1:
            raise UserError("Inception-ResNet-v1 has no released layout; use layout='paper'")
        with conv_bn_momentum(bn_momentum):  # every BN layer is built with the model's momentum
            w = _W(width)
            released = layout == "released"
            depths = _check_depths(depths if depths is not None else ((10, 20, 9) if released else (5, 10, 5)))
            if version == 1:  # Fig. 14 stem → 256 ch; Figs. 10–13; Table 1 (k, l, m, n) = (192, 192, 256, 384)
                s0, s1, s2 = _v1_stem(w)
                a_spec = (w(32), (w(32), w(32)), (w(32), w(32), w(32)))
                red_a = (w(192), w(192), w(256), w(384))
                b_spec = (w(128), (w(128), w(128), w(128)))
                red_b = (w(256), w(384), w(256), w(256), w(256))
                c_spec = (w(192), (w(192), w(192), w(192)))
            else:  # v2 blocks (Figs. 16–19; TF-slim block35/17/8), Table 1 (256, 256, 384, 384)
                if released:
                    s0, s1, s2 = _released_v2_stem(w)
                else:
                    s0, s1, s2 = _v4_stem(w)
                a_spec = (w(32), (w(32), w(32)), (w(32), w(48), w(64)))
                red_a = (w(256), w(256), w(384), w(384))
                b_spec = (w(192), (w(128), w(160), w(192)))
                red_b = (w(256), w(384), w(288), w(288), w(320))
                c_spec = (w(192), (w(192), w(224), w(256)))
            c = s2[-1][1].out_chans
            for i in range(depths[0]):
                s2.append((f"block{i}", ResidualA(c, *a_spec, scale=scale_a)))
            ra = ReductionA(c, *red_a)
            s3: list[tuple[str, nn.Module]] = [("reduction", ra)]
            c = ra.out_chans
            for i in range(depths[1]):
                s3.append((f"block{i}", ResidualB(c, *b_spec, scale=scale_b)))
            rb = ReductionBRes(c, *red_b)
            s4: list[tuple[str, nn.Module]] = [("reduction", rb)]
            c = rb.out_chans
            for i in range(depths[2]):
                s4.append((f"block{i}", ResidualC(c, *c_spec, scale=scale_c)))
            if released:  # TF-slim: Block8(scale=1, activation_fn=None), then Conv2d_7b_1x1 to 1536
                s4.append(("block_final", ResidualC(c, *c_spec, scale=scale_final, activate=False)))
                s4.append(("conv7b", _conv(c, w(1536))))
            super().__init__([("stem", s0), ("stem", s1), ("a", s2), ("b", s3), ("c", s4)], num_classes,
                             drop_rate, normalization, validate_inputs)
        self.version, self.layout = version, layout


def _v1_stem(w: _W) -> list[list[tuple[str, nn.Module]]]:
    """Fig. 14: 3×3 32 s2 V, 3×3 32 V, 3×3 64, max-pool s2 V, 1×1 80, 3×3 192 V, 3×3 256 s2 V."""
    s0 = [("conv1a", _conv(3, w(32), 3, 2)), ("conv2a", _conv(w(32), w(32), 3)),
          ("conv2b", _conv(w(32), w(64), 3, 1, 1))]
    s1 = [("pool3a", _max_pool()), ("conv3b", _conv(w(64), w(80))), ("conv4a", _conv(w(80), w(192), 3))]
    s2 = [("conv4b", _conv(w(192), w(256), 3, 2))]
    return [s0, s1, s2]


def _released_v2_stem(w: _W) -> list[list[tuple[str, nn.Module]]]:
    """TF-slim Inception-ResNet-v2: the Inception-v3 stem (to 192 ch at 35×35 after max-pool) + Mixed_5b."""
    s0 = [("conv1a", _conv(3, w(32), 3, 2)), ("conv2a", _conv(w(32), w(32), 3)),
          ("conv2b", _conv(w(32), w(64), 3, 1, 1))]
    s1 = [("pool3a", _max_pool()), ("conv3b", _conv(w(64), w(80))), ("conv4a", _conv(w(80), w(192), 3))]
    s2 = [("pool5a", _max_pool()), ("mixed5b", Mixed5b(w(192), w))]
    return [s0, s1, s2]


def _check_depths(depths: Sequence[int]) -> tuple[int, int, int]:
    d = tuple(depths)
    if len(d) != 3 or not all(isinstance(v, int) and v >= 0 for v in d):
        raise UserError(f"depths must be three non-negative integers (A, B, C blocks), got {depths!r}")
    return d  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ builders
@register_model("inception_v4", input_size=(3, 299, 299), paper=PAPER + ", Figs. 3-9")
def inception_v4(**kwargs) -> InceptionV4:
    """Inception-v4 (42,679,816 parameters at 1000 classes); loads timm ``inception_v4`` weights."""
    return InceptionV4(**kwargs)


@register_model("inception_resnet_v1", input_size=(3, 299, 299), paper=PAPER + ", Figs. 10-15")
def inception_resnet_v1(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v1 in the paper's layout (stem → 256, 5×A, Red-A, 10×B, Red-B, 5×C, 1792 ch)."""
    return InceptionResNet(version=1, layout="paper", **kwargs)


@register_model("inception_resnet_v2", input_size=(3, 299, 299), paper=PAPER + ", released TF-slim layout")
def inception_resnet_v2(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v2 as released (TF-slim/timm; 55,843,464 parameters); loads timm weights."""
    return InceptionResNet(version=2, layout="released", **kwargs)


@register_model("inception_resnet_v2_paper", input_size=(3, 299, 299), paper=PAPER + ", Figs. 3, 7, 15-19")
def inception_resnet_v2_paper(**kwargs) -> InceptionResNet:
    """Inception-ResNet-v2 in the paper's layout (figure inconsistencies resolved: 1152 and 2144 ch)."""
    return InceptionResNet(version=2, layout="paper", **kwargs)


# ---------------------------------------------------------------------------------- converters
def _timm_v4_names(model: nn.Module) -> list[str]:
    return [f"features.{i}" for i in range(len(model.layers()))]


def _timm_irv2_names(model: nn.Module) -> list[str]:
    s = model.stages
    n_a, n_b, n_c = len(s[2]) - 2, len(s[3]) - 1, len(s[4]) - 3
    return (["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
             "mixed_5b"] + [f"repeat.{i}" for i in range(n_a)] + ["mixed_6a"]
            + [f"repeat_1.{i}" for i in range(n_b)] + ["mixed_7a"] + [f"repeat_2.{i}" for i in range(n_c)]
            + ["block8", "conv2d_7b"])


def _timm_converter(peer_names, head: str):
    def convert(sd: StateDict, model: nn.Module) -> StateDict:
        if not isinstance(model, _InceptionNet):
            raise UserError(f"timm Inception weights need an Inception model, got {type(model).__name__}")
        ours = [p for p, _ in model.layers()]
        theirs = peer_names(model)
        if len(ours) != len(theirs):
            raise UserError(f"timm weights do not fit this {type(model).__name__} layout")
        table = dict(zip(theirs, ours, strict=True))
        out: StateDict = {}
        for key, v in sd.items():
            if key.startswith(head + "."):
                out["fc." + key[len(head) + 1:]] = v
                continue
            m = re.match(r"^((?:features|repeat|repeat_1|repeat_2)\.\d+|[a-z0-9_]+)\.(.*)$", key)
            if m is None or m.group(1) not in table:
                out[key] = v  # reported by name as unexpected
                continue
            rest = re.sub(r"^conv2d\.", "up.", m.group(2))  # timm's residual 1×1 expansion is ``conv2d``
            out[f"{table[m.group(1)]}.{rest}"] = v
        return peer_state_dict(out, model, "timm")  # fills num_batches_tracked absent from ported files

    return convert


register_converter(Converter(
    source="timm", model_prefix="inception_v4",
    detect=lambda sd: "features.0.conv.weight" in sd and "last_linear.weight" in sd
    and "features.3.conv.conv.weight" in sd,
    convert=_timm_converter(_timm_v4_names, "last_linear"),
    normalization=INCEPTION_MEAN_STD,  # timm's IMAGENET_INCEPTION_MEAN/STD
))
register_converter(Converter(
    source="timm", model_prefix="inception_resnet_v2",
    detect=lambda sd: "conv2d_1a.conv.weight" in sd and "mixed_5b.branch0.conv.weight" in sd
    and "classif.weight" in sd,
    convert=_timm_converter(_timm_irv2_names, "classif"),
    normalization=INCEPTION_MEAN_STD,
))

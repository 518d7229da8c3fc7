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
The blocks are in :mod:`vislearn.models.inception_v4_blocks`; timm's state-dict names and the converters
for its checkpoints in :mod:`vislearn.models.timm_names`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.base import INCEPTION_MEAN, INCEPTION_STD, FeatureInfo, VisionModel
from vislearn.models.inception_common import init_inception_weights
from vislearn.models.inception_v4_blocks import (
    _W,
    InceptionA,
    InceptionB,
    InceptionC,
    Mixed3a,
    Mixed4a,
    Mixed5a,
    Mixed5b,
    ReductionA,
    ReductionB,
    ReductionBRes,
    ResidualA,
    ResidualB,
    ResidualC,
    _conv,
    _max_pool,
)
from vislearn.models.registry import register_model
from vislearn.nn.conv import bn_momentum as conv_bn_momentum

__all__ = ["InceptionV4", "InceptionResNet", "inception_v4", "inception_resnet_v1", "inception_resnet_v2",
           "inception_resnet_v2_paper"]

PAPER = "Szegedy, Ioffe, Vanhoucke, Alemi 2017 (arXiv 1602.07261)"


# ------------------------------------------------------------------------------------ models
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

"""Inception-v3 (Szegedy, Vanhoucke, Ioffe, Shlens, Wojna: "Rethinking the Inception Architecture for
Computer Vision", CVPR 2016, arXiv 1512.00567), with exact weight compatibility with torchvision,
timm and TF-slim.

The network, 299×299 input. We build the *released* model (Google's TF-slim checkpoint, which
torchvision and timm reproduce), because that is what every published weight file and number
refers to; where the released layout departs from the paper's figures and Table 1 it is said per
block (paper Sec. 5-7; PAPERS.md §2):

* stem ``Conv2d_1a..4a``: 3×3/2 (32), 3×3 (32), 3×3 padded (64), max-pool 3×3/2, 1×1 (80), 3×3 (192),
  max-pool 3×3/2 → 35×35×192 (Sec. 6: the 7×7 stem factorised into 3×3 convolutions). As we read
  Table 1 it ends with 3×3 (80), 3×3/2 (192), 3×3 (288) instead of the released 1×1 (80), 3×3 (192),
  max-pool: the released stem is the one here.
* :class:`InceptionA`, ``Mixed_5b..5d`` (35×35): four branches, 1×1 (64); 1×1 (48) → **5×5** (64);
  1×1 (64) → 3×3 (96) → 3×3 (96); average-pool → 1×1 (32, then 64, 64). Fig. 5 of the paper
  replaces the 5×5 convolution by two 3×3 convolutions; the released model keeps *both* a 5×5 branch
  and the factorised double-3×3 branch. We follow the release (the 5×5 branch is what
  ``Mixed_5b.branch5x5_*`` weights fill).
* :class:`InceptionB`, ``Mixed_6a`` (35→17): 3×3/2 (384); 1×1 (64) → 3×3 (96) → 3×3/2 (96); max-pool
  3×3/2, in parallel and concatenated: the grid reduction of Fig. 10 (Sec. 7).
* :class:`InceptionC`, ``Mixed_6b..6e`` (17×17): Fig. 6 with n = 7 (Sec. 3.2): 1×1 (192); 1×1 (c) →
  1×7 (c) → 7×1 (192); 1×1 (c) → 7×1 → 1×7 → 7×1 → 1×7 (192); average-pool → 1×1 (192), with
  c = 128, 160, 160, 192. Table 1 lists five such modules; the release has four, as here.
* :class:`InceptionD`, ``Mixed_7a`` (17→8): 1×1 (192) → 3×3/2 (320); 1×1 (192) → 1×7 → 7×1 → 3×3/2
  (192); max-pool 3×3/2. Table 1 points to Fig. 10 for this reduction; the release adds the 1×7/7×1
  factorisation to its second branch.
* :class:`InceptionE`, ``Mixed_7b..7c`` (8×8): the expanded filter bank of Fig. 7: 1×1 (320);
  1×1 (384) → [1×3, 3×1] (384 each, concatenated); 1×1 (448) → 3×3 (384) → [1×3, 3×1];
  average-pool → 1×1 (192).
* global average pooling, dropout (keep 0.8 in TF-slim), linear classifier;
* :class:`InceptionAux` on the last 17×17 layer with batch-normalised convolutions (Sec. 4,
  "BN-auxiliary" of Table 3), ``AuxLogits``: average-pool 5×5/3, 1×1 (128), 5×5 (768), linear.

Module and state-dict names are those of torchvision's ``Inception3`` and timm's ``inception_v3``
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ``AuxLogits.conv1...``,
``fc.weight``): their checkpoints load without renaming. Parameter count at 1000 classes:
23,834,568 without the auxiliary head, 27,161,264 with it.

Outputs: in training mode with ``aux_logits=True`` ``forward`` returns the tuple
``(logits, aux_logits)``; in eval mode (or without the aux head) it returns the logits tensor alone.
There is no namedtuple: unpack in training, use the tensor in evaluation.

Input normalisation (``model.normalization``, applied inside ``forward`` to [0, 1] images): by
default ``(0.5, 0.5)`` per channel, i.e. [0, 1] → [-1, 1], the range Google's released Inception
models were trained on (PAPERS.md §2). This is also what torchvision's pretrained weights need:
torchvision's builder silently sets ``transform_input=True``, which takes an ImageNet-mean/std
normalised tensor and maps it back to [-1, 1] before the first convolution. Our model has no
``transform_input``; it applies the composite directly, so feeding [0, 1] images to ours gives the
same logits as torchvision's pretrained pipeline (ImageNet normalisation + ``transform_input``), and
there is no hidden second normalisation to forget (the trap). timm's ``inception_v3.tv_in1k`` and
``tf_in1k`` configs use the same (0.5, 0.5); timm's ``gluon_in1k`` is the exception (ImageNet
mean/std): pass ``normalization=`` for it, since its state dict has the same keys as the others.

Average pooling: TensorFlow's "SAME" average pooling (the paper's implementation and TF-slim's
weights) excludes the zero padding from the mean; PyTorch's default, used by torchvision and timm,
includes it. ``tf_avg_pool`` selects it (default ``False``: torchvision/timm behaviour, so their
checkpoints reproduce their logits exactly; the TF-slim converter switches it on). The two differ
only on border pixels of the pooling branches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.convert import Converter, StateDict, register_converter
from vislearn.errors import UserError
from vislearn.models.base import INCEPTION_MEAN, INCEPTION_STD, FeatureInfo, VisionModel
from vislearn.models.registry import register_model
from vislearn.nn.conv import ConvBNAct

__all__ = [
    "InceptionV3", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionAux",
    "avg_pool_3x3", "channels", "set_tf_avg_pool", "init_inception_weights", "count_macs",
    "peer_state_dict", "tf_slim_arrays", "tf_conv_bn", "tf_dense_from_conv", "INCEPTION_V3_TF_SCOPES",
]

BN_EPS = 1e-3  # released Google models (PAPERS.md §2)


# ------------------------------------------------------------------------------------ building blocks
def avg_pool_3x3(tf_style: bool = False) -> nn.AvgPool2d:
    """3×3/1 average pooling with padding 1; ``tf_style`` excludes the padding from the mean (TF "SAME")."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=not tf_style)


def set_tf_avg_pool(model: nn.Module, tf_style: bool = True) -> None:
    """Switch every padded average pooling in ``model`` to TF "SAME" semantics (or back).

    Pooling has no parameters, so this does not change the state dict; builders record the flag in
    ``model.model_kwargs["tf_avg_pool"]`` so saved weights rebuild the same model.
    """
    for m in model.modules():
        if isinstance(m, nn.AvgPool2d) and m.padding not in (0, (0, 0)):
            m.count_include_pad = not tf_style
    if hasattr(model, "tf_avg_pool"):
        model.tf_avg_pool = tf_style
    kwargs = getattr(model, "model_kwargs", None)
    if isinstance(kwargs, dict):
        kwargs["tf_avg_pool"] = tf_style


def _conv(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1,
          padding: int | tuple[int, int] = 0) -> ConvBNAct:
    return ConvBNAct(cin, cout, k, stride=stride, padding=padding, eps=BN_EPS)


def channels(width: float = 1.0):
    """``c ↦ max(8, round(c · width))``: the channel counts of a narrower network (identity at 1.0)."""
    if width == 1.0:
        return lambda c: c
    return lambda c: max(8, int(round(c * width)))


class InceptionA(nn.Module):
    """35×35 module, released layout (Fig. 5 with a 5×5 branch kept): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1.

    torchvision keeps the 5×5 branch of the released weights (the paper's Fig. 5 factorises it
    into two 3×3; the released network has both a 5×5 and a double-3×3 branch); names follow it.
    """

    def __init__(self, cin: int, pool_features: int, tf_avg_pool: bool = False, width: float = 1.0) -> None:
        super().__init__()
        c = channels(width)
        self.branch1x1 = _conv(cin, c(64), 1)
        self.branch5x5_1 = _conv(cin, c(48), 1)
        self.branch5x5_2 = _conv(c(48), c(64), 5, padding=2)
        self.branch3x3dbl_1 = _conv(cin, c(64), 1)
        self.branch3x3dbl_2 = _conv(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = _conv(c(96), c(96), 3, padding=1)
        self.pool = avg_pool_3x3(tf_avg_pool)
        self.branch_pool = _conv(cin, c(pool_features), 1)
        self.out_chans = c(64) + c(64) + c(96) + c(pool_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(self.pool(x)),
        ], 1)


class InceptionB(nn.Module):
    """Grid reduction 35→17 (paper Fig. 10, Sec. 7): stride-2 conv and pooling in parallel."""

    def __init__(self, cin: int, width: float = 1.0) -> None:
        super().__init__()
        c = channels(width)
        self.branch3x3 = _conv(cin, c(384), 3, stride=2)
        self.branch3x3dbl_1 = _conv(cin, c(64), 1)
        self.branch3x3dbl_2 = _conv(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = _conv(c(96), c(96), 3, stride=2)
        self.out_chans = c(384) + c(96) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17×17 module with asymmetric 1×7/7×1 factorisation (paper Fig. 6, Sec. 3.2, n = 7)."""

    def __init__(self, cin: int, channels_7x7: int, tf_avg_pool: bool = False, width: float = 1.0) -> None:
        super().__init__()
        c = channels(width)
        c7 = c(channels_7x7)
        self.branch1x1 = _conv(cin, c(192), 1)
        self.branch7x7_1 = _conv(cin, c7, 1)
        self.branch7x7_2 = _conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _conv(c7, c(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _conv(cin, c7, 1)
        self.branch7x7dbl_2 = _conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _conv(c7, c(192), (1, 7), padding=(0, 3))
        self.pool = avg_pool_3x3(tf_avg_pool)
        self.branch_pool = _conv(cin, c(192), 1)
        self.out_chans = 4 * c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(self.pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17→8 (``Mixed_7a``): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool 3×3/2."""

    def __init__(self, cin: int, width: float = 1.0) -> None:
        super().__init__()
        c = channels(width)
        self.branch3x3_1 = _conv(cin, c(192), 1)
        self.branch3x3_2 = _conv(c(192), c(320), 3, stride=2)
        self.branch7x7x3_1 = _conv(cin, c(192), 1)
        self.branch7x7x3_2 = _conv(c(192), c(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _conv(c(192), c(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _conv(c(192), c(192), 3, stride=2)
        self.out_chans = c(320) + c(192) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8×8 module with expanded filter banks (paper Fig. 7): 1×3 and 3×1 outputs concatenated."""

    def __init__(self, cin: int, tf_avg_pool: bool = False, width: float = 1.0) -> None:
        super().__init__()
        c = channels(width)
        self.branch1x1 = _conv(cin, c(320), 1)
        self.branch3x3_1 = _conv(cin, c(384), 1)
        self.branch3x3_2a = _conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = _conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _conv(cin, c(448), 1)
        self.branch3x3dbl_2 = _conv(c(448), c(384), 3, padding=1)
        self.branch3x3dbl_3a = _conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.pool = avg_pool_3x3(tf_avg_pool)
        self.branch_pool = _conv(cin, c(192), 1)
        self.out_chans = c(320) + 4 * c(384) + c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(self.pool(x)),
        ], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the last 17×17 layer with BN (paper Sec. 4 and Fig. 8).

    avg-pool 5×5/3 (17×17 → 5×5) → 1×1 conv 128 → 5×5 conv 768 → global pool → linear. torchvision
    and timm fail on 17×17 maps smaller than 17 (inputs below ~299 px in training mode); here such
    maps are pooled adaptively to 5×5 instead, so the head also trains at small scale (75-96 px).
    At 17×17 and above the computation is exactly theirs.
    """

    def __init__(self, cin: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c = channels(width)
        self.conv0 = _conv(cin, c(128), 1)
        self.conv1 = _conv(c(128), c(768), 5)
        self.conv1.init_std = 0.01  # TF-slim: truncated normal 0.01 for this layer
        self.fc = nn.Linear(c(768), num_classes)
        self.fc.init_std = 0.001  # TF-slim: truncated normal 0.001 for the aux logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 17 or x.shape[-2] < 17:
            x = F.adaptive_avg_pool2d(x, 5)
        else:
            x = F.avg_pool2d(x, 5, stride=3)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@torch.no_grad()
def init_inception_weights(model: nn.Module) -> None:
    """He initialisation (variance 2 / fan-in) for convolutions and classifiers; a module carrying
    ``init_std`` (the auxiliary head's layers, as in TF-slim) gets that standard deviation instead;
    BN γ = 1, β = 0; biases 0.

    TF-slim draws from a truncated normal; we draw a uniform of the same variance, which is an
    order of magnitude cheaper on CPU (building the 27M-parameter model stays under a second).
    """
    def uniform_with_std(w: torch.Tensor, std: float) -> None:
        bound = std * 3.0 ** 0.5
        w.uniform_(-bound, bound)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            std = getattr(m, "init_std", None)
            uniform_with_std(m.weight, std if std is not None else (2.0 / m.weight[0].numel()) ** 0.5)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
    for m in model.modules():  # a ConvBNAct's init_std belongs to its convolution
        if isinstance(m, ConvBNAct) and hasattr(m, "init_std"):
            uniform_with_std(m.conv.weight, m.init_std)


# ------------------------------------------------------------------------------------------ the model
class InceptionV3(VisionModel):
    """Inception-v3 (paper Table 1). See the module docstring for outputs, normalisation and pooling.

    Args:
        num_classes: classifier outputs (1000 for ImageNet).
        aux_logits: build the auxiliary classifier (``AuxLogits``); used in training mode only.
        drop_rate: dropout before the classifier (TF-slim: keep probability 0.8 → 0.2; torchvision
            uses 0.5, timm 0; it has no effect in eval mode).
        tf_avg_pool: TF "SAME" average pooling that excludes the padding (see module docstring).
        width: channel multiplier for small-scale experiments (1.0: the paper's network; other values
            have no peer checkpoints).
        normalization: ``(mean, std)`` on the [0, 1] scale; default (0.5, 0.5) → [-1, 1].
        validate_inputs: check range/shape of every batch (turn off inside tight loops if needed).
    """

    in_chans = 3
    min_input_size = 75  # smallest size for which the 8×8 stage is non-empty (paper Sec. 9 uses 79)

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, drop_rate: float = 0.2,
                 tf_avg_pool: bool = False, width: float = 1.0,
                 normalization: tuple[Sequence[float], Sequence[float]] | None = (
                     INCEPTION_MEAN, INCEPTION_STD),
                 validate_inputs: bool = True) -> None:
        super().__init__(normalization=normalization, validate_inputs=validate_inputs)
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        if not 0 <= drop_rate < 1:
            raise UserError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if not 0 < width <= 4:
            raise UserError(f"width must be in (0, 4], got {width}")
        self.num_classes, self.aux_logits, self.tf_avg_pool = num_classes, aux_logits, tf_avg_pool
        c = channels(width)
        self.Conv2d_1a_3x3 = _conv(3, c(32), 3, stride=2)
        self.Conv2d_2a_3x3 = _conv(c(32), c(32), 3)
        self.Conv2d_2b_3x3 = _conv(c(32), c(64), 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = _conv(c(64), c(80), 1)
        self.Conv2d_4a_3x3 = _conv(c(80), c(192), 3)
        self.maxpool2 = nn.MaxPool2d(3, stride=2)
        self.Mixed_5b = InceptionA(c(192), 32, tf_avg_pool, width)
        self.Mixed_5c = InceptionA(self.Mixed_5b.out_chans, 64, tf_avg_pool, width)
        self.Mixed_5d = InceptionA(self.Mixed_5c.out_chans, 64, tf_avg_pool, width)
        self.Mixed_6a = InceptionB(self.Mixed_5d.out_chans, width)
        self.Mixed_6b = InceptionC(self.Mixed_6a.out_chans, 128, tf_avg_pool, width)
        self.Mixed_6c = InceptionC(self.Mixed_6b.out_chans, 160, tf_avg_pool, width)
        self.Mixed_6d = InceptionC(self.Mixed_6c.out_chans, 160, tf_avg_pool, width)
        self.Mixed_6e = InceptionC(self.Mixed_6d.out_chans, 192, tf_avg_pool, width)
        c6 = self.Mixed_6e.out_chans
        self.AuxLogits = InceptionAux(c6, num_classes, width) if aux_logits else None
        self.Mixed_7a = InceptionD(c6, width)
        self.Mixed_7b = InceptionE(self.Mixed_7a.out_chans, tf_avg_pool, width)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out_chans, tf_avg_pool, width)
        self.dropout = nn.Dropout(drop_rate)
        self.num_features = self.Mixed_7c.out_chans
        self.fc = nn.Linear(self.num_features, num_classes)
        self.feature_info = [FeatureInfo("Conv2d_2b_3x3", c(64), 2), FeatureInfo("Conv2d_4a_3x3", c(192), 4),
                             FeatureInfo("Mixed_5d", self.Mixed_5d.out_chans, 8), FeatureInfo("Mixed_6e", c6, 16),
                             FeatureInfo("Mixed_7c", self.num_features, 32)]
        init_inception_weights(self)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ``feature_info`` maps of a normalised batch."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        s2 = x
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))
        s4 = x
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(x))))
        s8 = x
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        s16 = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return [s2, s4, s8, s16, x]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[0, 1] images → maps at strides 2, 4, 8, 16, 32 (channels 64, 192, 288, 768, 2048)."""
        return self._stages(self.prepare_input(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling, dropout and the classifier on the 8×8×2048 map."""
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; ``(logits, aux_logits)`` in training mode when the aux head exists."""
        feats = self._stages(self.prepare_input(x))
        logits = self.forward_head(feats[-1])
        if self.training and self.AuxLogits is not None:
            return logits, self.AuxLogits(feats[3])
        return logits


@register_model("inception_v3", input_size=(3, 299, 299),
                paper="Szegedy et al. 2016, Rethinking the Inception Architecture (arXiv 1512.00567)")
def inception_v3(**kwargs: Any) -> InceptionV3:
    return InceptionV3(**kwargs)


# ------------------------------------------------------------------------------------------ counting
def count_macs(model: nn.Module, image_size: int = 299, batch: int = 1) -> int:
    """Multiply-adds of one eval-mode forward pass per image, counted by ``torch.utils.flop_counter``
    (convolutions and matrix products; FLOPs / 2).

    A model built on the ``meta`` device (``with torch.device("meta"): model = ...``) is counted
    without computing anything; input validation is skipped for it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was, validate = model.training, getattr(model, "validate_inputs", None)
    model.eval()
    if validate is not None and device.type == "meta":
        model.validate_inputs = False
    x = torch.rand(batch, getattr(model, "in_chans", 3), image_size, image_size, device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
        if validate is not None:
            model.validate_inputs = validate
    return counter.get_total_flops() // (2 * batch)


# ----------------------------------------------------------------------------- torchvision / timm
def peer_state_dict(sd: StateDict, model: nn.Module, source: str) -> StateDict:
    """A torchvision/timm-layout state dict fitted to ``model`` (same keys as ours):

    * auxiliary-head keys are dropped when ``model`` has no aux head (torchvision's released
      checkpoint always carries them; timm builds without it by default); a model *with* an aux
      head and a file without one is an error naming the missing head;
    * ``num_batches_tracked`` counters missing from ported checkpoints are filled with zeros.
    """
    own = model.state_dict()
    out = {k: v for k, v in sd.items() if k in own or not k.startswith("AuxLogits.")}
    has_aux_file = any(k.startswith("AuxLogits.") for k in sd)
    has_aux_model = any(k.startswith("AuxLogits.") for k in own)
    if has_aux_model and not has_aux_file:
        raise UserError(f"the {source} checkpoint has no auxiliary head (AuxLogits.*); build the model "
                        "with aux_logits=False")
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in out and k.removesuffix("num_batches_tracked") \
                + "running_mean" in out:
            out[k] = torch.zeros_like(v)
    return out


def _is_inception_v3_layout(sd: StateDict) -> bool:
    return ("Conv2d_1a_3x3.conv.weight" in sd and "Mixed_7c.branch3x3dbl_3b.conv.weight" in sd
            and "Mixed_6e.branch7x7dbl_5.conv.weight" in sd)


# torchvision's Inception3 and timm's inception_v3 share one layout, so the keys cannot tell them
# apart; every checkpoint released in that layout except timm's gluon_in1k expects [-1, 1] input at
# the first convolution (torchvision through transform_input), which is (0.5, 0.5) on our scale.
register_converter(Converter(
    source="torchvision/timm", model_prefix="inception_v3", detect=_is_inception_v3_layout,
    convert=lambda sd, model: peer_state_dict(sd, model, "torchvision/timm"),
    normalization=(INCEPTION_MEAN, INCEPTION_STD)))


# ------------------------------------------------------------------------------------------- TF-slim
def tf_slim_arrays(sd: StateDict, root: str) -> StateDict:
    """TF variable names normalised: ``:0`` suffixes and the ``root/`` scope (e.g. ``InceptionV3/``)
    removed, an ``ExponentialMovingAverage`` shadow preferred over the raw variable when present."""
    out: StateDict = {}
    for k, v in sd.items():
        name = k.removesuffix(":0")
        name = name[len(root) + 1:] if name.startswith(root + "/") else name
        if name.endswith("/ExponentialMovingAverage"):
            continue
        out[name] = v
    for k, v in sd.items():  # the averaged weights are what Google evaluated (paper Sec. 8)
        name = k.removesuffix(":0")
        name = name[len(root) + 1:] if name.startswith(root + "/") else name
        if name.endswith("/ExponentialMovingAverage"):
            out[name.removesuffix("/ExponentialMovingAverage")] = v
    return out


def _take(arrays: StateDict, name: str) -> torch.Tensor:
    if name not in arrays:
        raise UserError(f"TF-slim weights: missing variable {name!r}")
    return arrays[name].float()


def tf_conv_bn(arrays: StateDict, scope: str, prefix: str) -> StateDict:
    """One TF-slim ``conv2d`` + ``BatchNorm`` scope → our ``ConvBNAct`` keys under ``prefix``.

    ``scope/weights`` [kh, kw, in, out] → ``prefix.conv.weight`` [out, in, kh, kw];
    ``scope/BatchNorm/{beta, moving_mean, moving_variance}`` → ``prefix.bn.{bias, running_mean,
    running_var}``; ``scope/BatchNorm/gamma`` → ``prefix.bn.weight`` when present, else ones (the
    released models were trained with ``scale=False``).
    """
    w = _take(arrays, f"{scope}/weights")
    if w.dim() != 4:
        raise UserError(f"TF-slim weights: {scope}/weights should be 4-D [kh, kw, in, out], "
                        f"got {tuple(w.shape)}")
    beta = _take(arrays, f"{scope}/BatchNorm/beta")
    gamma = arrays.get(f"{scope}/BatchNorm/gamma")
    return {
        f"{prefix}.conv.weight": w.permute(3, 2, 0, 1).contiguous(),
        f"{prefix}.bn.weight": gamma.float() if gamma is not None else torch.ones_like(beta),
        f"{prefix}.bn.bias": beta,
        f"{prefix}.bn.running_mean": _take(arrays, f"{scope}/BatchNorm/moving_mean"),
        f"{prefix}.bn.running_var": _take(arrays, f"{scope}/BatchNorm/moving_variance"),
        f"{prefix}.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
    }


def tf_dense_from_conv(arrays: StateDict, scope: str, prefix: str, num_classes: int) -> StateDict:
    """A TF-slim 1×1 logits convolution (``weights`` [1, 1, C, K], ``biases`` [K]) → ``prefix.{weight,
    bias}``; K = num_classes + 1 drops TF's background class 0."""
    w, b = _take(arrays, f"{scope}/weights"), _take(arrays, f"{scope}/biases")
    w = w.reshape(-1, w.shape[-1]).t()
    if w.shape[0] == num_classes + 1:
        w, b = w[1:], b[1:]
    elif w.shape[0] != num_classes:
        raise UserError(f"TF-slim weights: {scope} has {w.shape[0]} classes; the model has {num_classes} "
                        f"(expected {num_classes} or {num_classes + 1} with background)")
    return {f"{prefix}.weight": w.contiguous(), f"{prefix}.bias": b.contiguous()}


def _tf_v3_scopes() -> dict[str, str]:
    """Our ConvBNAct prefix → TF-slim scope (relative to ``InceptionV3/``) for every conv of v3."""
    m: dict[str, str] = {
        "Conv2d_1a_3x3": "Conv2d_1a_3x3", "Conv2d_2a_3x3": "Conv2d_2a_3x3", "Conv2d_2b_3x3": "Conv2d_2b_3x3",
        "Conv2d_3b_1x1": "Conv2d_3b_1x1", "Conv2d_4a_3x3": "Conv2d_4a_3x3",
    }
    for blk in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        # TF-slim names Mixed_5c's 5×5 branch differently (Conv2d_0b_1x1, Conv_1_0c_5x5): a known quirk
        b1 = ("Conv2d_0b_1x1", "Conv_1_0c_5x5") if blk == "Mixed_5c" else ("Conv2d_0a_1x1", "Conv2d_0b_5x5")
        m.update({f"{blk}.branch1x1": f"{blk}/Branch_0/Conv2d_0a_1x1",
                  f"{blk}.branch5x5_1": f"{blk}/Branch_1/{b1[0]}",
                  f"{blk}.branch5x5_2": f"{blk}/Branch_1/{b1[1]}",
                  f"{blk}.branch3x3dbl_1": f"{blk}/Branch_2/Conv2d_0a_1x1",
                  f"{blk}.branch3x3dbl_2": f"{blk}/Branch_2/Conv2d_0b_3x3",
                  f"{blk}.branch3x3dbl_3": f"{blk}/Branch_2/Conv2d_0c_3x3",
                  f"{blk}.branch_pool": f"{blk}/Branch_3/Conv2d_0b_1x1"})
    m.update({"Mixed_6a.branch3x3": "Mixed_6a/Branch_0/Conv2d_1a_1x1",
              "Mixed_6a.branch3x3dbl_1": "Mixed_6a/Branch_1/Conv2d_0a_1x1",
              "Mixed_6a.branch3x3dbl_2": "Mixed_6a/Branch_1/Conv2d_0b_3x3",
              "Mixed_6a.branch3x3dbl_3": "Mixed_6a/Branch_1/Conv2d_1a_1x1"})
    for blk in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        m.update({f"{blk}.branch1x1": f"{blk}/Branch_0/Conv2d_0a_1x1",
                  f"{blk}.branch7x7_1": f"{blk}/Branch_1/Conv2d_0a_1x1",
                  f"{blk}.branch7x7_2": f"{blk}/Branch_1/Conv2d_0b_1x7",
                  f"{blk}.branch7x7_3": f"{blk}/Branch_1/Conv2d_0c_7x1",
                  f"{blk}.branch7x7dbl_1": f"{blk}/Branch_2/Conv2d_0a_1x1",
                  f"{blk}.branch7x7dbl_2": f"{blk}/Branch_2/Conv2d_0b_7x1",
                  f"{blk}.branch7x7dbl_3": f"{blk}/Branch_2/Conv2d_0c_1x7",
                  f"{blk}.branch7x7dbl_4": f"{blk}/Branch_2/Conv2d_0d_7x1",
                  f"{blk}.branch7x7dbl_5": f"{blk}/Branch_2/Conv2d_0e_1x7",
                  f"{blk}.branch_pool": f"{blk}/Branch_3/Conv2d_0b_1x1"})
    m.update({"Mixed_7a.branch3x3_1": "Mixed_7a/Branch_0/Conv2d_0a_1x1",
              "Mixed_7a.branch3x3_2": "Mixed_7a/Branch_0/Conv2d_1a_3x3",
              "Mixed_7a.branch7x7x3_1": "Mixed_7a/Branch_1/Conv2d_0a_1x1",
              "Mixed_7a.branch7x7x3_2": "Mixed_7a/Branch_1/Conv2d_0b_1x7",
              "Mixed_7a.branch7x7x3_3": "Mixed_7a/Branch_1/Conv2d_0c_7x1",
              "Mixed_7a.branch7x7x3_4": "Mixed_7a/Branch_1/Conv2d_1a_3x3"})
    for blk in ("Mixed_7b", "Mixed_7c"):
        # TF-slim quirk: the 3×1 of Branch_1 is Conv2d_0b_3x1 in Mixed_7b but Conv2d_0c_3x1 in Mixed_7c
        b1b = "Conv2d_0b_3x1" if blk == "Mixed_7b" else "Conv2d_0c_3x1"
        m.update({f"{blk}.branch1x1": f"{blk}/Branch_0/Conv2d_0a_1x1",
                  f"{blk}.branch3x3_1": f"{blk}/Branch_1/Conv2d_0a_1x1",
                  f"{blk}.branch3x3_2a": f"{blk}/Branch_1/Conv2d_0b_1x3",
                  f"{blk}.branch3x3_2b": f"{blk}/Branch_1/{b1b}",
                  f"{blk}.branch3x3dbl_1": f"{blk}/Branch_2/Conv2d_0a_1x1",
                  f"{blk}.branch3x3dbl_2": f"{blk}/Branch_2/Conv2d_0b_3x3",
                  f"{blk}.branch3x3dbl_3a": f"{blk}/Branch_2/Conv2d_0c_1x3",
                  f"{blk}.branch3x3dbl_3b": f"{blk}/Branch_2/Conv2d_0d_3x1",
                  f"{blk}.branch_pool": f"{blk}/Branch_3/Conv2d_0b_1x1"})
    m.update({"AuxLogits.conv0": "AuxLogits/Conv2d_1b_1x1", "AuxLogits.conv1": "AuxLogits/Conv2d_2a_5x5"})
    return m


INCEPTION_V3_TF_SCOPES: dict[str, str] = _tf_v3_scopes()
"""Our ConvBNAct prefix → TF-slim scope under ``InceptionV3/`` (tensorflow/models
``research/slim/nets/inception_v3.py``). Each scope holds ``weights`` and ``BatchNorm/{beta,
moving_mean, moving_variance}`` (see :func:`tf_conv_bn`); the classifiers are 1×1 convolutions with
biases: ``Logits/Conv2d_1c_1x1`` → ``fc`` and ``AuxLogits/Conv2d_2b_1x1`` → ``AuxLogits.fc``, with
1001 outputs of which class 0 (background) is dropped (see :func:`tf_dense_from_conv`)."""


def convert_tf_slim_v3(sd: StateDict, model: nn.Module) -> StateDict:
    """TF-slim Inception-v3 arrays (an ``.npz`` keyed by variable name) → our state dict.

    Also switches ``model`` to TF "SAME" average pooling (padding excluded from the mean), the
    semantics those weights were trained with. The auxiliary head is read when the model has one.
    """
    arrays = tf_slim_arrays(sd, "InceptionV3")
    has_aux = getattr(model, "AuxLogits", None) is not None
    num_classes = model.fc.out_features
    out: StateDict = {}
    for prefix, scope in INCEPTION_V3_TF_SCOPES.items():
        if prefix.startswith("AuxLogits.") and not has_aux:
            continue
        out.update(tf_conv_bn(arrays, scope, prefix))
    out.update(tf_dense_from_conv(arrays, "Logits/Conv2d_1c_1x1", "fc", num_classes))
    if has_aux:
        out.update(tf_dense_from_conv(arrays, "AuxLogits/Conv2d_2b_1x1", "AuxLogits.fc", num_classes))
    set_tf_avg_pool(model, True)
    return out


def _is_tf_slim_v3(sd: StateDict) -> bool:
    return any(re.match(r"^(InceptionV3/)?Conv2d_1a_3x3/weights(:0)?$", k) for k in sd)


register_converter(Converter(source="tf-slim", model_prefix="inception_v3", detect=_is_tf_slim_v3,
                             convert=convert_tf_slim_v3, normalization=(INCEPTION_MEAN, INCEPTION_STD)))


def tf_slim_from_model(model: InceptionV3, background: bool = True) -> dict[str, torch.Tensor]:
    """The inverse mapping: our weights as TF-slim-named arrays (``InceptionV3/...``), with an added
    zero background class when ``background``. Used by tests and to export to TF tooling.
    BN γ is not exported (TF-slim's ``scale=False``): only models with γ = 1 round-trip exactly."""
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for prefix, scope in INCEPTION_V3_TF_SCOPES.items():
        if f"{prefix}.conv.weight" not in sd:
            continue
        out[f"InceptionV3/{scope}/weights"] = sd[f"{prefix}.conv.weight"].permute(2, 3, 1, 0).contiguous()
        out[f"InceptionV3/{scope}/BatchNorm/beta"] = sd[f"{prefix}.bn.bias"]
        out[f"InceptionV3/{scope}/BatchNorm/moving_mean"] = sd[f"{prefix}.bn.running_mean"]
        out[f"InceptionV3/{scope}/BatchNorm/moving_variance"] = sd[f"{prefix}.bn.running_var"]
    heads: Iterable[tuple[str, str]] = [("fc", "Logits/Conv2d_1c_1x1")]
    if "AuxLogits.fc.weight" in sd:
        heads = [*heads, ("AuxLogits.fc", "AuxLogits/Conv2d_2b_1x1")]
    for prefix, scope in heads:
        w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
        if background:
            w = torch.cat([torch.zeros(1, w.shape[1]), w])
            b = torch.cat([torch.zeros(1), b])
        out[f"InceptionV3/{scope}/weights"] = w.t().reshape(1, 1, w.shape[1], w.shape[0]).contiguous()
        out[f"InceptionV3/{scope}/biases"] = b.contiguous()
    return out


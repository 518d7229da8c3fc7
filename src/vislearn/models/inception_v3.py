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

TF-slim's variable names and converter live in :mod:`vislearn.models.tfslim_names`; the shared
initialisation and peer-key helpers in :mod:`vislearn.models.inception_common`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.models.base import INCEPTION_MEAN, INCEPTION_STD, FeatureInfo, VisionModel
from vislearn.models.convert import Converter, StateDict, register_converter
from vislearn.models.inception_common import avg_pool_3x3, init_inception_weights, peer_state_dict
from vislearn.models.registry import register_model
from vislearn.nn.conv import ConvBNAct
from vislearn.nn.conv import bn_momentum as conv_bn_momentum

__all__ = [
    "InceptionV3", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionAux",
    "channels", "inception_v3", "set_tf_avg_pool",
]

BN_EPS = 1e-3  # released Google models (PAPERS.md §2)


# ------------------------------------------------------------------------------------ building blocks
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
        bn_momentum: PyTorch momentum of every BN layer (1 − the TF moving-average decay; the
            released models use decay 0.9997, i.e. momentum 0.0003; default 0.1, PyTorch's).
    """

    in_chans = 3
    min_input_size = 75  # smallest size for which the 8×8 stage is non-empty (paper Sec. 9 uses 79)

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, drop_rate: float = 0.2,
                 tf_avg_pool: bool = False, width: float = 1.0,
                 normalization: tuple[Sequence[float], Sequence[float]] | None = (
                     INCEPTION_MEAN, INCEPTION_STD),
                 validate_inputs: bool = True, bn_momentum: float = 0.1) -> None:
        super().__init__(normalization=normalization, validate_inputs=validate_inputs)
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        if not 0 <= drop_rate < 1:
            raise UserError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if not 0 < width <= 4:
            raise UserError(f"width must be in (0, 4], got {width}")
        self.num_classes, self.aux_logits, self.tf_avg_pool = num_classes, aux_logits, tf_avg_pool
        with conv_bn_momentum(bn_momentum):  # every BN layer is built with the model's momentum
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


# ----------------------------------------------------------------------------- torchvision / timm
def _is_inception_v3_layout(sd: StateDict) -> bool:
    return ("Conv2d_1a_3x3.conv.weight" in sd and "Mixed_7c.branch3x3dbl_3b.conv.weight" in sd
            and "Mixed_6e.branch7x7dbl_5.conv.weight" in sd)


# torchvision's Inception3 and timm's inception_v3 share one layout, so the keys cannot tell them
# apart; every checkpoint released in that layout except timm's gluon_in1k expects [-1, 1] input at
# the first convolution (torchvision through transform_input), which is (0.5, 0.5) on our scale.
register_converter(Converter(
    source="torchvision/timm", model_prefix="inception_v3", detect=_is_inception_v3_layout,
    convert=lambda sd, model: peer_state_dict(sd, model, "torchvision/timm"),
    normalization=(INCEPTION_MEAN, INCEPTION_STD),
    options=lambda sd: {"aux_logits": any(k.startswith("AuxLogits.") for k in sd),
                        **({"num_classes": int(sd["fc.weight"].shape[0])} if "fc.weight" in sd else {})}))



"""BN-Inception: the network of Ioffe & Szegedy 2015 (arXiv 1502.03167), Appendix, Figure 5.

GoogLeNet (Szegedy et al. 2014) changed as the Appendix lists: every 5×5 convolution becomes two
stacked 3×3 ("double 3×3" branch), the 28×28 stage has three modules (3a–3c) instead of two,
modules pool by average or max, modules 3c and 4e reduce the grid with stride-2 convolutions and a
max-pool pass-through (no pooling layer between stages), BN follows every convolution (before the
ReLU), and the first convolution is separable with depth multiplier 8. Without LRN and without
dropout, as the paper trains it (Sec. 4.2.1).

Layers (224×224 input; ``t`` = 1×1 / 3×3red / 3×3 / dbl3×3red / dbl3×3 / pool+proj, Fig. 5)::

    conv1  7×7/2 separable (3 → 24 depthwise, → 64)   112×112×64
    pool   max 3×3/2                                   56×56×64
    conv2  1×1 64, 3×3 192                             56×56×192
    pool   max 3×3/2                                   28×28×192
    3a  64/64/64/64/96/avg+32       256        3b  64/64/96/64/96/avg+64     320
    3c  0/128/160/64/96/max+pass s2 576 (14×14)
    4a  224/64/96/96/128/avg+128    576        4b  192/96/128/96/128/avg+128 576
    4c  160/128/160/128/160/avg+P   *          4d  96/128/192/160/192/avg+P  *
    4e  0/128/192/192/256/max+pass s2  (7×7)
    5a  352/192/320/160/224/avg+128 1024       5b  352/192/320/192/224/max+128 1024
    global average pool, linear (1000 ways)

The 576-vs-608 inconsistency (*): Fig. 5 lists the output of 4a–4d as 576 and of 4e as 1024, but
the branch widths it lists for 4c and 4d (pool+proj 128) sum to 608, which would make 4e 1056 wide.
``out_4cd`` chooses:

* ``576`` (default): pool projection 96 in 4c and 4d. Every output size in the table then holds
  (576 for 4a–4d, 1024 for 4e), and it is what the authors' group released (TF-slim's
  ``inception_v2``, whose ``Mixed_4d``/``Mixed_4e`` use 96). Only two pool-projection widths differ
  from the table's per-branch columns.
* ``608``: keep the per-branch widths of Fig. 5 literally (pool projection 128), as the Caffe port
  used by ``pretrained-models.pytorch`` does; 4d is 608 wide and 4e 1056.

Parameter counts (1000 classes; BN with γ and β; no conv biases; checked in the tests):

=========================  ===========  ==============================================
choice                     parameters   note
=========================  ===========  ==============================================
``out_4cd=576`` (default)  11,188,288   separable stem; 11,189,313 with 1001 classes
``out_4cd=608``            11,278,528   separable stem
576, plain 7×7 stem        11,194,984
608, plain 7×7 stem        11,285,224   + 10,016 conv biases = 11,295,240 (Caffe port)
paper                      13.6M        not reachable from Fig. 5's widths
TF-slim ``inception_v2``   ≈11.19M      1001 classes
Caffe port                 ≈11.30M      conv biases, plain stem, 608
=========================  ===========  ==============================================
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.base import INCEPTION_MEAN, INCEPTION_STD, FeatureInfo, VisionModel
from vislearn.models.registry import register_model
from vislearn.nn.conv import ConvBNAct

__all__ = ["BNInception", "InceptionModule"]


class InceptionModule(nn.Module):
    """One Fig. 5 module: 1×1 | 1×1→3×3 | 1×1→3×3→3×3 | pool(→1×1), concatenated on channels.

    ``stride=2`` (modules 3c, 4e): the 1×1 branch is absent (width 0), the last 3×3 of each
    convolutional branch has stride 2 and the pool branch is a 3×3/2 max-pool passed through.
    """

    def __init__(self, in_chans: int, c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str,
                 proj: int, stride: int = 1, eps: float = 1e-3) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise UserError(f"pool must be 'avg' or 'max', got {pool!r}")
        if stride == 2 and (c1 or proj):
            raise UserError("a stride-2 module has no 1×1 branch and a pass-through pool")
        self.branch1 = ConvBNAct(in_chans, c1, 1, eps=eps) if c1 else None
        self.branch3 = nn.Sequential(ConvBNAct(in_chans, c3r, 1, eps=eps),
                                     ConvBNAct(c3r, c3, 3, stride=stride, padding=1, eps=eps))
        self.branch3dbl = nn.Sequential(ConvBNAct(in_chans, d3r, 1, eps=eps),
                                        ConvBNAct(d3r, d3, 3, padding=1, eps=eps),
                                        ConvBNAct(d3, d3, 3, stride=stride, padding=1, eps=eps))
        if pool == "avg":  # TF "SAME" average pooling ignores the padding
            pool_layer: nn.Module = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        else:
            pool_layer = nn.MaxPool2d(3, stride=stride, padding=1)
        self.branch_pool = nn.Sequential(pool_layer, *([ConvBNAct(in_chans, proj, 1, eps=eps)] if proj else []))
        self.out_chans = c1 + c3 + d3 + (proj if proj else in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.branch1(x)] if self.branch1 is not None else []
        outs += [self.branch3(x), self.branch3dbl(x), self.branch_pool(x)]
        return torch.cat(outs, 1)


# Fig. 5 rows: (1×1, 3×3 reduce, 3×3, double 3×3 reduce, double 3×3, pool, pool proj, stride).
# "P" marks the pool projection that the 576-vs-608 choice decides (see the module docstring).
_CONFIG = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", "P", 1),
    "4d": (96, 128, 192, 160, 192, "avg", "P", 1),
    "4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


class BNInception(VisionModel):
    """BN-Inception (Ioffe & Szegedy 2015, Appendix Fig. 5) for 224×224 inputs in [0, 1].

    Args:
        num_classes: outputs of the final linear layer (ImageNet: 1000).
        out_4cd: 576 (default; pool projection 96 in 4c/4d, consistent with every output size of
            Fig. 5 and with TF-slim) or 608 (Fig. 5's per-branch widths taken literally).
        separable_stem: the first 7×7/2 convolution is depthwise-separable with depth multiplier 8
            (Appendix; 3 → 24 → 64); ``False`` gives GoogLeNet's plain 7×7 convolution.
        drop_rate: dropout before the classifier; 0 because BN-Inception removes dropout (Sec. 4.2.1).
        bn_eps: BN ε (0.001 as in Google's released Inception models; not stated in the paper).
        bn_impl: ``"torch"`` (fused kernels, default) or ``"paper"`` (:class:`vislearn.nn.BatchNorm2d`,
            the reference implementation; same parameters and buffers).
        normalization: ``(mean, std)`` on the [0, 1] scale; default maps to [−1, 1] as TF-slim's
            Inception preprocessing does (the paper does not state it).
    """

    min_input_size = 32
    in_chans = 3

    def __init__(self, num_classes: int = 1000, out_4cd: int = 576, separable_stem: bool = True,
                 drop_rate: float = 0.0, bn_eps: float = 1e-3, bn_impl: str = "torch",
                 normalization=(INCEPTION_MEAN, INCEPTION_STD)) -> None:
        super().__init__(normalization=normalization)
        if out_4cd not in (576, 608):
            raise UserError(f"out_4cd must be 576 (pool projection 96 in 4c/4d, the default) or 608 "
                            f"(Fig. 5's branch widths literally), got {out_4cd!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
        if not 0 <= drop_rate < 1:
            raise UserError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if bn_impl not in ("torch", "paper"):
            raise UserError(f"bn_impl must be 'torch' or 'paper', got {bn_impl!r}")
        self.out_4cd = out_4cd
        proj_4cd = 96 if out_4cd == 576 else 128
        e = bn_eps
        if separable_stem:  # depthwise 7×7/2 with depth multiplier 8 (3 → 24), then pointwise to 64
            self.conv1 = nn.Sequential(nn.Conv2d(3, 24, 7, stride=2, padding=3, groups=3, bias=False),
                                       ConvBNAct(24, 64, 1, eps=e))
        else:
            self.conv1 = ConvBNAct(3, 64, 7, stride=2, padding=3, eps=e)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Sequential(ConvBNAct(64, 64, 1, eps=e), ConvBNAct(64, 192, 3, padding=1, eps=e))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        chans = 192
        blocks: dict[str, InceptionModule] = {}
        for name, (c1, c3r, c3, d3r, d3, pool, proj, stride) in _CONFIG.items():
            proj = proj_4cd if proj == "P" else proj
            blocks[name] = InceptionModule(chans, c1, c3r, c3, d3r, d3, pool, proj, stride, eps=e)
            chans = blocks[name].out_chans
        self.inception3 = nn.Sequential(*(blocks[k] for k in ("3a", "3b")))
        self.inception4 = nn.Sequential(*(blocks[k] for k in ("3c", "4a", "4b", "4c", "4d")))
        self.inception5 = nn.Sequential(*(blocks[k] for k in ("4e", "5a", "5b")))
        self.num_features = chans
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(chans, num_classes)
        self.feature_info = [FeatureInfo("conv1", 64, 2), FeatureInfo("conv2", 192, 4),
                             FeatureInfo("inception3", 320, 8), FeatureInfo("inception4", out_4cd, 16),
                             FeatureInfo("inception5", chans, 32)]
        self._init_weights()
        if bn_impl == "paper":
            _use_reference_bn(self)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after conv1, conv2, inception 3, 4 and 5 (strides 2, 4, 8, 16, 32)."""
        x = self.prepare_input(x)
        c1 = self.conv1(x)
        c2 = self.conv2(self.pool1(c1))
        i3 = self.inception3(self.pool2(c2))
        i4 = self.inception4(i3)
        i5 = self.inception5(i4)
        return [c1, c2, i3, i4, i5]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(x.mean((2, 3)), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)[-1])


def _use_reference_bn(model: nn.Module) -> None:
    from vislearn.nn.batchnorm import BatchNorm2d

    for m in model.modules():
        if isinstance(m, ConvBNAct) and type(m.bn) is nn.BatchNorm2d:
            m.bn = BatchNorm2d(m.bn.num_features, eps=m.bn.eps, momentum=m.bn.momentum)


@register_model("bn_inception", input_size=(3, 224, 224), paper="Ioffe & Szegedy 2015, Appendix Fig. 5")
def bn_inception(**kwargs) -> BNInception:
    return BNInception(**kwargs)

"""The multilabel annotation network of Gong et al. (arXiv 1312.4894, Sec. 4): 5 conv + 3 FC layers.

The paper trains "a network of five convolutional layers and three densely connected layers",
Krizhevsky et al.'s (2012) architecture, from scratch on NUS-WIDE, with the last layer giving one
score per label (81 concepts) that the softmax, pairwise or WARP loss is applied to. We build that
network as :class:`MultilabelNet` with two stems:

* ``variant="alexnet"`` (registered as ``multilabel_net``, the ``paper`` preset): 11×11/4 stem,
  5×5, then three 3×3 convolutions with 96-256-384-384-256 channels, max-pooling after conv1,
  conv2 and conv5, local response normalisation after conv1 and conv2 (Krizhevsky's n=5, k=2,
  α=1e-4, β=0.75), a 6×6 adaptive average pool and two 4096-wide dropout FC layers. Krizhevsky's
  two-GPU grouping is not reproduced (one dense layer per stage).
* ``variant="small"`` (registered as ``multilabel_net_small``): the same 5 + 3 layout with 3×3
  convolutions and 2×2 pooling for 32–64 px images, used by the ``quick`` preset and the
  reproduction on the embedded shapes scenes.

``width`` scales every channel count and FC width (``width=0.125`` is a laptop-sized model);
``norm`` picks ``"lrn"`` (paper), ``"bn"`` (faster to train from scratch) or ``"none"``.
``label_names`` is stored in the model's options, so weights saved by ``vislearn train multilabel``
carry the label vocabulary in their metadata and ``vislearn tag`` can name its predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.base import FeatureInfo, VisionModel
from vislearn.models.registry import register_model

__all__ = ["MultilabelNet"]

_CHANNELS = (96, 256, 384, 384, 256)  # Krizhevsky et al. 2012, as used by Gong et al.
_FC = 4096


class MultilabelNet(VisionModel):
    """Five convolutional and three fully connected layers producing one score per label.

    Args:
        num_classes: labels (NUS-WIDE: 81).
        variant: ``"alexnet"`` (224 px inputs, the paper's) or ``"small"`` (32–64 px inputs).
        width: multiplier on every channel count and FC width (1.0 = the paper's network).
        norm: ``"lrn"`` after conv1/conv2 (paper), ``"bn"`` after every conv, or ``"none"``.
        dropout: dropout before each of the first two FC layers (Krizhevsky: 0.5).
        label_names: optional names of the ``num_classes`` labels (kept in saved weights).
        image_size: the square input size the model was trained at (kept in saved weights so that
            ``vislearn tag`` resizes new images the same way); default: the variant's (224 or 64).
        normalization: input ``(mean, std)`` on the [0, 1] scale (default: ImageNet statistics).
    """

    def __init__(self, num_classes: int = 81, variant: str = "alexnet", width: float = 1.0, norm: str = "lrn",
                 dropout: float = 0.5, label_names: Sequence[str] | None = None, image_size: int | None = None,
                 in_chans: int = 3,
                 normalization=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))) -> None:
        self.in_chans = in_chans
        super().__init__(normalization=normalization)
        if variant not in ("alexnet", "small"):
            raise UserError(f"variant must be 'alexnet' or 'small', got {variant!r}")
        if norm not in ("lrn", "bn", "none"):
            raise UserError(f"norm must be 'lrn', 'bn' or 'none', got {norm!r}")
        if not 0 < width <= 4:
            raise UserError(f"width must be in (0, 4], got {width!r}")
        if not 0 <= dropout < 1:
            raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
        if int(num_classes) != num_classes or num_classes < 1:
            raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
        if label_names is not None:
            label_names = [str(n) for n in label_names]
            if len(label_names) != num_classes:
                raise UserError(f"label_names has {len(label_names)} names for {num_classes} classes")
        self.label_names = label_names
        self.variant, self.norm = variant, norm
        ch = [max(8, int(round(c * width))) for c in _CHANNELS]
        fc = max(16, int(round(_FC * width)))
        big = variant == "alexnet"
        self.min_input_size = 63 if big else 8
        self.image_size = int(image_size) if image_size is not None else (224 if big else 64)
        if self.image_size < self.min_input_size:
            raise UserError(f"image_size must be at least {self.min_input_size} for variant {variant!r}, "
                            f"got {image_size!r}")

        def conv(cin: int, cout: int, k: int, s: int, p: int, lrn: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=norm != "bn")]
            if norm == "bn":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            if norm == "lrn" and lrn:
                layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
            return layers

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, 2) if big else nn.MaxPool2d(2, 2)

        k1, s1, p1 = (11, 4, 2) if big else (3, 1, 1)
        k2, p2 = (5, 2) if big else (3, 1)
        self.stage1 = nn.Sequential(*conv(in_chans, ch[0], k1, s1, p1, True), pool())
        self.stage2 = nn.Sequential(*conv(ch[0], ch[1], k2, 1, p2, True), pool())
        self.stage3 = nn.Sequential(*conv(ch[1], ch[2], 3, 1, 1, False), *conv(ch[2], ch[3], 3, 1, 1, False),
                                    *conv(ch[3], ch[4], 3, 1, 1, False), pool())
        grid = 6 if big else 4
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(ch[4] * grid * grid, fc), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Linear(fc, num_classes))
        self.num_features = fc
        strides = (8, 16, 32) if big else (2, 4, 8)
        self.feature_info = [FeatureInfo(f"stage{i + 1}", c, s)
                             for i, (c, s) in enumerate(zip((ch[0], ch[1], ch[4]), strides, strict=True))]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.prepare_input(x)
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        return [f1, f2, self.stage3(f2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Label scores N×C (unnormalised; rank them, or softmax them for the softmax loss)."""
        return self.classifier(self.pool(self.forward_features(x)[-1]))


@register_model("multilabel_net", input_size=(3, 224, 224), paper="Gong et al. 2013 (arXiv 1312.4894), Sec. 4")
def multilabel_net(**kwargs) -> MultilabelNet:
    """The paper's 5 conv + 3 FC network (AlexNet layout) for 224 px images, 81 NUS-WIDE labels."""
    return MultilabelNet(**{"variant": "alexnet", "norm": "lrn", **kwargs})


@register_model("multilabel_net_small", input_size=(3, 64, 64), paper="Gong et al. 2013 (arXiv 1312.4894), Sec. 4")
def multilabel_net_small(**kwargs) -> MultilabelNet:
    """The same 5 conv + 3 FC layout with 3×3 convolutions for 32–64 px images, narrow, with BN."""
    return MultilabelNet(**{"variant": "small", "width": 0.125, "norm": "bn", "num_classes": 20, **kwargs})

"""VGG-16 (Simonyan & Zisserman 2015, configuration D) as a backbone for the perceptual metric.

The architecture and the state-dict keys are torchvision's (``features.N.weight``,
``classifier.{0,3,6}.weight``), so torchvision's ``vgg16`` ImageNet file loads as is
(``create_model("vgg16", weights="vgg16-397923af.pth")``, read with ``weights_only=True``); without
a weights file the layers keep torchvision's random initialisation. ``forward_features`` returns
the five taps the perceptual-metric literature uses (LPIPS, Chinen et al. 2018): the outputs of
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, at strides 1, 2, 4, 8 and 16.

Used by :mod:`vislearn.models.perceptual` (Chinen et al., arXiv 1808.00447: "a full reference,
perceptual image metric based on VGG-16").
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vislearn.models.base import IMAGENET_MEAN, IMAGENET_STD, FeatureInfo, VisionModel
from vislearn.models.convert import Converter, register_converter
from vislearn.models.registry import register_model

__all__ = ["VGG16", "VGG16_CFG", "VGG16_TAPS", "vgg16"]

# Configuration D of the VGG paper (Table 1): conv widths, "M" = 2×2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")
# (name, index of the ReLU in ``features``, channels, stride)
VGG16_TAPS: tuple[tuple[str, int, int, int], ...] = (
    ("relu1_2", 3, 64, 1), ("relu2_2", 8, 128, 2), ("relu3_3", 15, 256, 4),
    ("relu4_3", 22, 512, 8), ("relu5_3", 29, 512, 16))


class VGG16(VisionModel):
    """torchvision-compatible VGG-16 returning the five ReLU taps from ``forward_features``.

    Args:
        num_classes: classifier outputs (ImageNet: 1000); ignored with ``features_only``.
        features_only: drop the pooling and the three fully-connected layers (the metric needs
            only the convolutional trunk; a torchvision file then loads with its classifier
            keys ignored).
        dropout: dropout of the classifier (torchvision: 0.5).
        normalization: ``(mean, std)`` on the [0, 1] scale (ImageNet's by default).
    """

    min_input_size = 16  # relu5_3 sits after four 2×2 pools: 16 px give it one position

    def __init__(self, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5,
                 normalization=(IMAGENET_MEAN, IMAGENET_STD)) -> None:
        super().__init__(normalization=normalization)
        layers: list[nn.Module] = []
        width = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(width, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                width = int(v)
        self.features = nn.Sequential(*layers)
        self.features_only = features_only
        if not features_only:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout),
                nn.Linear(4096, num_classes))
        self.num_classes = 0 if features_only else num_classes
        self.feature_info = [FeatureInfo(n, c, s) for n, _, c, s in VGG16_TAPS]
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation (kaiming-normal fan_out convs, N(0, 0.01) linears)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def taps(self, x: torch.Tensor, num_stages: int = 5) -> list[torch.Tensor]:
        """The first ``num_stages`` ReLU taps of an already-normalised batch (no validation)."""
        last = VGG16_TAPS[num_stages - 1][1]
        wanted = {idx for _, idx, _, _ in VGG16_TAPS[:num_stages]}
        out: list[torch.Tensor] = []
        for i, layer in enumerate(self.features[:last + 1]):
            x = layer(x)
            if i in wanted:
                out.append(x)
        return out

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[0, 1] images → [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3]."""
        return self.taps(self.prepare_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.prepare_input(x))
        if self.features_only:
            return x
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def _is_torchvision_vgg16(sd: dict[str, torch.Tensor]) -> bool:
    w = sd.get("features.0.weight")
    return w is not None and tuple(w.shape) == (64, 3, 3, 3) and "features.28.weight" in sd


def _from_torchvision(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    # Same keys; a features-only model ignores the classifier of a full torchvision file.
    own = model.state_dict()
    if getattr(model, "features_only", False):
        return {k: v for k, v in sd.items() if k in own}
    return dict(sd)


register_converter(Converter("torchvision", "vgg16", _is_torchvision_vgg16, _from_torchvision,
                             (IMAGENET_MEAN, IMAGENET_STD)))


@register_model("vgg16", input_size=(3, 224, 224), paper="Simonyan & Zisserman 2015 (config D); "
                "backbone of Chinen et al. 2018")
def vgg16(**kwargs) -> VGG16:
    return VGG16(**kwargs)

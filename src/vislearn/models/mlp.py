"""The fully-connected network of the Batch Normalization paper's MNIST experiment (Sec. 4.1).

Three hidden layers of 100 sigmoid units and a softmax output; with ``batch_norm=True`` a BN layer
follows each hidden linear layer, before the nonlinearity (the paper adds BN "to each hidden layer";
placing it before the sigmoid is Sec. 3.2's recipe, BN(Wu) with the bias dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.base import FeatureInfo, VisionModel
from vislearn.models.registry import register_model


class MLP(VisionModel):
    """Flatten → [Linear → (BN) → act] × len(hidden) → Linear.

    Args:
        num_classes: outputs.
        in_chans, image_size: input shape (digits: 1×8×8; MNIST: 1×28×28).
        hidden: hidden widths (paper: 100, 100, 100).
        batch_norm: BN after each hidden linear layer (the paper's "with BN" network).
        activation: ``sigmoid`` (paper) or ``relu``.
        bn_impl: ``"torch"`` (fast kernels) or ``"paper"`` (:class:`vislearn.nn.BatchNorm1d`).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 8,
                 hidden: Sequence[int] = (100, 100, 100), batch_norm: bool = False,
                 activation: str = "sigmoid", bn_impl: str = "torch", normalization=None) -> None:
        self.in_chans = in_chans
        super().__init__(normalization=normalization)
        if activation not in ("sigmoid", "relu"):
            raise UserError(f"activation must be sigmoid or relu, got {activation!r}")
        self.image_size = image_size
        act = nn.Sigmoid if activation == "sigmoid" else nn.ReLU
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_chans * image_size * image_size
        for h in hidden:
            layers.append(nn.Linear(width, h, bias=not batch_norm))
            if batch_norm:
                layers.append(_bn1d(h, bn_impl))
            layers.append(act())
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        self.num_features = width
        self.feature_info = [FeatureInfo("features", width, 1)]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.features(self.prepare_input(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x)[-1])


def _bn1d(width: int, impl: str) -> nn.Module:
    if impl == "torch":
        return nn.BatchNorm1d(width)
    if impl == "paper":
        from vislearn.nn.batchnorm import BatchNorm1d

        return BatchNorm1d(width)
    raise UserError(f"bn_impl must be 'torch' or 'paper', got {impl!r}")


@register_model("mlp", input_size=(1, 8, 8), paper="Ioffe & Szegedy 2015, Sec. 4.1")
def mlp(**kwargs) -> MLP:
    return MLP(**kwargs)

"""Pieces every Inception family shares (v3, v4, Inception-ResNet): TF-slim's initialisation, the
padded 3×3 average pooling, and fitting a torchvision/timm-layout state dict to one of our models.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.convert import StateDict
from vislearn.nn.conv import ConvBNAct

__all__ = ["avg_pool_3x3", "init_inception_weights", "peer_state_dict"]


def avg_pool_3x3(tf_style: bool = False) -> nn.AvgPool2d:
    """3×3/1 average pooling with padding 1; ``tf_style`` excludes the padding from the mean (TF "SAME")."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=not tf_style)


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

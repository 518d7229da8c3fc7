"""Pieces every Inception family shares (v3, v4, Inception-ResNet): TF-slim's initialisation, the
padded 3×3 average pooling, and fitting a torchvision/timm-layout state dict to one of our models.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.convert import StateDict
from vislearn.nn.conv import ConvBNAct
from vislearn.nn.fuse import FusedConv2d

__all__ = ["PoolProjection", "avg_pool_3x3", "init_inception_weights", "peer_state_dict", "pool_then_project"]


def avg_pool_3x3(tf_style: bool = False) -> nn.AvgPool2d:
    """3×3/1 average pooling with padding 1; ``tf_style`` excludes the padding from the mean (TF "SAME")."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=not tf_style)


def pool_then_project(pool: nn.AvgPool2d, proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``proj(pool(x))`` for the pooling branch of an Inception block (3×3/1 average pool, then a 1×1
    Conv-BN-act that narrows the channels), computed as ``act(bn(pool(conv(x))))`` where that is the
    same function: a 1×1 convolution and an average pool are both linear and commute (each output
    pixel's pool divisor is the same for every channel), so the pool can run on the projection's
    4–10× fewer channels (profiled: ``avg_pool2d`` and its backward were 5% of an Inception-v3 training
    step and 4% of an Inception-v4 inference, on the block's input width). Used by the Inception-v4 and
    Inception-ResNet blocks (:class:`PoolProjection`); Inception-v3 keeps the peers' order (its TF-slim
    import test checks each convolution reads the pooled tensor, as in TF-slim's graph). A conv with a bias (after BN
    folding) commutes only with TF-style pooling (padding excluded: the mean of ``z + b`` is
    ``mean(z) + b``); with padding counted the bias would be diluted at the borders. So with padding
    counted (torchvision's/timm's Inception-v3) only training reorders, and evaluation keeps the peers'
    order (their logits are matched to 1e-4 absolute, which float reassociation can exceed on random
    weights with logits in the hundreds). Of the fused convolutions (:mod:`vislearn.nn.fuse`) only one
    without ReLU commutes: :class:`PoolProjection` asks :func:`~vislearn.nn.fuse.fuse_conv_act` for that
    (``fusion_keeps_activation``), so the ReLU runs after the pool, on the narrow output.
    """
    conv = getattr(proj, "conv", None)
    fused = isinstance(conv, FusedConv2d) and not conv.relu and not conv.residual
    conv = conv.conv if fused else conv  # a fused conv without ReLU is the same linear map as its conv
    if (isinstance(proj, ConvBNAct) and type(conv) is nn.Conv2d and conv.kernel_size == (1, 1)
            and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
            and conv.out_channels < conv.in_channels
            and (not pool.count_include_pad or (proj.training and conv.bias is None))):
        return proj.act(proj.bn(pool(proj.conv(x))))
    return proj(pool(x))


class PoolProjection(nn.Sequential):
    """``nn.Sequential(pool, Conv-BN-act)`` (state-dict keys ``1.conv.*``, ``1.bn.*``), run by
    :func:`pool_then_project`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_then_project(self[0], self[1], x)

    def fusion_keeps_activation(self) -> list[str]:
        """For :func:`vislearn.nn.fuse.fuse_conv_act`: the projection's ReLU must stay after the pool."""
        return ["1"]


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

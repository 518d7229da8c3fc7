"""Projection heads and codebooks for clustering SSL (DINO, MSN), replicated for the weighted ensemble.

Ruan et al., "Weighted Ensemble Self-Supervised Learning", ICLR 2023, Sec. 3.1 and App. B.1. The
student of Eq. 2 scores a representation ``r(x)`` against a codebook ``{µ_y}`` through a projection
head ``h``::

    logits_y = cos(h(r(x)), µ_y)          (divide by a temperature in the loss)

:class:`MultiHead` holds ``m`` (projection head, codebook) pairs, each independently initialised,
applied to one backbone feature: the backbone is never ensembled, and the heads are dropped after
training (evaluation uses the backbone alone, so the ensemble costs nothing at test time). It
returns ``(batch, heads, codes)`` cosine logits, the layout of
:func:`vislearn.losses.ensemble.weighted_ensemble_loss`, :class:`vislearn.losses.dino.DINOLoss` and
:class:`vislearn.losses.msn.MSNLoss`.

Sizes (App. B.1, DINO*): a 3-layer MLP with hidden width 1024 and GELU, a 256-d bottleneck that is
L2-normalised, and a codebook of 256-d codes that are L2-normalised, ``c`` = 1024 codes for
ensembles and 4096 for the one-head baselines (DINO: hidden 2048, 65536 codes). All configurable.

Choices the paper leaves open, and ours:

* Initialisation: DINO's (truncated normal, std 0.02, zero biases) for the MLP; codes drawn from a
  standard normal (a uniformly random direction each, after normalisation). Every head's slices
  are drawn separately, so heads start different (the paper: "independently initialised"; a deep
  copy of one head would start every head equal).
* The codebook is DINO's weight-normalised last layer with the norm fixed at 1
  (``norm_last_layer=True``), written as ``normalize(µ)`` in the forward pass rather than with
  ``torch.nn.utils.weight_norm``: one plain parameter per pair, no hooks, so ``copy.deepcopy`` gives
  a teacher and an EMA of the parameters (:mod:`vislearn.train.ema`) is an EMA of the raw codes.
* No batch norm in the head (DINO's default ``use_bn=False``).

The ``m`` heads are stored stacked (a weight ``(m, in, out)`` per layer, a codebook
``(m, codes, dim)``) and run as batched matrix products, so 16 heads cost a handful of kernels rather
than a Python loop; head ``i`` is slice ``i`` of every parameter.

Example::

    heads = MultiHead(num_heads=16, in_dim=384, num_codes=1024)
    logits = heads(backbone.forward_features(images)[-1].mean((2, 3)))   # (batch, 16, 1024)
    teacher_heads = copy.deepcopy(heads).requires_grad_(False)            # then EMA each step
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError

__all__ = ["MultiHead", "StackedLinear", "head_parameter_count"]


class StackedLinear(nn.Module):
    """``m`` independent linear layers applied to ``m`` inputs: ``(m, B, in) -> (m, B, out)``."""

    def __init__(self, num_heads: int, in_dim: int, out_dim: int, std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, out_dim))
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


def head_parameter_count(in_dim: int, hidden_dim: int, out_dim: int, num_codes: int, num_layers: int) -> int:
    """Parameters of one (projection head, codebook) pair, in closed form."""
    if num_layers == 1:
        mlp = in_dim * out_dim + out_dim
    else:
        mlp = (in_dim * hidden_dim + hidden_dim) + (num_layers - 2) * (hidden_dim * hidden_dim + hidden_dim) \
            + (hidden_dim * out_dim + out_dim)
    return mlp + num_codes * out_dim


class MultiHead(nn.Module):
    """``num_heads`` independent (MLP projection head, L2-normalised codebook) pairs on one feature.

    Args:
        num_heads: ``m`` (DINO*-ENT 16, MSN*-ENT 8; 1 for the baselines).
        in_dim: width of the backbone feature (ViT-S 384, ViT-B 768).
        hidden_dim: MLP hidden width (DINO* 1024).
        out_dim: bottleneck and code dimension (256).
        num_codes: codebook size ``c`` (1024 for ensembles, 4096 for baselines).
        num_layers: linear layers in the MLP (3), GELU between them.

    ``forward(features (B, in_dim)) -> (B, heads, codes)`` cosine logits in [-1, 1];
    :meth:`embed` gives the L2-normalised bottleneck ``(B, heads, out_dim)``.
    """

    def __init__(self, num_heads: int, in_dim: int, hidden_dim: int = 1024, out_dim: int = 256,
                 num_codes: int = 1024, num_layers: int = 3) -> None:
        super().__init__()
        for name, value in (("num_heads", num_heads), ("in_dim", in_dim), ("hidden_dim", hidden_dim),
                            ("out_dim", out_dim), ("num_codes", num_codes), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be an int >= 1, got {value!r}")
        self.num_heads, self.in_dim, self.hidden_dim = num_heads, in_dim, hidden_dim
        self.out_dim, self.num_codes, self.num_layers = out_dim, num_codes, num_layers
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(StackedLinear(num_heads, a, b) for a, b in zip(widths[:-1], widths[1:],
                                                                                     strict=True))
        self.codebook = nn.Parameter(torch.randn(num_heads, num_codes, out_dim))

    def extra_repr(self) -> str:
        return (f"num_heads={self.num_heads}, in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, "
                f"out_dim={self.out_dim}, num_codes={self.num_codes}, num_layers={self.num_layers}")

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The L2-normalised projection of every head, ``(batch, heads, out_dim)``."""
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[1] != self.in_dim:
            raise UserError(f"MultiHead expects features of shape (batch, {self.in_dim}), got "
                            f"{tuple(getattr(features, 'shape', ()))}")
        h = features.unsqueeze(0).expand(self.num_heads, -1, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.gelu(h)
        return F.normalize(h, dim=-1).transpose(0, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.embed(features)  # (B, H, D)
        codes = F.normalize(self.codebook, dim=-1)  # (H, C, D)
        return torch.einsum("bhd,hcd->bhc", z, codes)

